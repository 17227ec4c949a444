"""The README's warehouse snippets (section "Evaluation and the results warehouse") run as written.

The snippets are read from README.md, not copied here, so a README edit that breaks them fails this test.
Only three things are substituted: the home folder (through ``HOME``, so ``~/.zsr`` is both the snippets'
path and where zsr itself puts its warehouse by default), ``.venv/bin/duckdb`` (the CLI beside this
interpreter, wherever the checkout is) and the run ids ``RUN_A`` / ``RUN_B``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from storage.warehouse import Warehouse
from tasks.evaluation.runs import RunResult, evaluate_methods
from tasks.ingest.index import reindex
from tasks.methods.search import Searcher
from tasks.settings import Settings
from tests.fakes import make_docs, make_testset

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### Evaluation and the results warehouse"


def snippet(language: str, marker: str) -> str:
    """The one ``language`` block of the README's warehouse section that contains ``marker``."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n### ", len(SECTION))]
    blocks = [b for b in re.findall(rf"^```{language}\n(.*?)^```", section, re.S | re.M) if marker in b]
    assert len(blocks) == 1, f"expected one {language} block with {marker!r} in {SECTION!r}, got {blocks}"
    return blocks[0]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ZSR_HOME", raising=False)
    return tmp_path


@pytest.fixture
def runs(home, tmp_store, fake) -> tuple[RunResult, RunResult]:
    """Two bm25 runs of one test set, the second after distracting documents joined the corpus."""
    warehouse = Warehouse(Settings(_env_file=None).warehouse_dir)  # zsr's default place under HOME
    assert warehouse.root == home / ".zsr" / "warehouse"
    reindex(tmp_store, "c", make_docs(12), fake.space, lambda: fake)
    (a,) = evaluate_methods(Searcher(tmp_store, "c", lambda: fake), make_testset(), ["bm25"], warehouse)
    time.sleep(0.01)  # distinct created_at
    reindex(tmp_store, "c", make_docs(12) + make_docs(6, prefix="x"), fake.space, lambda: fake)
    (b,) = evaluate_methods(Searcher(tmp_store, "c", lambda: fake), make_testset(), ["bm25"], warehouse)
    assert a.metrics["nDCG@10"] != b.metrics["nDCG@10"]  # so the delta says something
    return a, b


def test_duckdb_cli_snippet(home, runs):
    command = snippet("bash", ".venv/bin/duckdb -readonly")
    assert command.startswith(".venv/bin/duckdb ")
    cli = Path(sys.executable).parent / "duckdb"
    command = shlex.quote(str(cli)) + command.removeprefix(".venv/bin/duckdb")
    done = subprocess.run(
        ["bash", "-c", command], env={"HOME": str(home)}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # duckbox output: a header row, a type row, then one row per result; doubles printed round-trip.
    table = [[c.strip() for c in line.split("│")[1:-1]] for line in done.stdout.splitlines() if "│" in line]
    a, b = (r.metrics["nDCG@10"] for r in runs)
    assert table[0] == ["corpus", "method", "measure", "value", "delta"]
    assert table[2:] == [
        ["c", "bm25", "nDCG@10", repr(a), "NULL"],
        ["c", "bm25", "nDCG@10", repr(b), repr(b - a)],
    ]


def test_polars_snippet(home, runs):
    a, b = runs
    code = snippet("python", "duckdb.connect(")
    assert "'RUN_A'" in code and "'RUN_B'" in code
    code = code.replace("'RUN_A'", repr(a.run_id)).replace("'RUN_B'", repr(b.run_id))
    scope: dict[str, object] = {}
    exec(code, scope)
    scope["con"].close()
    board, per_query = scope["board"], scope["per_query"]
    assert isinstance(board, pl.DataFrame) and isinstance(per_query, pl.DataFrame)
    # The leaderboard shows the latest run of each method: b, every measure of it.
    assert set(board["run_id"]) == {b.run_id}
    assert dict(zip(board["measure"], board["value"], strict=True)) == b.metrics
    query_metrics = Warehouse(home / ".zsr" / "warehouse").query("SELECT * FROM query_metrics").to_pylist()
    value = {(r["run_id"], r["query_id"], r["measure"]): r["value"] for r in query_metrics}
    expected = []
    for measure in sorted(a.metrics):
        deltas = [
            value[b.run_id, q, m] - v for (run, q, m), v in value.items() if run == a.run_id and m == measure
        ]
        wins, losses = sum(d > 1e-9 for d in deltas), sum(d < -1e-9 for d in deltas)
        expected.append(
            {"measure": measure, "wins": wins, "ties": len(deltas) - wins - losses, "losses": losses}
        )
    assert per_query.to_dicts() == expected
    assert any(row["wins"] or row["losses"] for row in expected)
