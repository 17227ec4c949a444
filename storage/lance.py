"""One LanceDB connection and the few table operations every part of the corpus store shares.

Lance commits are atomic, so each helper here writes at most one commit; the parts of the store build their
commit rules on that (see :mod:`storage.corpus_store`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime

import lance
import lancedb
import numpy as np
import pyarrow as pa

from storage.object_store import is_remote

# LanceDB's filter strings are SQL: long IN lists are split so each statement stays small.
IN_BATCH = 2_000
# Seconds between tries to open a table another writer is creating (3 s in all).
_CREATION_WAITS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


class Lance:
    """A LanceDB database at ``uri`` (a path or any LanceDB URI such as ``s3://...``)."""

    def __init__(self, uri: str, storage_options: Mapping[str, str] | None = None) -> None:
        """Connect to ``uri``; ``storage_options`` (endpoint, keys...) reach every table opened through it."""
        self.uri = uri
        self.storage_options = dict(storage_options or {})
        self.db = lancedb.connect(uri, storage_options=self.storage_options or None)

    @property
    def remote(self) -> bool:
        """Whether the database is on object storage (see :mod:`storage.object_store`)."""
        return is_remote(self.uri)

    def dataset(self, uri: str) -> lance.LanceDataset:
        """The Lance dataset at ``uri`` (a table's), latest version, opened with this database's options."""
        return lance.dataset(uri, storage_options=self.storage_options or None)

    def names(self) -> list[str]:
        """Every table name, over all pages of the listing."""
        names: list[str] = []
        token = None
        while True:
            page = self.db.list_tables(page_token=token)
            names.extend(page.tables)
            token = page.page_token
            if not token:
                return names

    def exists(self, name: str) -> bool:
        """Whether table ``name`` exists (stops at the first page that lists it)."""
        token = None
        while True:
            page = self.db.list_tables(page_token=token)
            if name in page.tables:
                return True
            token = page.page_token
            if not token:
                return False

    def open(self, name: str) -> lancedb.table.Table:
        """Table ``name``, waiting out its creation by another writer.

        A table being created is listed before its first version is committed (its files come first), so
        another machine's first ingest can find a shared table (the registry, an embedding cache) that
        cannot be opened yet; it can a moment later.
        """
        for wait in (*_CREATION_WAITS, None):
            try:
                return self.db.open_table(name)
            except ValueError as error:
                if wait is None or "was not found" not in str(error):
                    raise
                time.sleep(wait)
        raise AssertionError("unreachable")  # the last pass returns or raises

    def open_or_create(self, name: str, schema: pa.Schema) -> lancedb.table.Table:
        """Table ``name``, created empty with ``schema`` on first use.

        Two writers may both find it missing (two machines' first ingests into one store). LanceDB's own
        create would let the loser's commit, retried on the conflict, land as an overwrite of the winner's
        table at version 2 (losing what the winner wrote meanwhile); so the table is created by one commit of
        version 1 that is never retried, and the loser opens what the winner created.
        """
        if not self.exists(name):
            try:
                lance.LanceDataset.commit(
                    f"{self.uri.rstrip('/')}/{name}.lance",
                    lance.LanceOperation.Overwrite(schema, []),
                    max_retries=0,
                    enable_v2_manifest_paths=True,  # as LanceDB creates tables
                    storage_options=self.storage_options or None,
                )
            except (OSError, RuntimeError, ValueError) as error:
                try:
                    return self.open(name)
                except ValueError:
                    raise error from None  # no one else created it: the create itself failed
        return self.open(name)

    def version(self, name: str) -> int:
        """The table's current version; 0 where it does not exist."""
        return self.open(name).version if self.exists(name) else 0

    def drop(self, name: str) -> bool:
        """Drop table ``name``; whether it existed (a second drop is a no-op, so deletes can be re-run)."""
        if not self.exists(name):
            return False
        self.db.drop_table(name)
        return True

    def count(self, name: str) -> int:
        """Rows in the table; 0 where it does not exist."""
        return self.open(name).count_rows() if self.exists(name) else 0


def fold(table: lancedb.table.Table) -> None:
    """Compact ``table`` and fold new rows into its indexes: LanceDB's ``optimize()`` less its cleanup.

    ``optimize()`` also deletes every version older than 7 days, recorded runs' versions included, and
    fails outright once such a version is tagged; deleting versions is :mod:`storage.upkeep`'s job alone.
    """
    dataset = table.to_lance()
    dataset.optimize.compact_files()
    dataset.optimize.optimize_indices()
    table.checkout_latest()


def sql_list(values: Iterable[str]) -> str:
    """A SQL ``IN`` list of string literals (single quotes doubled, so ids with quotes are safe)."""
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def batches(values: Sequence[str]) -> Iterator[Sequence[str]]:
    """``values`` in slices of :data:`IN_BATCH`, one SQL ``IN`` list each."""
    for start in range(0, len(values), IN_BATCH):
        yield values[start : start + IN_BATCH]


def vectors_to_arrow(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """A (n, dim) float array as an Arrow fixed-size-list column."""
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


def arrow_to_vectors(column: pa.ChunkedArray) -> np.ndarray:
    """A fixed-size-list column back as a (n, dim) float32 array (the dimension is the column's)."""
    dim = column.type.list_size
    return column.combine_chunks().flatten().to_numpy().reshape(-1, dim).astype(np.float32, copy=False)


def now() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


def is_latest(dataset: lance.LanceDataset) -> bool:
    """Whether ``dataset`` is checked out at its table's latest version (a read of the version hint).

    ``False`` when the latest cannot be read (the table was dropped): the caller reopens, and opening says so.
    """
    try:
        return bool(dataset.latest_version == dataset.version)
    except (OSError, ValueError):
        return False
