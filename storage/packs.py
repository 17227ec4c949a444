"""Warehouse compaction: many small Parquet files merged into packs, with readers never seeing a row twice.

Every run adds one file to each of ``runs``, ``metrics``, ``query_metrics``, ``queries`` and ``rankings``,
and every batch of LLM calls, judgements or agreements one file to its folder, so DuckDB opens thousands of
small files per query after a few months. Compaction merges them into packs,
``<folder>/_pack-<generation>-<pid>.parquet`` (the ``_`` keeps them apart from run ids and batch names), and
deletes the files it merged.

The swap. A folder is read by one glob, and no file system swaps a set of files at once: between a pack
landing and the files it merged going, a reader lists both. So the views dedupe, by *unit*: a run (its
``run_id``) in run folders, a batch file (its name) in log folders. Each unit's rows come whole from one
file, and packs record where each row came from: ``_gen`` (the pack's generation, increasing) and, in log
folders, ``_unit`` (the name of the batch file the row was first written to). A view keeps, for each unit,
only the rows of the file with the highest generation that holds it (a small file has generation 0)::

    QUALIFY coalesce(_gen, 0) = max(coalesce(_gen, 0)) OVER (PARTITION BY <unit>)

Because the choice and the rows come from one listing, every instant is consistent: before the pack lands a
unit is read from its small file; while both exist, from the pack; after, from the pack alone. A pack holds
every row of each unit it holds (only published runs are packed, and their files are final), so a run is
never seen half, and its ``runs`` row gates every data view as before. Rows are copied unchanged (DuckDB
reads the sources as the views do and writes them back with the same types), so every view returns the same
rows before and after. ``_schema.parquet`` carries ``_gen`` (and ``_unit``) so the views bind before the
first pack exists.

Deleting a run from a pack (``zsr rm run``) writes the pack again without the run, under a new generation,
then deletes the old pack: the run stays whole until its last copy goes, and in the ``runs`` folder that
last step takes it out of every view at once. Compaction and deletes take the warehouse's pack lock, so a
delete never races a compaction that would copy the run back; writers of new runs need no lock (they only
add small files, and a run is packed only once published).

A query that listed a folder just before a compaction deleted a merged file fails to open it (DuckDB says
the file is missing) and can be re-run; it never returns wrong rows. Notebooks holding a catalog written
before packs existed (it lacks the dedupe) see duplicates after a compaction until zsr's next write
rebuilds it (see ``CATALOG_VERSION``).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

PREFIX = "_pack-"
GEN, UNIT = "_gen", "_unit"
TARGET_BYTES = 64 << 20  # packs at least this big are left as they are; smaller ones are merged again


def hidden(schema: pa.Schema, log_table: bool) -> pa.Schema:
    """``schema`` plus the columns packs carry (``_gen``; ``_unit`` in log tables)."""
    extra = [(GEN, pa.int64())] + ([(UNIT, pa.string())] if log_table else [])
    return pa.schema([*schema, *extra])


def view_source(root: str, table: str, log_table: bool) -> str:
    """SQL of a folder's rows, each unit once (see the module docstring); ``root`` already SQL-quoted."""
    # COLUMNS(lambda) rather than EXCLUDE of several: DuckDB prints such an EXCLUDE list in varying order,
    # which would change the catalog's fingerprint (storage.warehouse) from one read to the next.
    hidden_columns = f"'{GEN}', '{UNIT}', 'filename'" if log_table else f"'{GEN}'"
    glob = f"'{root}/{table}/*.parquet'"
    return f"SELECT COLUMNS(lambda c: c NOT IN ({hidden_columns})) FROM ({_deduped(glob, log_table)})"


def _unit(log_table: bool) -> str:
    return f"coalesce({UNIT}, parse_filename(filename, true))" if log_table else "run_id"


def _deduped(files: str, log_table: bool) -> str:
    """Rows of ``files`` (a DuckDB glob or list, SQL-quoted), each unit from its newest file only."""
    name = ", filename = true" if log_table else ""
    return (
        f"SELECT * FROM read_parquet({files}, union_by_name = true{name}) "
        f"QUALIFY coalesce({GEN}, 0) = max(coalesce({GEN}, 0)) OVER (PARTITION BY {_unit(log_table)})"
    )


@dataclass
class FolderCompaction:
    """What compaction found (dry run) or did in one warehouse folder."""

    table: str
    files: int  # Parquet files before (``_schema`` aside)
    merged: int  # files (would be) merged into one pack
    bytes: int  # on disk before
    bytes_after: int  # after (dry run: as before)


def packs(folder: Path) -> list[Path]:
    """The packs in ``folder``."""
    return sorted(folder.glob(f"{PREFIX}*.parquet"))


def small_files(folder: Path) -> list[Path]:
    """The files writers added to ``folder`` (runs' and batches'), not yet packed."""
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("_"))


def published(runs: Path) -> set[str]:
    """Every run id with a ``runs`` row, in a small file or a pack.

    Small files are listed before packs: compaction writes a pack before deleting what it merged, so a run
    missing from the first listing is in a pack by the second. A pack deleted between listing and reading
    (rewritten by a delete or a compaction) makes it list again.
    """
    while True:
        ids = {p.stem for p in small_files(runs)}
        try:
            for pack in packs(runs):
                ids.update(pq.read_table(pack, columns=["run_id"])["run_id"].to_pylist())
        except FileNotFoundError:
            continue
        return ids


@contextmanager
def pack_lock(root: Path) -> Iterator[None]:
    """Hold the warehouse's pack lock (compaction and deletes; writers of new runs never take it)."""
    (root / "_tmp").mkdir(parents=True, exist_ok=True)
    fd = os.open(root / "_tmp" / "packs.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def compact_folder(
    folder: Path, tmp: Path, schema: pa.Schema, *, log_table: bool, runs: set[str] | None, apply: bool
) -> FolderCompaction:
    """Merge ``folder``'s small files (of published ``runs`` only, in run folders) and small packs into one.

    Call it under :func:`pack_lock`. Nothing is written without ``apply``.
    """
    small = [p for p in small_files(folder) if runs is None or p.stem in runs]
    sources = small + [p for p in packs(folder) if p.stat().st_size < TARGET_BYTES]
    everything = small_files(folder) + packs(folder)
    size = sum(p.stat().st_size for p in everything)
    result = FolderCompaction(folder.name, len(everything), 0, size, size)
    if len(sources) < 2:
        return result
    result.merged = len(sources)
    if apply:
        _write_pack(folder, tmp, schema, sources, log_table=log_table)
        for path in sources:
            path.unlink(missing_ok=True)
        result.bytes_after = sum(p.stat().st_size for p in small_files(folder) + packs(folder))
    return result


def remove_from_packs(folder: Path, tmp: Path, schema: pa.Schema, run_id: str) -> list[Path]:
    """Take ``run_id``'s rows out of every pack of a run folder; returns the packs rewritten or deleted.

    Call it under :func:`pack_lock`. Each pack holding the run is written again without it, as a new pack,
    before the old one goes, so the other runs in it never leave a view.
    """
    touched = []
    for pack in packs(folder):
        ids = set(pq.read_table(pack, columns=["run_id"])["run_id"].to_pylist())
        if run_id not in ids:
            continue
        if ids != {run_id}:
            _write_pack(folder, tmp, schema, [pack], log_table=False, exclude=run_id)
        pack.unlink()
        touched.append(pack)
    return touched


def _write_pack(
    folder: Path,
    tmp: Path,
    schema: pa.Schema,
    sources: Sequence[Path],
    *,
    log_table: bool,
    exclude: str | None = None,
) -> Path:
    """One pack of each unit of ``sources`` once (less run ``exclude``): staged, made durable, renamed in.

    Columns go in ``schema``'s order; ``_schema.parquet`` is read along, so every column binds even when
    no source has it (older run files lack newer columns, which read as null, as in the views).
    """
    generation = time.time_ns()
    target = folder / f"{PREFIX}{generation:020d}-{os.getpid()}.parquet"
    staged = tmp / target.name
    files = "[" + ", ".join(_quote(str(p)) for p in [*sources, folder / "_schema.parquet"]) + "]"
    columns = ", ".join(f'"{name}"' for name in schema.names)
    unit = f", {_unit(True)} AS {UNIT}" if log_table else ""
    where = " WHERE run_id <> ?" if exclude is not None else ""
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT {columns}, {generation}::BIGINT AS {GEN}{unit} FROM ({_deduped(files, log_table)})"
            f"{where}) TO {_quote(str(staged))} (FORMAT parquet)",
            [exclude] if exclude is not None else None,
        )
    with staged.open("rb") as written:  # durable before it becomes visible
        os.fsync(written.fileno())
    staged.replace(target)
    return target


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
