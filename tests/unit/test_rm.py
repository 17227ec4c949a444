"""Issue 13 item 2, deleting things: ``zsr rm corpus|testset|run`` leaves no orphan rows and no table behind,
refuses what a running job holds, and deletes nothing unconfirmed."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.cli import app
from storage.warehouse import DATA_TABLES
from tests.fakes import fake_workspace

ROOT = Path(__file__).resolve().parents[2]
RUN_TABLES = ["runs", *DATA_TABLES]  # runs, metrics, query_metrics, queries, rankings
runner = CliRunner()


def zsr(*args: str, stdin: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=stdin)


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Corpora ``c`` (test set ``t``, two runs, a synthetic-queries table) and ``other`` (test set ``t``)."""
    with fake_workspace(tmp_path, monkeypatch, corpora=("c", "other")) as ws:
        ws.store.synthetic.table("c")
        ws.evaluate("c", "t", ["bm25", "dense"])
        yield ws


def rows_of(ws: Any, run_id: str) -> dict[str, int]:
    """Rows naming ``run_id``: in each view, and in each folder's raw files (orphans the views would hide)."""
    counts = {}
    for table in RUN_TABLES:
        view = ws.sql(f"SELECT count(*) AS n FROM {table} WHERE run_id = ?", [run_id])["n"][0]
        files = f"{ws.warehouse.root}/{table}/*.parquet"
        raw = ws.sql(f"SELECT count(*) AS n FROM read_parquet('{files}') WHERE run_id = ?", [run_id])["n"][0]
        counts[table] = view + raw
    return counts


def test_rm_corpus_leaves_no_table_and_other_corpora_search_as_before(ws):
    before = ws.search("other", "term3 wing", "hybrid")
    refused = zsr("rm", "corpus", "c", "--yes")
    assert refused.exit_code == 2 and "has test sets (t)" in refused.output
    assert any(t.startswith("c__") for t in ws.store.lance.names())

    result = zsr("rm", "corpus", "c", "--with-testsets", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["testsets"] == ["t"]
    assert not [t for t in ws.store.lance.names() if t.startswith("c__")]
    assert [row["name"] for row in json.loads(zsr("corpora", "--json").output)] == ["other"]
    assert [t["corpus"] for t in ws.testsets.listing()] == ["other"]
    assert ws.search("other", "term3 wing", "hybrid") == before
    assert len(ws.runs("c")) == 2  # runs are history and stay


def test_rm_corpus_killed_after_any_table_is_reported_incomplete_and_a_rerun_finishes(ws, monkeypatch):
    store = ws.store
    real_drop = store.lance.drop

    def dies_after_one(name: str) -> bool:
        real_drop(name)
        raise KeyboardInterrupt

    monkeypatch.setattr(store.lance, "drop", dies_after_one)
    for _ in store.tables_of("c")[:-1]:  # a kill after each drop but the last
        with pytest.raises(KeyboardInterrupt):
            ws.remove_corpus("c", with_testsets=True)
        (row,) = [r for r in ws.corpora() if r["name"] == "c"]
        assert row["incomplete"] == "its tables exist but it was never registered"
    monkeypatch.setattr(store.lance, "drop", real_drop)
    assert zsr("rm", "corpus", "c", "--yes").exit_code == 0
    assert "c" not in [r["name"] for r in ws.corpora()]
    assert not [t for t in store.lance.names() if t.startswith("c__")]


def test_rm_run_leaves_no_row_of_it_anywhere_and_other_runs_intact(ws):
    gone, kept = ws.runs("c")["run_id"].to_list()
    kept_rows = rows_of(ws, kept)
    assert all(rows_of(ws, gone).values())

    result = zsr("rm", "run", gone, "--yes")
    assert result.exit_code == 0, result.output
    assert rows_of(ws, gone) == dict.fromkeys(RUN_TABLES, 0)
    assert rows_of(ws, kept) == kept_rows

    again = zsr("rm", "run", gone, "--yes")
    assert again.exit_code == 2 and f"newest: {kept}" in again.output


def test_rm_run_killed_after_its_first_file_is_gone_from_every_view(ws, monkeypatch):
    gone = ws.runs("c")["run_id"][0]
    real_unlink = Path.unlink

    def dies_after_one(path: Path, missing_ok: bool = False) -> None:
        real_unlink(path, missing_ok=missing_ok)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "unlink", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        ws.remove_run(gone)
    monkeypatch.setattr(Path, "unlink", real_unlink)
    for table in RUN_TABLES:
        assert ws.sql(f"SELECT count(*) AS n FROM {table} WHERE run_id = ?", [gone])["n"][0] == 0, table
    assert ws.remove_run(gone)["files"]  # a re-run deletes what is left
    assert rows_of(ws, gone) == dict.fromkeys(RUN_TABLES, 0)


def test_rm_testset_removes_it_from_the_listing(ws):
    assert zsr("rm", "testset", "c", "t", "--yes").exit_code == 0
    listed = json.loads(zsr("testset", "list", "--json").output)
    assert [(t["corpus"], t["name"]) for t in listed] == [("other", "t")]
    assert not (ws.settings.testsets_dir / ".trash").exists() or not any(
        (ws.settings.testsets_dir / ".trash").iterdir()
    )
    unknown = zsr("rm", "testset", "c", "t", "--yes")
    assert unknown.exit_code == 2 and "known: none" in unknown.output


def test_unknown_corpus_is_one_line_naming_the_ones_that_exist(ws):
    result = zsr("rm", "corpus", "nope", "--yes")
    assert result.exit_code == 2 and "known: c, other" in result.output


@pytest.mark.parametrize(
    ("args", "lock"),
    [
        (("corpus", "other", "--with-testsets"), "corpus-other"),
        (("testset", "other", "t"), "testset-other-t"),
    ],
)
def test_rm_refuses_while_another_process_holds_the_lease(ws, args, lock):
    lock_file = ws.settings.home_dir / "locks" / f"{lock}.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from tasks.leases import shared\n"
            f"with shared(Path({str(lock_file)!r})):\n    print('held', flush=True); sys.stdin.read()",
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        refused = zsr("rm", *args, "--yes")
        assert refused.exit_code == 2
        assert "is in use by a running job" in refused.output and "'other'" in refused.output
        assert "other" in [r["name"] for r in ws.corpora()]
        assert ("other", "t") in [(t["corpus"], t["name"]) for t in ws.testsets.listing()]
    finally:
        holder.communicate("")
    assert zsr("rm", *args, "--yes").exit_code == 0


def test_workspace_verbs_hold_the_lease(ws, monkeypatch):
    from tasks.leases import InUseError, exclusive

    locks = ws.settings.home_dir / "locks"
    held: list[tuple[str, ...]] = []
    real_searcher = ws.searcher

    def probe(corpus: str, *args: Any) -> Any:
        names = []
        for name in ("corpus-other", "testset-other-t"):
            try:
                with exclusive(locks / f"{name}.lock", name):
                    pass
            except InUseError:
                names.append(name)
        held.append(tuple(names))
        return real_searcher(corpus, *args)

    monkeypatch.setattr(ws, "searcher", probe)
    ws.search("other", "term3 wing")
    ws.evaluate("other", "t", ["bm25"])
    assert held == [("corpus-other",), ("corpus-other", "testset-other-t")]


def test_unconfirmed_deletes_delete_nothing(ws, monkeypatch):
    run_id = ws.runs("c")["run_id"][0]
    no_tty = zsr("rm", "run", run_id)
    assert no_tty.exit_code == 2 and "pass --yes" in no_tty.output

    import flows.cli.rm

    tty = types.SimpleNamespace(stdin=types.SimpleNamespace(isatty=lambda: True))
    monkeypatch.setattr(flows.cli.rm, "sys", tty)
    for args in (("run", run_id), ("testset", "c", "t"), ("corpus", "c", "--with-testsets")):
        declined = zsr("rm", *args, stdin="n\n")
        assert declined.exit_code == 1 and "nothing deleted" in declined.output
        assert zsr("rm", *args, stdin="\n").exit_code == 1  # the default is No
    assert all(rows_of(ws, run_id).values())
    assert ("c", "t") in [(t["corpus"], t["name"]) for t in ws.testsets.listing()]
    assert "c" in [r["name"] for r in ws.corpora()]
