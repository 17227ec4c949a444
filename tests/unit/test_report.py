"""The HTML report: files in place, readable charts, escaped text, hardest queries first, no NaN shown."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from tasks.evaluation.report import write_report

ROOT = Path(__file__).resolve().parents[2]
METHODS = ["bm25", "dense(model=all-MiniLM-L6-v2)", "hybrid(fusion=<rrf>&k=60)"]
MEASURES = ["nDCG@10", "R@100"]
# Query i scores RANK[i] / 12 (plus a little per method), so the hardest are q03, q07, q00, ...
RANK = [2, 9, 11, 0, 5, 7, 10, 1, 4, 3, 8, 6]


def frames(methods: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    run_ids = [f"run-{i}" for i in range(len(methods))]
    n = len(methods)
    runs = pl.DataFrame(
        {
            "run_id": run_ids,
            "eval_id": ["eval-1"] * n,
            "created_at": [datetime(2025, 3, 1, 12, 30, tzinfo=UTC)] * n,
            "corpus": ["scifact"] * n,
            "testset": ["test"] * n,
            "method": methods,
            "embedding_model": ["all-MiniLM-L6-v2"] * n,
            "git_sha": ["0123abc"] * n,
            "n_queries": [len(RANK)] * n,
            "retrieval_seconds": [1.25] * n,
            "eval_seconds": [0.5] * n,
        }
    )
    rows = [
        (run_id, f"q{q:02d}", measure, rank / 12 + 0.02 * j + 0.01 * k)
        for j, run_id in enumerate(run_ids)
        for k, measure in enumerate(MEASURES)
        for q, rank in enumerate(RANK)
    ]
    query_metrics = pl.DataFrame(rows, schema=["run_id", "query_id", "measure", "value"], orient="row")
    metrics = query_metrics.group_by("run_id", "measure", maintain_order=True).agg(pl.col("value").mean())
    return runs, metrics, query_metrics


def hardest_query_ids(page: str) -> list[str]:
    table = page.split("<h2>Hardest queries</h2>")[1]
    return re.findall(r"<tr><td>(q\d+)</td>", table)


def assert_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000
    height, width, _ = imread(path).shape
    assert height > 200 and width > 300


@pytest.fixture
def report(tmp_path: Path) -> Path:
    queries = {f"q{q:02d}": f"what is <b>query</b> {q}?" for q in range(len(RANK))}
    return write_report(*frames(METHODS), tmp_path / "out", title="SciFact & friends", queries=queries)


def test_writes_html_and_two_valid_pngs(report: Path):
    assert report.name == "report.html"
    assert sorted(p.name for p in report.parent.iterdir()) == [
        "comparison.png",
        "per-query-ndcg-10.png",
        "report.html",
    ]  # and no temporary files left behind
    assert_png(report.parent / "comparison.png")
    assert_png(report.parent / "per-query-ndcg-10.png")


def test_html_names_methods_and_measures_escaped(report: Path):
    page = report.read_text(encoding="utf-8")
    for method in METHODS:
        assert html.escape(method) in page
    assert "hybrid(fusion=&lt;rrf&gt;&amp;k=60)" in page and "<rrf>" not in page
    assert "SciFact &amp; friends" in page and "what is &lt;b&gt;query&lt;/b&gt; 3?" in page
    for measure in MEASURES:
        assert f"<th>{measure}</th>" in page
    assert "scifact" in page and "0123abc" in page and "2025-03-01 12:30" in page


def test_images_have_relative_sources_that_exist(report: Path):
    tags = re.findall(r'<img src="([^"]+)" alt="([^"]+)">', report.read_text(encoding="utf-8"))
    assert len(tags) == 2
    for src, alt in tags:
        assert not Path(src).is_absolute() and "/" not in src and alt
        assert (report.parent / src).is_file()


def test_best_per_measure_is_bold(report: Path):
    page = report.read_text(encoding="utf-8")
    scores = page.split("<h2>Scores</h2>")[1].split("</table>")[0]
    hybrid_row = next(row for row in scores.splitlines() if "hybrid" in row)
    assert hybrid_row.count("<b>") == len(MEASURES)
    assert "<b>" not in next(row for row in scores.splitlines() if "bm25" in row)


def test_hardest_queries_lowest_mean_first(report: Path):
    expected = sorted(range(len(RANK)), key=RANK.__getitem__)[:10]
    assert hardest_query_ids(report.read_text(encoding="utf-8")) == [f"q{q:02d}" for q in expected]


def test_nan_is_shown_as_dash(tmp_path: Path):
    runs, metrics, query_metrics = frames(METHODS)
    metrics = metrics.with_columns(
        pl.when(pl.col("run_id") == "run-0").then(float("nan")).otherwise(pl.col("value")).alias("value")
    )
    query_metrics = query_metrics.with_columns(
        pl.when(pl.col("query_id") == "q03").then(float("nan")).otherwise(pl.col("value")).alias("value")
    )
    page = write_report(runs, metrics, query_metrics, tmp_path, title="t").read_text(encoding="utf-8")
    assert not re.search(r"\bnan\b", page, re.IGNORECASE)
    assert "<td class=n>–</td>" in page
    assert hardest_query_ids(page)[0] == "q07"  # q03 has no score at all, so it ranks last, not first
    assert "q03" not in hardest_query_ids(page)


def test_single_method(tmp_path: Path):
    report = write_report(*frames(["bm25"]), tmp_path, title="one", measure="R@100")
    assert "bm25" in report.read_text(encoding="utf-8")
    assert_png(tmp_path / "comparison.png")
    assert_png(tmp_path / "per-query-r-100.png")


def test_unknown_measure_fails_before_writing(tmp_path: Path):
    with pytest.raises(ValueError, match="nDCG@100"):
        write_report(*frames(METHODS), tmp_path / "out", title="t", measure="nDCG@100")
    assert not (tmp_path / "out").exists()


def test_importing_the_module_does_not_import_matplotlib():
    code = "import sys, tasks.evaluation.report; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_scores_show_the_fallback_share_and_llm_errors_and_warn(tmp_path: Path):
    runs, metrics, query_metrics = frames(METHODS)
    runs = runs.with_columns(
        pl.Series("fallback_share", [0.0, 0.25, 0.75]), pl.Series("llm_errors", [0, 3, 90], pl.Int32)
    )
    page = write_report(runs, metrics, query_metrics, tmp_path, title="t", warn_share=0.25).read_text("utf-8")
    scores = page.split("<h2>Scores</h2>")[1].split("</table>")[0]
    assert "<th>Fell back</th><th>LLM errors</th>" in scores
    rows = {
        m: next(r for r in scores.splitlines() if r.startswith("<tr><td>" + html.escape(m))) for m in METHODS
    }
    assert "<td class=n>0%</td><td class=n>0</td>" in rows["bm25"]
    assert "<td class=n>75%</td><td class=n>90</td>" in rows["hybrid(fusion=<rrf>&k=60)"]
    warnings = re.findall(r"<p class=warning>(.*?)</p>", scores)  # above the table, only over 25%
    assert warnings == [
        html.escape("hybrid(fusion=<rrf>&k=60): 9 of 12 queries (75%) fell back; 90 LLM errors")
    ]


def test_runs_from_before_fallbacks_were_counted_show_dashes(tmp_path: Path):
    runs, metrics, query_metrics = frames(["bm25"])
    runs = runs.with_columns(
        pl.lit(None, pl.Float64).alias("fallback_share"), pl.lit(None).alias("llm_errors")
    )
    page = write_report(runs, metrics, query_metrics, tmp_path, title="t", warn_share=0.2).read_text("utf-8")
    assert "<td class=n>–</td><td class=n>–</td>" in page and "class=warning" not in page
