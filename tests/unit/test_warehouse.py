"""Evaluation runs in the warehouse: contents, views, comparisons, concurrency with readers, kills."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.warehouse import DATA_TABLES, SCHEMAS, Warehouse
from tasks.evaluation import testsets
from tasks.evaluation.compare import UnknownRunError, compare_runs, list_runs, trec_lines
from tasks.evaluation.measures import score_queries
from tasks.evaluation.runs import depth_for, evaluate_methods
from tasks.ingest.index import reindex
from tasks.methods.search import Searcher
from tests.fakes import make_docs, make_testset
from tests.records import run_result

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def searcher(tmp_store, fake) -> Searcher:
    reindex(tmp_store, "c", make_docs(12), fake.space, lambda: fake)
    return Searcher(tmp_store, "c", lambda: fake)


@pytest.fixture
def warehouse(tmp_path) -> Warehouse:
    return Warehouse(tmp_path / "warehouse")


def test_empty_warehouse_has_working_views(warehouse):
    for view in (
        "runs",
        "metrics",
        "query_metrics",
        "queries",
        "rankings",
        "leaderboard",
        "latest_runs",
        "run_deltas",
    ):
        assert warehouse.query(f"SELECT count(*) AS n FROM {view}").to_pylist() == [{"n": 0}]
    with duckdb.connect(str(warehouse.catalog_path), read_only=True) as con:  # the file analysts open
        assert con.execute("SELECT count(*) FROM leaderboard").fetchone() == (0,)


def test_a_run_stores_every_number(searcher, warehouse):
    testset = make_testset()
    (result,) = evaluate_methods(searcher, testset, ["hybrid"], warehouse, measures=["nDCG@10", "P@1"])
    run = warehouse.query("SELECT * FROM runs").to_pylist()[0]
    assert (run["run_id"], run["corpus"], run["testset"], run["method"]) == (
        result.run_id,
        "c",
        "t",
        "hybrid",
    )
    assert run["n_queries"] == 6 and run["depth"] == 100 and run["embedding_model"] == "fake-bow"
    assert run["documents_version"] == searcher.store.versions("c")["documents"]
    assert '"lancedb"' in run["packages"] and run["retrieval_seconds"] > 0
    metrics = {r["measure"]: r["value"] for r in warehouse.query("SELECT * FROM metrics").to_pylist()}
    assert metrics == pytest.approx(result.metrics)
    rankings = {q: searcher.search(t, "hybrid", 100) for q, t in testset.queries.items()}
    assert metrics == pytest.approx(score_queries(rankings, testset.qrels, ["nDCG@10", "P@1"])[0])
    per_query = warehouse.query("SELECT * FROM query_metrics").to_pylist()
    assert len(per_query) == 6 * 2
    assert warehouse.query("SELECT count(*) AS n FROM queries WHERE latency_ms > 0").to_pylist() == [{"n": 6}]
    lines = trec_lines(warehouse, result.run_id)
    first = lines[0].split()
    assert first[1:4:2] == ["Q0", "1"] and first[-1] == result.run_id
    assert len(lines) == warehouse.query("SELECT count(*) AS n FROM rankings").to_pylist()[0]["n"] == 6 * 12


def test_views_leaderboard_deltas_and_comparison(searcher, warehouse):
    first = evaluate_methods(searcher, make_testset(), ["bm25", "dense"], warehouse, measures=["nDCG@10"])
    time.sleep(0.01)
    again = evaluate_methods(searcher, make_testset(), ["bm25"], warehouse, measures=["nDCG@10"])
    board = warehouse.query("SELECT method, run_id FROM leaderboard ORDER BY method").to_pylist()
    assert board == [
        {"method": "bm25", "run_id": again[0].run_id},
        {"method": "dense", "run_id": first[1].run_id},
    ]
    assert warehouse.query("SELECT count(*) AS n FROM latest_runs").to_pylist() == [{"n": 2}]
    delta = warehouse.query("SELECT * FROM run_deltas WHERE run_id = ?", [again[0].run_id]).to_pylist()[0]
    assert delta["previous_run_id"] == first[0].run_id and delta["delta"] == pytest.approx(0.0)
    result = compare_runs(warehouse, first[0].run_id, first[1].run_id, "nDCG@10", top=3)
    assert result.wins + result.ties + result.losses == 6
    wtl = warehouse.query("SELECT * FROM win_tie_loss(?, ?)", [first[0].run_id, first[1].run_id]).to_pylist()
    assert wtl == [{"measure": "nDCG@10", "wins": result.wins, "ties": result.ties, "losses": result.losses}]
    assert result.mean_a == pytest.approx(first[0].metrics["nDCG@10"])
    assert [g["delta"] for g in result.gains] == sorted((g["delta"] for g in result.gains), reverse=True)
    assert all(g["delta"] > 0 for g in result.gains) and all(d["delta"] < 0 for d in result.drops)
    assert list_runs(warehouse)["run_id"][0] == again[0].run_id
    with pytest.raises(UnknownRunError, match="zsr runs"):
        compare_runs(warehouse, "nope", first[0].run_id)
    with pytest.raises(ValueError, match="share no query"):
        compare_runs(warehouse, first[0].run_id, first[1].run_id, "P@5")


def test_identical_runs_have_no_significance_test(searcher, warehouse):
    a, b = (evaluate_methods(searcher, make_testset(), ["bm25"], warehouse)[0] for _ in range(2))
    result = compare_runs(warehouse, a.run_id, b.run_id)
    assert (result.wins, result.losses, result.t_test_p, result.wilcoxon_p) == (0, 0, None, None)


@pytest.mark.parametrize(
    ("methods", "measures", "message"),
    [
        (["colbert"], None, "unknown method"),
        (["bm25"], ["nDGC@10"], "unknown measure"),
        ([], None, "no methods"),
    ],
)
def test_bad_requests_fail_before_any_work(searcher, warehouse, methods, measures, message):
    with pytest.raises(ValueError, match=message):
        evaluate_methods(searcher, make_testset(), methods, warehouse, measures=measures)
    assert warehouse.query("SELECT count(*) AS n FROM runs").to_pylist() == [{"n": 0}]


def test_empty_testset_is_an_error(searcher, warehouse):
    empty = make_testset()
    empty = type(empty)("c", "t", {}, {}, "h", "", "", "human")
    with pytest.raises(ValueError, match="no judged queries"):
        evaluate_methods(searcher, empty, ["bm25"], warehouse)


def test_depth_follows_the_measures():
    assert depth_for(["nDCG@10", "P@5"]) == 100
    assert depth_for(["R@1000"]) == 1000
    assert depth_for(["AP"]) == 1000


def eval_process(tmp_path: Path, methods: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.eval_target",
            str(tmp_path / "db"),
            str(tmp_path / "warehouse"),
            methods,
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_open_notebook_connection_does_not_block_an_eval(tmp_path):
    warehouse = Warehouse(tmp_path / "warehouse")
    notebook = duckdb.connect(str(warehouse.catalog_path))  # read-write, held open, as a notebook would
    assert notebook.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    proc = eval_process(tmp_path, "bm25,dense")
    out, errors = proc.communicate(timeout=120)
    assert proc.returncode == 0, errors
    run_ids = set(out.split())
    assert len(run_ids) == 2
    # The notebook sees the new runs on its next query, through the same connection.
    seen = {r[0] for r in notebook.execute("SELECT run_id FROM runs").fetchall()}
    assert seen == run_ids
    assert notebook.execute("SELECT count(DISTINCT run_id) FROM query_metrics").fetchone() == (2,)
    notebook.close()


RUN_FILES = len(["runs", *DATA_TABLES])  # the files one run publishes


@pytest.mark.parametrize("n", range(1, RUN_FILES + 1))
@pytest.mark.parametrize("when", ["kill-before", "kill-after"])
def test_killed_eval_leaves_no_partial_run(tmp_path, when, n):
    # The process kills itself inside the real Warehouse.write_run, at the rename of its n-th file.
    proc = eval_process(tmp_path, "bm25", when, str(n))
    out, errors = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, errors
    said, target = out.strip().split(" ", 1)
    assert said == when and Path(target).exists() == (when == "kill-after")
    run_id = Path(target).stem
    warehouse = Warehouse(tmp_path / "warehouse")
    complete = when == "kill-after" and n == RUN_FILES

    def shown(view: str) -> int:
        return warehouse.query(f"SELECT count(*) AS n FROM {view}").to_pylist()[0]["n"]

    if complete:  # the runs row landed: the run is visible whole
        assert shown("runs") == 1
        for table in DATA_TABLES:
            on_disk = pq.read_metadata(warehouse.root / table / f"{run_id}.parquet").num_rows
            assert shown(table) == on_disk > 0, table
        assert shown("leaderboard") == shown("metrics")
    else:
        for view in ("runs", *DATA_TABLES, "leaderboard"):  # nothing of the unfinished run is visible
            assert shown(view) == 0, view
    files = [p for p in warehouse.root.rglob("*.parquet") if p.stem != "_schema"]
    assert files  # a temporary file at least, or the files of the finished run
    old = time.time() - 2 * 3600
    for path in files:
        os.utime(path, (old, old))
    Warehouse(warehouse.root)  # the next writer removes a dead writer's leftovers, and only those
    assert [p for p in files if p.exists()] == (files if complete else [])


def test_query_deltas_pairs_the_queries_of_two_runs(warehouse):
    # Exact binary fractions, so the deltas compare exactly.
    per_query = {
        "A": {("q1", "nDCG@10"): 0.5, ("q2", "nDCG@10"): 1.0, ("q3", "nDCG@10"): 0.0, ("q1", "P@1"): 1.0},
        "B": {
            ("q1", "nDCG@10"): 0.75,
            ("q2", "nDCG@10"): 0.5,
            ("q3", "nDCG@10"): 0.0,
            ("q4", "nDCG@10"): 1.0,
        },
        "C": {("q1", "nDCG@10"): 0.125, ("q2", "nDCG@10"): 0.25},  # a third run the macro must ignore
    }
    for run_id, values in per_query.items():
        publish(warehouse, run_id, values)
    rows = warehouse.query(
        "SELECT * FROM query_deltas('A', 'B') WHERE measure = 'nDCG@10' ORDER BY query_id"
    ).to_pylist()
    assert rows == [
        {"measure": "nDCG@10", "query_id": "q1", "value_a": 0.5, "value_b": 0.75, "delta": 0.25},
        {"measure": "nDCG@10", "query_id": "q2", "value_a": 1.0, "value_b": 0.5, "delta": -0.5},
        {"measure": "nDCG@10", "query_id": "q3", "value_a": 0.0, "value_b": 0.0, "delta": 0.0},
    ]
    assert warehouse.query("SELECT count(*) AS n FROM query_deltas('A', 'B')").to_pylist() == [{"n": 3}]


def publish(warehouse: Warehouse, run_id: str, values: dict[tuple[str, str], float]) -> None:
    """Publish a run whose only data is the given per-query values ((query, measure) -> value)."""
    run = run_result(run_id, "bm25", {})
    query_metrics = pa.Table.from_pylist(
        [{"run_id": run_id, "query_id": q, "measure": m, "value": v} for (q, m), v in values.items()],
        SCHEMAS["query_metrics"],
    )
    warehouse.write_run(run, {"query_metrics": query_metrics})


def test_trec_export_encodes_whitespace_and_percent_in_ids_reversibly(tmp_store, fake, warehouse, tmp_path):
    docs = [
        replace(d, doc_id=f"Ada Love{'%' if i == 3 else ''} {d.doc_id}") for i, d in enumerate(make_docs(12))
    ]
    reindex(tmp_store, "c", docs, fake.space, lambda: fake)
    base = make_testset()
    spaced = replace(
        base,
        queries={f"query {q}": text for q, text in base.queries.items()},
        qrels={
            f"query {q}": {docs[int(d[1:])].doc_id: g for d, g in rel.items()}
            for q, rel in base.qrels.items()
        },
    )
    (result,) = evaluate_methods(Searcher(tmp_store, "c", lambda: fake), spaced, ["bm25"], warehouse)

    lines = trec_lines(warehouse, result.run_id)

    assert lines and all(len(line.split()) == 6 for line in lines)
    assert {line.split()[0] for line in lines} == {"query%20q" + str(i) for i in range(6)}
    assert "Ada%20Love%25%20d3" in {line.split()[2] for line in lines}
    (tmp_path / "run-as-qrels.txt").write_text(
        "".join(f"{q} 0 {d} 1\n" for q, _, d, *_ in map(str.split, lines))
    )
    read = testsets._read_qrels(tmp_path / "run-as-qrels.txt", trec=True)
    assert set(read) == set(spaced.queries) and {d for rel in read.values() for d in rel} <= {
        d.doc_id for d in docs
    }


def test_plain_ids_are_unchanged_in_trec_export(searcher, warehouse):
    (result,) = evaluate_methods(searcher, make_testset(), ["bm25"], warehouse)

    exported = {line.split()[2] for line in trec_lines(warehouse, result.run_id)}
    assert "d0" in exported and exported <= {f"d{i}" for i in range(12)}


def test_the_runs_schema_is_derived_from_the_run_record_and_unchanged():
    """The run row is defined once (``RunRecord``); its Parquet schema keeps what old files and SQL know.

    Format 2 added one column, ``vector_space``; older run files lack it and read as null (``union_by_name``).
    """
    from dataclasses import fields

    from storage.warehouse import RunRecord

    before = pa.schema(  # the explicit schema of the runs files before the record existed, plus vector_space
        [
            ("run_id", pa.string()),
            ("eval_id", pa.string()),
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("corpus", pa.string()),
            ("testset", pa.string()),
            ("testset_hash", pa.string()),
            ("method", pa.string()),
            ("method_name", pa.string()),
            ("params", pa.string()),
            ("depth", pa.int32()),
            ("embedding_model", pa.string()),
            ("vector_space", pa.string()),
            ("llm_model", pa.string()),
            ("git_sha", pa.string()),
            ("packages", pa.string()),
            ("documents_version", pa.int64()),
            ("views_version", pa.int64()),
            ("n_queries", pa.int32()),
            ("retrieval_seconds", pa.float64()),
            ("eval_seconds", pa.float64()),
            ("fallback_share", pa.float64()),
            ("llm_errors", pa.int32()),
        ]
    )
    assert SCHEMAS["runs"].equals(before, check_metadata=True)
    assert [f.name for f in fields(RunRecord)] == SCHEMAS["runs"].names
    record = run_result("r1", "bm25", {"nDCG@10": 0.5})
    table = RunRecord.table(record)
    assert table.schema.equals(before) and table.to_pylist() == [
        {f.name: getattr(record, f.name) for f in fields(RunRecord)}
    ]
