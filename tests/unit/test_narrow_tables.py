"""Tables stay readable on an 80-column terminal (issue 13): no line over 80, no run id folded over lines.

The real CLI in this process with the fake embedder, over a corpus of twelve documents and its test set.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tasks.workspace
from tests.conftest import zsr_home_at
from tests.fakes import FakeEmbedder, make_docs
from tests.unit.test_llm_failures import build_home

WIDTH = 80
METHODS = "dense,bm25,hybrid,hybrid(fusion=rrf)"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    home = build_home(tmp_path_factory.mktemp("home"))
    (home / "beir" / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text}) + "\n" for d in make_docs(12))
    )
    return home


@pytest.fixture
def zsr(built, tmp_path, monkeypatch):
    """``invoke(*args) -> Result``: ``zsr ARGS`` at 80 columns over a copy of the built home."""
    from flows.cli import app
    from flows.cli.common import err, out

    shutil.copytree(built, tmp_path / "home")
    monkeypatch.setattr(tasks.workspace, "load_embedder", lambda space, *args: FakeEmbedder(space=space))
    monkeypatch.setattr(out, "width", WIDTH)
    monkeypatch.setattr(err, "width", WIDTH)

    def invoke(*args: str):
        with zsr_home_at(tmp_path / "home"):
            result = CliRunner().invoke(app, list(args), env={"COLUMNS": str(WIDTH)})
        assert result.exit_code == 0, result.output
        return result

    return invoke


def assert_narrow(text: str, run_ids: list[str]) -> None:
    """Every line fits ``WIDTH`` columns and every run id sits whole on one line, or its short form does.

    The short form is the id's random suffix (``zsr compare`` and the other run commands accept it). The
    ``report:`` line is a path to copy, left whole.
    """
    lines = text.splitlines()
    assert [line for line in lines if len(line) > WIDTH and not line.startswith("report: ")] == []
    for run_id in run_ids:
        short = re.compile(rf"(^|[^0-9a-f]){run_id.rsplit('-', 1)[-1]}([^0-9a-f]|$)")
        assert any(run_id in line or short.search(line) for line in lines), f"{run_id} folded:\n{text}"


def run_ids(zsr) -> list[str]:
    return [row["run_id"] for row in json.loads(zsr("runs", "--json").stdout)]


def test_eval_and_runs_tables_fit_80_columns(zsr):
    result = zsr("eval", "-c", "c", "-t", "t", "--methods", METHODS)
    ids = run_ids(zsr)
    assert len(ids) == 4
    listed = zsr("runs").stdout
    assert_narrow(result.stdout, ids)
    assert_narrow(listed, ids)
    for text in (result.stdout, listed):  # the ids leave room for the rest: short values stay whole too
        assert all(re.search(rf"│ {method} +│", text) for method in ("dense", "bm25", "hybrid")), text
        assert all(re.search(rf"{m} ", text) for m in ("nDCG@10", "R@100")), text


def test_compare_fits_80_columns(zsr):
    zsr("eval", "-c", "c", "-t", "t", "--methods", METHODS)
    a, b = run_ids(zsr)[:2]
    assert_narrow(zsr("compare", a, b).stdout, [a, b])
    by_suffix = zsr("compare", a.rsplit("-", 1)[-1], b.rsplit("-", 1)[-1], "--json").stdout
    assert json.loads(by_suffix)["run_a"]["run_id"] == a  # the short form a narrow table shows is enough


def test_corpora_and_testset_list_fit_80_columns(zsr):
    assert_narrow(zsr("corpora").stdout, [])
    assert_narrow(zsr("testset", "list").stdout, [])


def test_demo_table_fits_80_columns(zsr, built):
    result = zsr("demo", "--data", str(built / "beir"), "--corpus", "demo-corpus")
    ids = run_ids(zsr)
    assert len(ids) == 3
    assert_narrow(result.stdout, ids)
    assert re.search(r"report: \S+", result.stdout)  # the report path is not cut


def test_methods_fits_80_columns(zsr):
    shown = zsr("methods").stdout
    assert_narrow(shown, [])
    assert "…" not in shown  # descriptions and parameters wrap between words, never cut
    for name in ("dense", "multiview", "rede-rf", "dense_weight=auto,", "query_weight=0.3,"):
        assert re.search(rf"[│ ]{re.escape(name)}[ │]", shown), f"{name} not whole:\n{shown}"
    assert "``" not in shown  # docstring markup


def test_sql_fits_80_columns(zsr):
    zsr("eval", "-c", "c", "-t", "t", "--methods", METHODS)
    runs = json.loads(zsr("sql", "SELECT * FROM runs", "--json").stdout)
    wide = zsr("sql", "SELECT * FROM runs").stdout  # some 20 columns: one block of lines per run
    assert_narrow(wide, [r["run_id"] for r in runs])
    for run in runs:
        for column in ("run_id", "eval_id", "git_sha", "method", "vector_space"):
            assert re.search(rf"│ {column} +│ {re.escape(str(run[column]))} +│", wide), f"{column}:\n{wide}"
    narrow = zsr("sql", "SELECT method, n_queries FROM runs ORDER BY method").stdout  # fits: a table
    assert_narrow(narrow, [])
    assert re.search(r"┃ method +┃ n_queries ┃", narrow) and narrow.count("│ 6 ") == 4, narrow
