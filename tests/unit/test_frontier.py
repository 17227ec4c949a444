"""The cost-quality frontier: exactly the Pareto-optimal methods marked, from the warehouse's per-query LLM
calls, in ``zsr compare --frontier`` and in the HTML report."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tasks.evaluation.compare import FrontierPoint, cheapest, pareto
from tasks.evaluation.report import write_report
from tests import fake_llm
from tests.fakes import fake_workspace
from tests.unit.test_report import METHODS, assert_png, frames


def test_pareto_keeps_exactly_the_undominated_points():
    points = [
        (0.0, 0.50),  # free: on the frontier
        (0.0, 0.40),  # as cheap, worse
        (5.0, 0.60),  # dearer, better: on it
        (5.0, 0.60),  # the same point twice: neither beats the other
        (8.0, 0.60),  # dearer, no better
        (20.0, 0.70),  # dearest, best: on it
        (30.0, 0.65),  # dearer and worse than the one before
    ]
    assert pareto(points) == [True, False, True, True, False, True, False]
    assert pareto([]) == []


def test_cheapest_reaching_a_target():
    points = [
        FrontierPoint("a", "bm25", 0.4, 0.0, 0.0, False),
        FrontierPoint("b", "rerank", 0.62, 20.0, 9000.0, True),
        FrontierPoint("c", "lattice", 0.65, 40.0, 5000.0, True),
        FrontierPoint("d", "broken", None, 1.0, 1.0, False),
    ]
    assert cheapest(points, 0.6).method == "rerank"
    assert cheapest(points, 0.6, "tokens").method == "lattice"
    assert cheapest(points, 0.9) is None


@pytest.fixture
def evaluated(tmp_path, monkeypatch):
    """An evaluation of two free methods and two reranks that call the (fake) LLM 3 and 6 times a query."""
    provider = fake_llm.install()
    provider.rule = lambda messages, params: "1"  # every document relevant: rerank keeps bm25's order
    monkeypatch.setenv("ZSR_LLM_MODEL", "zsr-fake/m")
    with fake_workspace(tmp_path, monkeypatch) as ws:
        methods = ["bm25", "dense", "rerank(depth=3, first=bm25)", "rerank(depth=6, first=bm25)"]
        runs = ws.evaluate("c", "t", methods, ["nDCG@10", "R@100"]).runs
        yield ws, {r.method: r for r in runs}


def test_frontier_reads_llm_calls_per_query_and_marks_the_optimal(evaluated):
    ws, runs = evaluated
    points = {p.method: p for p in ws.frontier(runs["bm25"].run_id)}
    assert [p.calls for p in points.values()] == [0.0, 0.0, 3.0, 6.0]  # cheapest first
    assert points["rerank(depth=6, first=bm25)"].tokens > points["rerank(depth=3, first=bm25)"].tokens > 0
    quality = {m: r.metrics["nDCG@10"] for m, r in runs.items()}
    free = max(quality["bm25"], quality["dense"])
    expected = {m for m in ("bm25", "dense") if quality[m] == free}
    expected |= {m for m in runs if m.startswith("rerank") and quality[m] > free}
    assert {m for m, p in points.items() if p.on_frontier} == expected
    assert {m: p.quality for m, p in points.items()} == pytest.approx(quality)
    report = ws.report(runs["bm25"].run_id)  # the report asks the warehouse for the same points
    assert (report.parent / "frontier.png").is_file() and "<h2>Cost and quality</h2>" in report.read_text()


def test_compare_frontier_in_the_terminal_and_as_json(evaluated, monkeypatch):
    from flows.cli import app
    from flows.cli.common import out

    _, runs = evaluated
    monkeypatch.setattr(out, "width", 200)
    run = runs["dense"].run_id
    shown = CliRunner().invoke(app, ["compare", run, "--frontier", "--target", "0"])
    assert shown.exit_code == 0, shown.output
    assert "LLM calls/query" in shown.output and "rerank(depth=6, first=bm25)" in shown.output
    assert "cheapest with nDCG@10 >= 0: " in shown.output  # a free method, whichever scored
    data = json.loads(CliRunner().invoke(app, ["compare", run, "--frontier", "--json"]).output)
    assert [p["calls"] for p in data["points"]] == [0.0, 0.0, 3.0, 6.0] and data["cheapest"] is None
    alone = CliRunner().invoke(app, ["compare", run])
    assert alone.exit_code != 0 and "--frontier" in alone.output


def test_frontier_by_judge_calls_counts_a_simulated_judge_that_calls_no_llm(tmp_path, monkeypatch):
    from tasks.llm.judge import OracleJudge

    with fake_workspace(tmp_path, monkeypatch) as ws:
        qrels = ws.testsets.load("c", "t").qrels
        methods = ["bm25", "rerank(depth=3, first=bm25)", "rerank(depth=6, first=bm25)"]
        runs = ws.evaluate("c", "t", methods, ["nDCG@10"], judge=OracleJudge(qrels)).runs
        by_calls = {p.method: p for p in ws.frontier(runs[0].run_id)}
        by_judge = {p.method: p for p in ws.frontier(runs[0].run_id, cost="judge_calls")}
    assert {p.calls for p in by_calls.values()} == {0.0}  # the oracle calls no LLM: all free by LLM calls
    assert [p.judge_calls for p in by_judge.values()] == [0.0, 3.0, 6.0]  # cheapest first by judge calls


def test_report_draws_the_frontier_and_marks_it_in_its_table(tmp_path):
    runs, metrics, query_metrics = frames(METHODS)
    ids = runs["run_id"].to_list()
    points = [
        FrontierPoint(ids[0], METHODS[0], 0.5, 0.0, 0.0, True),
        FrontierPoint(ids[1], METHODS[1], 0.4, 3.0, 900.0, False),
        FrontierPoint(ids[2], METHODS[2], 0.6, 20.0, 6000.0, True),
    ]
    page = write_report(runs, metrics, query_metrics, tmp_path, title="t", frontier=points).read_text()
    assert_png(tmp_path / "frontier.png")
    section = page.split("<h2>Cost and quality</h2>")[1].split("</table>")[0]
    marked = [line for line in section.splitlines() if line.startswith("<tr>") and "on the frontier" in line]
    assert len(marked) == 2 and "bm25" in marked[0] and "hybrid" in marked[1]
    assert '<img src="frontier.png"' in page
