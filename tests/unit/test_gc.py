"""Issue 13 item 1, storage upkeep: ``zsr gc`` keeps every recorded run's versions searchable.

It deletes the other versions, changes nothing in a dry run, packs the warehouse without changing a row (nor
leaving one behind a deleted run), and runs in the nightly flow.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.cli import app
from storage.documents import documents_table
from storage.packs import packs
from storage.views import views_table
from tasks.ingest.index import reindex
from tests.conftest import zsr_home_at
from tests.fakes import FakeEmbedder, make_docs
from tests.unit import test_rm

runner = CliRunner()
ws = test_rm.ws  # the fixture: corpora c and other, test sets, two runs
RUN_TABLES, rows_of = test_rm.RUN_TABLES, test_rm.rows_of
VIEWS = [*RUN_TABLES, "llm_calls", "leaderboard", "latest_runs", "run_deltas"]
QUERIES = ["term3 wing", "boundary layer", "term7 heat flow"]


def reindex_changed(ws: Any, night: int) -> None:
    """Re-index corpus ``c`` with two documents changed, as a nightly would."""
    docs = [
        replace(doc, text=f"{doc.text} revised{night}") if i in (night % 12, night % 12 + 1) else doc
        for i, doc in enumerate(make_docs(12))
    ]
    fake = FakeEmbedder()
    reindex(ws.store, "c", docs, fake.space, lambda: fake)


def as_of(ws: Any, table: str, version: int) -> list[list[tuple[str, float]]]:
    """Each query's top 10 in ``table`` checked out at ``version``: BM25 in documents, dense in views."""
    opened = ws.store.lance.db.open_table(table)
    opened.checkout(version)
    out = []
    for query in QUERIES:
        if table.endswith("__documents"):
            rows = opened.search(query, query_type="fts").select(["doc_id", "_score"]).limit(10).to_list()
            out.append([(r["doc_id"], round(r["_score"], 5)) for r in rows])
        else:
            vector = FakeEmbedder().encode([query], queries=True)[0]
            found = opened.search(vector).distance_type("cosine").select(["view_id", "_distance"]).limit(10)
            out.append([(r["view_id"], round(r["_distance"], 5)) for r in found.to_list()])
    return out


def versions(ws: Any, table: str) -> list[int]:
    return [v["version"] for v in ws.store.lance.db.open_table(table).list_versions()]


def snapshot(home: Path) -> dict[str, int]:
    """Every file under the home with its size (lock files and the warehouse's scratch folder aside)."""
    return {
        str(p.relative_to(home)): p.stat().st_size
        for p in home.rglob("*")
        if p.is_file() and "locks" not in p.parts and "_tmp" not in p.parts
    }


def views(ws: Any, without: str | None = None) -> dict[str, Any]:
    """Every view's column names and types and its rows, sorted (less the rows of run ``without``)."""
    out = {}
    for view in VIEWS:
        where = " WHERE run_id <> ?" if without and view in RUN_TABLES else ""
        frame = ws.sql(f"SELECT * FROM {view}{where} ORDER BY ALL", [without] if where else None)
        out[view] = (list(frame.schema.items()), frame.rows())
    return out


def test_gc_keeps_every_recorded_version_searchable_and_deletes_the_rest(ws):
    ws.evaluate("c", "t", ["bm25", "dense"])
    for night in range(1, 4):
        reindex_changed(ws, night)
        if night != 2:
            ws.evaluate("c", "t", ["bm25", "dense"])
    space = ws.store.registry.corpus("c").space
    runs = ws.sql("SELECT run_id, documents_version, views_version FROM runs WHERE corpus = 'c'")
    recorded = {(documents_table("c"), v) for v in runs["documents_version"].to_list()} | {
        (views_table("c", space), v) for v in runs["views_version"].to_list()
    }
    results = {(table, v): as_of(ws, table, v) for table, v in recorded}
    latest = {m: ws.search_many("c", dict(enumerate(QUERIES)), m) for m in ("bm25", "dense", "hybrid")}
    unrecorded = [
        (table, v)
        for table in (documents_table("c"), views_table("c", space))
        for v in versions(ws, table)[:-1]
        if (table, v) not in recorded
    ]
    assert unrecorded  # night 2 recorded nothing, and every re-index commits several versions

    report = ws.gc(apply=True)

    assert {(table, v): as_of(ws, table, v) for table, v in recorded} == results
    for table, v in unrecorded:
        with pytest.raises(ValueError, match="no longer exists"):
            ws.store.lance.db.open_table(table).checkout(v)
    assert {m: ws.search_many("c", dict(enumerate(QUERIES)), m) for m in latest} == latest
    by_table = {t.table: t for t in report.tables}
    assert by_table[documents_table("c")].versions_removed > 0
    assert by_table[documents_table("c")].fragments_after <= by_table[documents_table("c")].fragments
    assert not report.unreproducible
    # tables no run records keep their latest version only
    assert versions(ws, "corpora") == versions(ws, "corpora")[-1:]


def test_a_dry_run_changes_nothing(ws):
    reindex_changed(ws, 1)
    home = ws.settings.home_dir
    before = snapshot(home)
    result = runner.invoke(app, ["gc"])
    assert result.exit_code == 0, result.output
    assert "would reclaim" in result.output and "zsr gc --apply" in result.output
    assert snapshot(home) == before
    report = json.loads(runner.invoke(app, ["gc", "--json"]).output)
    assert not report["applied"] and report["reclaimed"] > 0
    assert snapshot(home) == before


def test_warehouse_compaction_keeps_every_view_and_rm_run_leaves_no_orphan(ws):
    ws.evaluate("c", "t", ["bm25", "hybrid"])
    ws.evaluate("other", "t", ["bm25"])
    ws.warehouse.append("llm_calls", _llm_calls(3))
    ws.warehouse.append("llm_calls", _llm_calls(2))
    before = views(ws)
    root = ws.warehouse.root
    small = {p: p.read_bytes() for table in RUN_TABLES for p in (root / table).glob("[!_]*.parquet")}

    report = ws.gc(apply=True)

    assert all(not list((root / t).glob("[!_]*.parquet")) and len(packs(root / t)) == 1 for t in RUN_TABLES)
    assert sum(f.merged for f in report.folders) >= len(small)
    assert views(ws) == before
    # the instant between a pack landing and the files it merged going: each run is still read once
    for path, data in small.items():
        path.write_bytes(data)
    assert views(ws) == before
    for path in small:
        path.unlink()

    gone = ws.sql("SELECT run_id FROM runs WHERE corpus = 'c' ORDER BY run_id")["run_id"][0]
    before_rm = views(ws, without=gone)
    result = runner.invoke(app, ["rm", "run", gone, "--yes"])
    assert result.exit_code == 0, result.output
    assert set(rows_of(ws, gone).values()) == {0}
    assert {v: views(ws)[v] for v in RUN_TABLES} == {v: before_rm[v] for v in RUN_TABLES}


def test_the_nightly_flow_runs_gc_after_the_reindex():
    from flows import nightly, steps

    source = inspect.getsource(nightly.nightly.fn)
    assert source.index("reindex(") < source.index("steps.collect_garbage()") < source.index("synthesize(")
    assert "gc(apply=True)" in inspect.getsource(steps.collect_garbage.fn)


def _llm_calls(n: int) -> Any:
    import pyarrow as pa

    from storage.warehouse import SCHEMAS

    rows = [{"call_id": f"call{n}-{i}", "purpose": "test", "retries": 0} for i in range(n)]
    return pa.Table.from_pylist(rows, SCHEMAS["llm_calls"])


def test_cli_gc_on_an_empty_home(tmp_path: Path):
    with zsr_home_at(tmp_path / "home"):
        result = runner.invoke(app, ["gc", "--apply"])
    assert result.exit_code == 0, result.output
    assert "reclaimed" in result.output


def test_data_files_of_runs_packed_first_are_not_taken_for_stale(ws):
    """A compaction killed after packing ``runs`` leaves data files whose run is published only in a pack."""
    import os

    from storage.packs import compact_folder
    from storage.warehouse import SCHEMAS, Warehouse

    root = ws.warehouse.root
    before = views(ws)
    compact_folder(root / "runs", root / "_tmp", SCHEMAS["runs"], log_table=False, runs=None, apply=True)
    assert not list((root / "runs").glob("[!_]*.parquet"))
    for path in (root / "metrics").glob("[!_]*.parquet"):
        os.utime(path, (0, 0))  # older than any writer could still be writing
    Warehouse(root)  # cleans what dead writers left
    assert list((root / "metrics").glob("[!_]*.parquet"))
    assert views(ws) == before


def test_gc_leaves_alone_what_a_running_job_holds(ws):
    reindex_changed(ws, 1)
    held = [t for t in ws.store.lance.names() if t.startswith("c__") or t == "corpora"]
    before = {t: versions(ws, t) for t in held}
    with ws.lease("c"):  # as a running ingest, search or evaluation of c holds it
        report = ws.gc(apply=True)
    skipped = {t.table: t.skipped for t in report.tables}
    assert {t: versions(ws, t) for t in held} == before
    assert skipped[documents_table("c")] == "corpus 'c' is in use" and skipped["corpora"]
    assert skipped[documents_table("other")] is None and len(versions(ws, documents_table("other"))) == 1
