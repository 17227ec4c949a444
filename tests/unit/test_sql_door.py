"""`zsr sql` is a read-only door: no statement can write, delete or read outside the warehouse, and a
catalog that a notebook altered is rebuilt by zsr's next write."""

from __future__ import annotations

import duckdb
import pytest
from typer.testing import CliRunner

from flows.cli import app
from storage.warehouse import Warehouse
from tasks.evaluation.runs import evaluate_methods
from tasks.ingest.index import reindex
from tasks.methods.search import Searcher
from tests.conftest import zsr_home_at
from tests.fakes import make_docs, make_testset


@pytest.fixture
def home(tmp_path, tmp_store, fake):
    """A ZSR_HOME whose warehouse holds one bm25 run."""
    with zsr_home_at(tmp_path / "home") as path:
        reindex(tmp_store, "c", make_docs(12), fake.space, lambda: fake)
        warehouse = Warehouse(path / "warehouse")
        (run,) = evaluate_methods(Searcher(tmp_store, "c", lambda: fake), make_testset(), ["bm25"], warehouse)
        yield path, run.run_id


def sql(*args: str):
    return CliRunner().invoke(app, ["sql", *args])


def test_queries_run(home):
    _, run_id = home
    result = sql("SELECT run_id FROM runs", "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout.count(run_id) == 1
    assert sql("DESCRIBE runs").exit_code == 0 and sql("SHOW TABLES").exit_code == 0


@pytest.mark.parametrize(
    "statement",
    [
        "COPY (SELECT 1 AS run_id) TO '{root}/runs/{run}.parquet'",
        "EXPLAIN ANALYZE COPY (SELECT 1 AS run_id) TO '{root}/runs/{run}.parquet'",
        "SELECT 1; COPY (SELECT 1 AS run_id) TO '{root}/runs/{run}.parquet'",
        "ATTACH '{root}/catalog.duckdb' AS cat",
        "DROP VIEW runs",
        "CREATE TABLE t AS SELECT 1",
        "SET enable_external_access = true",
        "INSTALL httpfs",
    ],
)
def test_statements_that_write_are_refused_and_nothing_changes(home, statement):
    path, run_id = home
    root = path / "warehouse"
    before = sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file())
    result = sql(statement.format(root=root, run=run_id))
    assert result.exit_code == 2 and "read-only" in result.output, result.output
    after = sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file())
    assert after == before
    assert Warehouse(root).query("SELECT run_id FROM runs").to_pylist() == [{"run_id": run_id}]


@pytest.mark.parametrize(
    "query",
    ["SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_text('/etc/hostname')"],
)
def test_files_outside_the_warehouse_are_out_of_reach(home, query):
    result = sql(query)
    assert result.exit_code == 2 and "disabled by configuration" in result.output, result.output


def test_configuration_cannot_be_unlocked_from_a_query(home):
    path, _ = home
    con = Warehouse(path / "warehouse").reader()
    with pytest.raises(duckdb.Error, match="configuration"):
        con.execute("SET enable_external_access = true")  # below check_read_only: the lock holds on its own
    with pytest.raises(duckdb.Error, match="disabled by configuration"):
        con.sql("SELECT * FROM read_csv('/etc/passwd')").fetchall()


@pytest.mark.parametrize(
    "damage",
    [
        "DROP VIEW cat.leaderboard",
        "CREATE OR REPLACE VIEW cat.runs AS SELECT 1 AS run_id",
        "DROP MACRO TABLE cat.win_tie_loss",
        "DROP TABLE cat.catalog_info",
        "CREATE OR REPLACE TABLE cat.catalog_info AS SELECT 4 AS version, 'x' AS root",  # an older zsr's
    ],
)
def test_a_catalog_altered_by_a_notebook_is_rebuilt_on_the_next_write(home, tmp_store, fake, damage):
    path, run_id = home
    root = path / "warehouse"
    writer = Warehouse(root)  # a writer opened before the damage (a long flow) repairs it when it writes
    with duckdb.connect() as notebook:  # what an analyst might do by hand
        notebook.execute(f"ATTACH '{root / 'catalog.duckdb'}' AS cat")
        notebook.execute(damage)
    with duckdb.connect(str(root / "catalog.duckdb"), read_only=True) as con:
        broken = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    (again,) = evaluate_methods(Searcher(tmp_store, "c", lambda: fake), make_testset(), ["dense"], writer)
    with duckdb.connect(str(root / "catalog.duckdb"), read_only=True) as con:
        runs = {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
        board = con.execute("SELECT count(DISTINCT run_id) FROM leaderboard").fetchone()
        wtl = con.execute("SELECT count(*) FROM win_tie_loss(?, ?)", [run_id, again.run_id]).fetchone()
        healed = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    assert runs == {run_id, again.run_id} and board == (2,) and wtl is not None and wtl[0] > 0
    assert len(healed) >= len(broken)
