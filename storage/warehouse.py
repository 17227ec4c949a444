"""The results warehouse: immutable Parquet files per run, and a DuckDB catalog that holds only views.

Layout under the warehouse root::

    runs/<run_id>.parquet            one row: provenance, parameters, timings
    metrics/<run_id>.parquet         aggregate value per measure
    query_metrics/<run_id>.parquet   value per query and measure
    queries/<run_id>.parquet         per-query cost: latency, LLM and judge calls, tokens, fallback
    rankings/<run_id>.parquet        the run itself, as TREC rows (query, doc, rank, score)
    llm_calls/<batch>.parquet        one row per LLM call (any purpose), appended in batches
    judgements/<batch>.parquet       one row per judged (query, document) pair of a synthetic test set
    agreements/<batch>.parquet       one row per comparison of method rankings on two test sets
    <folder>/_pack-<gen>.parquet     many of the files above merged by compaction (:mod:`storage.packs`)
    catalog.duckdb                   views over the files above, and comparison macros

Writers never open ``catalog.duckdb``: they only add Parquet files, each written to a temporary name and
renamed into place, with the ``runs`` row last. Every view joins on ``runs``, so a run becomes visible at
once when its ``runs`` file lands, and an evaluation killed midway leaves nothing visible. A notebook can
therefore hold the catalog open (even read-write) while flows keep writing, and sees new runs on its next
query, because the views read the folders anew each time. Compaction merges files into packs without a
reader ever seeing a row twice or a run half: :mod:`storage.packs` says how.

People's SQL (``zsr sql``) runs on :meth:`Warehouse.reader`: read statements only, files readable only under
the warehouse root, configuration locked, so no query can write, delete or read elsewhere. A notebook that
alters the catalog file itself (``ATTACH`` it read-write and drop or replace a view) breaks it only until
the next zsr write, which checks every view and macro against its definition and rebuilds the file.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, get_args, get_origin, get_type_hints

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from storage import packs
from storage.ids import content_hash

log = logging.getLogger(__name__)

CATALOG = "catalog.duckdb"
# Bump when the view definitions change: an out-of-date catalog is rebuilt (atomically) on next open.
CATALOG_VERSION = 6
# Written in an older storage format so the standalone `duckdb` CLI (PyPI duckdb-cli, 1.5) can open it too.
STORAGE_COMPATIBILITY = "v1.2.0"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a file name, never a path or `_schema`
_STALE_SECONDS = 3600  # temporary files older than this belong to a writer that died

Int32 = Annotated[int, pa.int32()]  # a column stored as 32-bit integers (int: 64-bit)
_ARROW: dict[type, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    datetime: pa.timestamp("us", tz="UTC"),
}


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs``: a published run's provenance, parameters and timings.

    The only definition of the run row: the ``runs`` Parquet schema is derived from these fields (names,
    order and Arrow types, which analysts' SQL and older run files rely on), and every row is written from
    a record.
    """

    run_id: str
    eval_id: str  # shared by the runs of one evaluation
    created_at: datetime  # UTC
    corpus: str
    testset: str
    testset_hash: str
    method: str  # as asked for, with its parameters: "hybrid(fusion=score)"
    method_name: str
    params: str  # JSON of every parameter, defaults included; a nested method as {"method", "params"}
    depth: Int32
    embedding_model: str
    vector_space: str | None  # key of the vector space searched (storage.vector_space); null before format 2
    llm_model: str | None  # what answered (LLMs and judges); null when nothing did
    git_sha: str | None
    packages: str  # JSON {package: version}
    documents_version: int
    views_version: int
    n_queries: Int32
    retrieval_seconds: float
    eval_seconds: float  # scoring, not the write
    fallback_share: float  # share of queries whose method fell back; null in older runs
    llm_errors: Int32  # LLM answers that failed or could not be used, all queries; null in older runs

    def table(self) -> pa.Table:
        """The record as the one-row ``runs`` table it is published as."""
        row = {f.name: getattr(self, f.name) for f in fields(RunRecord)}
        return pa.Table.from_pylist([row], SCHEMAS["runs"])


def arrow_schema(record: type) -> pa.Schema:
    """The Arrow schema of a dataclass: its fields in order, typed by :data:`_ARROW` or an ``Annotated`` type.

    ``X | None`` maps as ``X`` (every Arrow field is nullable).
    """
    hints = get_type_hints(record, include_extras=True)
    columns = []
    for f in fields(record):
        hint = hints[f.name]
        if get_origin(hint) is UnionType:
            (hint,) = (arg for arg in get_args(hint) if arg is not NoneType)
        arrow = get_args(hint)[1] if get_origin(hint) is Annotated else _ARROW[hint]
        columns.append((f.name, arrow))
    return pa.schema(columns)


SCHEMAS: dict[str, pa.Schema] = {
    "runs": arrow_schema(RunRecord),
    "metrics": pa.schema([("run_id", pa.string()), ("measure", pa.string()), ("value", pa.float64())]),
    "query_metrics": pa.schema(
        [
            ("run_id", pa.string()),
            ("query_id", pa.string()),
            ("measure", pa.string()),
            ("value", pa.float64()),
        ],
    ),
    "queries": pa.schema(
        [
            ("run_id", pa.string()),
            ("query_id", pa.string()),
            ("latency_ms", pa.float64()),
            ("llm_calls", pa.int32()),  # calls made for the query (cache hits included)
            ("tokens_in", pa.int64()),
            ("tokens_out", pa.int64()),
            ("cache_hits", pa.int32()),
            ("llm_errors", pa.int32()),  # LLM answers that failed or could not be used
            ("judge_calls", pa.int32()),  # judgements asked for (each vote one); null in older runs
            ("fallback", pa.string()),  # "<what ran instead>: <why>"; null when the method ran as designed
        ]
    ),
    "rankings": pa.schema(
        [
            ("run_id", pa.string()),
            ("query_id", pa.string()),
            ("doc_id", pa.string()),
            ("rank", pa.int32()),
            ("score", pa.float64()),
        ]
    ),
    "llm_calls": pa.schema(
        [
            ("call_id", pa.string()),
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("purpose", pa.string()),
            ("model", pa.string()),
            ("answered_by", pa.string()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("latency_ms", pa.float64()),
            ("retries", pa.int32()),
            ("cache_hit", pa.bool_()),
            ("error", pa.string()),
            ("context", pa.string()),
        ]
    ),
    "judgements": pa.schema(
        [
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("corpus", pa.string()),
            ("testset", pa.string()),
            ("query_id", pa.string()),
            ("query_text", pa.string()),
            ("source_doc", pa.string()),  # the document the query was written from
            ("generator", pa.string()),
            ("prompt_version", pa.string()),
            ("doc_id", pa.string()),
            ("judge", pa.string()),
            ("grade", pa.int32()),  # null: the judgement failed (see error)
            ("probability", pa.float64()),
            ("raw", pa.string()),
            ("error", pa.string()),
        ]
    ),
    "agreements": pa.schema(
        [
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("corpus", pa.string()),
            ("human_testset", pa.string()),
            ("synthetic_testset", pa.string()),
            ("measure", pa.string()),
            ("methods", pa.string()),  # JSON list, in the order given
            ("human_scores", pa.string()),  # JSON {method: value}
            ("synthetic_scores", pa.string()),
            ("kendall_tau", pa.float64()),
            ("p_value", pa.float64()),
            ("top1_agree", pa.bool_()),
            ("run_ids", pa.string()),  # JSON {"human": {method: run_id}, "synthetic": {...}}
        ]
    ),
}
# Appended as events happen, visible at once (not tied to a run).
LOG_TABLES = ["llm_calls", "judgements", "agreements"]
DATA_TABLES = [t for t in SCHEMAS if t != "runs" and t not in LOG_TABLES]

_VIEWS = """
CREATE OR REPLACE VIEW runs AS {runs};
{data_views}
CREATE OR REPLACE VIEW llm_calls AS {llm_calls};
CREATE OR REPLACE VIEW judgements AS {judgements};
CREATE OR REPLACE VIEW agreements AS {agreements};
CREATE OR REPLACE VIEW leaderboard AS
    WITH ranked AS (
        SELECT r.*, row_number() OVER (
            PARTITION BY corpus, testset, method ORDER BY created_at DESC, run_id DESC) AS recency
        FROM runs r)
    SELECT r.corpus, r.testset, r.method, m.measure, m.value,
           rank() OVER (PARTITION BY r.corpus, r.testset, m.measure ORDER BY m.value DESC) AS place,
           r.run_id, r.created_at
    FROM ranked r JOIN metrics m USING (run_id)
    WHERE r.recency = 1;
CREATE OR REPLACE VIEW latest_runs AS
    SELECT * EXCLUDE (recency) FROM (
        SELECT *, row_number() OVER (
            PARTITION BY corpus, testset, method ORDER BY created_at DESC, run_id DESC) AS recency
        FROM runs)
    WHERE recency = 1;
CREATE OR REPLACE VIEW run_deltas AS
    SELECT r.corpus, r.testset, r.method, m.measure, r.run_id, r.created_at, m.value,
           lag(r.run_id) OVER w AS previous_run_id,
           lag(m.value) OVER w AS previous_value,
           m.value - lag(m.value) OVER w AS delta
    FROM runs r JOIN metrics m USING (run_id)
    WINDOW w AS (PARTITION BY r.corpus, r.testset, r.method, m.measure ORDER BY r.created_at, r.run_id);
CREATE OR REPLACE MACRO query_deltas(run_a, run_b) AS TABLE
    SELECT a.measure, a.query_id, a.value AS value_a, b.value AS value_b, b.value - a.value AS delta
    FROM query_metrics a JOIN query_metrics b ON a.query_id = b.query_id AND a.measure = b.measure
    WHERE a.run_id = run_a AND b.run_id = run_b;
CREATE OR REPLACE MACRO win_tie_loss(run_a, run_b) AS TABLE
    SELECT measure,
           count(*) FILTER (WHERE delta > 1e-9) AS wins,
           count(*) FILTER (WHERE abs(delta) <= 1e-9) AS ties,
           count(*) FILTER (WHERE delta < -1e-9) AS losses
    FROM query_deltas(run_a, run_b) GROUP BY measure ORDER BY measure;
CREATE OR REPLACE TABLE catalog_info AS SELECT {version} AS version, '{root}' AS root, '' AS fingerprint;
"""
_DATA_VIEW = """CREATE OR REPLACE VIEW {table} AS
    SELECT t.* FROM ({rows}) t SEMI JOIN runs USING (run_id);
"""


class Warehouse:
    """Append-only run storage plus the catalog of views that analysts query."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.catalog_path = self.root / CATALOG
        self._tmp = self.root / "_tmp"
        for table, schema in SCHEMAS.items():
            folder = self.root / table
            folder.mkdir(parents=True, exist_ok=True)
            # A zero-row file keeps every glob non-empty, so views work before the first run; it carries
            # the columns of packs, so the views bind before the first compaction (storage.packs).
            empty, full = folder / "_schema.parquet", packs.hidden(schema, table in LOG_TABLES)
            if not empty.exists() or pq.read_schema(empty).names != full.names:
                self._write_atomic(full.empty_table(), empty)
        self._clean_stale()
        self.ensure_catalog()

    # -- writing -----------------------------------------------------------------------------------------
    def write_run(self, run: RunRecord, data: dict[str, pa.Table]) -> None:
        """Publish one run: its data files first, its ``runs`` row last (the moment it becomes visible)."""
        run_id = run.run_id
        for table, rows in data.items():
            self._write_atomic(rows.cast(SCHEMAS[table]), self.root / table / f"{run_id}.parquet")
        self._write_atomic(run.table(), self.root / "runs" / f"{run_id}.parquet")
        log.info("published run %s to %s", run_id, self.root)
        self.ensure_catalog()  # a catalog someone altered since this writer opened is repaired now

    def append(self, table: str, rows: pa.Table) -> None:
        """Add rows to a log table (one of ``LOG_TABLES``) as one new file, visible at once."""
        if rows.num_rows:
            name = f"{time.time_ns()}-{os.getpid()}.parquet"  # sortable by time, unique per writer
            self._write_atomic(rows.cast(SCHEMAS[table]), self.root / table / name)

    def run_files(self, run_id: str) -> list[Path]:
        """Every file of ``run_id``, ``runs`` first, in the order :meth:`delete_run` removes them."""
        if not _RUN_ID.match(run_id):
            raise ValueError(f"{run_id!r} is not a run id (runs are listed by `zsr runs`)")
        paths = (self.root / table / f"{run_id}.parquet" for table in ["runs", *DATA_TABLES])
        return [p for p in paths if p.exists()]

    def delete_run(self, run_id: str) -> list[Path]:
        """Delete a run's files and its rows in packs, ``runs`` first; returns the files deleted or rewritten.

        Writers publish the ``runs`` file last and every view joins on ``runs``, so deleting it first takes
        the run out of every view at once; a delete killed after that leaves only unpublished data files,
        which a re-run of the delete (or :meth:`_clean_stale`, after an hour) removes. Log tables
        (``llm_calls``, ``judgements``, ``agreements``) are history of events, not of the run, and stay.
        """
        small = {p.parent.name: p for p in self.run_files(run_id)}
        deleted = []
        with packs.pack_lock(self.root):
            for table in ["runs", *DATA_TABLES]:
                if table in small:
                    small[table].unlink(missing_ok=True)
                    deleted.append(small[table])
                deleted += packs.remove_from_packs(self.root / table, self._tmp, SCHEMAS[table], run_id)
        return deleted

    def compact(self, apply: bool) -> list[packs.FolderCompaction]:
        """Merge each folder's small files into a pack (only with ``apply``; see :mod:`storage.packs`).

        Only published runs are packed: a run being written is left to its writer.
        """
        with packs.pack_lock(self.root):
            runs = packs.published(self.root / "runs")
            return [
                packs.compact_folder(
                    self.root / table,
                    self._tmp,
                    schema,
                    log_table=table in LOG_TABLES,
                    runs=None if table in LOG_TABLES else runs,
                    apply=apply,
                )
                for table, schema in SCHEMAS.items()
            ]

    def _write_atomic(self, rows: pa.Table, target: Path) -> None:
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._tmp, suffix=".parquet")
        os.close(fd)
        tmp = Path(name)
        pq.write_table(rows, tmp)
        with tmp.open("rb") as written:  # durable before it becomes visible
            os.fsync(written.fileno())
        tmp.replace(target)

    def _clean_stale(self) -> None:
        """Remove what writers that died left behind: temporary files, and data files of unpublished runs."""
        cutoff = time.time() - _STALE_SECONDS
        published = packs.published(self.root / "runs")
        leftovers = [p for p in self._tmp.glob("*") if p.suffix != ".lock"] if self._tmp.exists() else []
        for table in DATA_TABLES:
            leftovers += [p for p in packs.small_files(self.root / table) if p.stem not in published]
        for path in leftovers:
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)

    # -- reading -----------------------------------------------------------------------------------------
    def ensure_catalog(self) -> None:
        """Create the catalog, or rebuild it when its views are out of date or the folder moved.

        It is built under a temporary name and renamed into place: a session holding the old catalog
        keeps its (still valid) file, and nobody ever waits on a DuckDB lock.
        """
        if self.catalog_path.exists():
            row: tuple[object, ...] | None = None
            current: tuple[object, ...] = ()
            try:
                with duckdb.connect(str(self.catalog_path), read_only=True) as con:
                    row = con.execute("SELECT version, root, fingerprint FROM catalog_info").fetchone()
                    current = (CATALOG_VERSION, str(self.root), _fingerprint(con))
            except (duckdb.CatalogException, duckdb.BinderException):  # catalog_info dropped, or an old one
                pass
            except duckdb.Error as error:
                # Someone holds it open read-write (a notebook): it was current when they opened it.
                log.info("catalog %s not checked (%s)", self.catalog_path, error)
                return
            if row == current:
                return
            log.warning("catalog %s is out of date or was altered; rebuilding its views", self.catalog_path)
        self._tmp.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp / f"catalog-{os.getpid()}-{time.time_ns()}.duckdb"
        with duckdb.connect(str(tmp), config={"storage_compatibility_version": STORAGE_COMPATIBILITY}) as con:
            con.execute(self._script())
        # The fingerprint is read back from the file as it will be read later (DuckDB prints stored view
        # definitions differently from fresh ones), so any view or macro altered afterwards shows.
        with duckdb.connect(str(tmp)) as con:
            con.execute("UPDATE catalog_info SET fingerprint = ?", [_fingerprint(con)])
        tmp.replace(self.catalog_path)

    def _script(self) -> str:
        root = str(self.root).replace("'", "''")
        rows = {t: packs.view_source(root, t, t in LOG_TABLES) for t in SCHEMAS}
        data_views = "".join(_DATA_VIEW.format(table=t, rows=rows[t]) for t in DATA_TABLES)
        logs = {t: rows[t] for t in LOG_TABLES}
        return _VIEWS.format(
            root=root, runs=rows["runs"], data_views=data_views, version=CATALOG_VERSION, **logs
        )

    def reader(self) -> duckdb.DuckDBPyConnection:
        """Like :meth:`connect`, for people's queries: only the warehouse's files, configuration locked.

        Pass each statement through :meth:`check_read_only` before running it.
        """
        con = self.connect()
        con.execute("SET allowed_directories = [?]", [f"{self.root}{os.sep}"])
        con.execute("SET enable_external_access = false")  # no other files, no extension installs
        con.execute("SET lock_configuration = true")  # and no statement can turn either back
        return con

    @staticmethod
    def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
        """Refuse ``sql`` unless every statement in it is a query (``SELECT``, ``DESCRIBE``, ``SHOW``, ...).

        ``EXPLAIN`` is refused too: ``EXPLAIN ANALYZE`` runs the statement it explains, ``COPY`` included.
        """
        for statement in con.extract_statements(sql):
            if statement.type != duckdb.StatementType.SELECT:
                kind = statement.type.name
                raise ValueError(
                    f"zsr sql runs read-only queries; a {kind} statement is refused (the warehouse's files "
                    "are written only by zsr). To take results out, use `zsr export` or "
                    '`zsr sql --json "SELECT ..." > file.json`'
                )

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with the catalog's views, so zsr itself never contends for the file's lock."""
        con = duckdb.connect()
        con.execute(self._script())
        return con

    def query(self, sql: str, params: list[object] | None = None) -> pa.Table:
        """Run one SQL statement against the catalog's views and return the result as Arrow."""
        with self.connect() as con:
            return con.sql(sql, params=params).to_arrow_table()


def _fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """A hash of every view and macro definition in the connected catalog."""
    views = con.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall()
    macros = con.execute(
        "SELECT function_name, macro_definition FROM duckdb_functions() "
        "WHERE function_type = 'table_macro' AND NOT internal"
    ).fetchall()
    return content_hash(*(f"{name}\t{sql}" for name, sql in sorted(views + macros)))
