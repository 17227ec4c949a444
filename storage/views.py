"""A corpus's views in one vector space: chunks, titles and synthetic queries with their vectors.

Each (corpus, space) pair has a table of its own, ``<corpus>__views__<space key>``, whose schema metadata
records the space in full, so the tables of several spaces can sit side by side and each says what it holds.
The rules that keep a document and its views one unit of commit are in :mod:`storage.corpus_store`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Literal

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import Bitmap

from storage.ann import choose_index
from storage.lance import Lance, arrow_to_vectors, batches, fold, sql_list
from storage.metadata import Fields, add_columns, conform, drop_columns, stored_fields
from storage.vector_space import VectorSpace, with_space

log = logging.getLogger(__name__)


def views_schema(dim: int) -> pa.Schema:
    """Schema of a views table; ``text`` is exactly what was embedded (less the space's prefix).

    Views also carry their document's ``meta__<key>`` columns (:mod:`storage.metadata`), added by writers.
    """
    return pa.schema(
        [
            pa.field("view_id", pa.string(), nullable=False),
            pa.field("doc_id", pa.string()),
            pa.field("kind", pa.string()),
            pa.field("ordinal", pa.int32()),
            pa.field("text", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
            pa.field("model", pa.string()),
            pa.field("content_hash", pa.string()),
            # content hash of the document version the view was built from (see storage.corpus_store)
            pa.field("doc_hash", pa.string()),
        ]
    )


def views_table(corpus: str, space: VectorSpace) -> str:
    """Name of the views table of ``corpus`` in ``space``."""
    return views_table_of_key(corpus, space.key)


def views_table_of_key(corpus: str, key: str) -> str:
    """Name of the views table of ``corpus`` in the space of ``key`` (as runs record it)."""
    return f"{corpus}__views__{key}"


_VIEWS_TABLE = re.compile(r"^(.+)__views__[0-9a-f]{16}$")


def corpus_of_views_table(table: str) -> str | None:
    """The corpus a views table (of any space) belongs to; ``None`` for any other table."""
    match = _VIEWS_TABLE.match(table)
    return match.group(1) if match else None


class Views:
    """Views by ``view_id``, one table per (corpus, vector space), and the ANN index over their vectors."""

    def __init__(self, lance: Lance) -> None:
        self.lance = lance

    def exists(self, corpus: str, space: VectorSpace) -> bool:
        """Whether ``corpus`` has a views table in ``space``."""
        return self.lance.exists(views_table(corpus, space))

    def table(self, corpus: str, space: VectorSpace) -> lancedb.table.Table:
        """The views table of ``corpus`` in ``space``.

        Raises:
            LookupError: the corpus has no views in that space.
        """
        name = views_table(corpus, space)
        if not self.lance.exists(name):
            raise LookupError(
                f"corpus {corpus!r} has no views in vector space {space.key} ({name} is missing)"
            )
        return self.lance.db.open_table(name)

    def metadata_fields(self, corpus: str, space: VectorSpace) -> Fields:
        """The metadata columns of the views of ``corpus`` in ``space`` (none where it has no views)."""
        return stored_fields(self.table(corpus, space).schema) if self.exists(corpus, space) else {}

    def add_metadata_columns(self, corpus: str, space: VectorSpace, fields: Fields) -> bool:
        """Add the columns of new metadata keys to an existing views table (one commit, if any).

        A table not created yet gets them with its first rows.
        """
        return self.exists(corpus, space) and add_columns(self.table(corpus, space), fields)

    def drop_metadata_columns(self, corpus: str, space: VectorSpace, keys: Sequence[str]) -> bool:
        """Drop the columns of metadata ``keys`` no document has any more (one commit, if any)."""
        return self.exists(corpus, space) and drop_columns(self.table(corpus, space), keys)

    def _create(self, corpus: str, space: VectorSpace, schema: pa.Schema) -> None:
        """Create the views table of ``corpus`` in ``space`` with ``schema``, unless it exists."""
        self.lance.open_or_create(views_table(corpus, space), with_space(schema, space))

    def _writable(self, corpus: str, space: VectorSpace) -> lancedb.table.Table:
        """The (existing) table to write to.

        A table written before views carried ``doc_hash`` gets the column first, null: every document then
        looks unverified and the next re-index rebuilds its views (from the embedding cache). Readers never
        need the column, so only writers add it.
        """
        table = self.table(corpus, space)
        if "doc_hash" not in table.schema.names:
            log.info("adding doc_hash to the views of %s; the next ingest re-checks every document", corpus)
            table.add_columns(pa.field("doc_hash", pa.string()))
        return table

    def put(self, corpus: str, space: VectorSpace, rows: pa.Table) -> None:
        """Insert views, or update them by ``view_id`` (one commit: a version's views land all at once).

        A view whose id is already stored is updated, as it may carry another ``doc_hash`` (a change of
        metadata alone keeps the chunk texts, hence the ids). Old views stay until :meth:`delete_stale`, so
        every document stays searchable throughout.
        """
        if rows.num_rows:
            self._create(corpus, space, rows.schema)
            table = self._writable(corpus, space)
            rows = conform(table, rows)
            table.merge_insert("view_id").when_matched_update_all().when_not_matched_insert_all().execute(
                rows
            )

    def delete_stale(self, corpus: str, space: VectorSpace, current: Mapping[str, str]) -> int:
        """Delete the views of ``current``'s documents that do not carry their current hash.

        Call it only once :meth:`put` has written the views that carry those hashes: a crash midway then
        leaves stale views beside them, which the next run's check still finds. Returns how many were
        deleted; nothing is written when none is stale.
        """
        if not self.exists(corpus, space):
            return 0
        table = self._writable(corpus, space)
        stale: list[str] = []
        for part in batches(list(current)):
            found = (
                table.search()
                .where(f"doc_id IN ({sql_list(part)})")
                .select(["view_id", "doc_id", "doc_hash"])
                .limit(None)
                .to_arrow()
            )
            stale += [
                view_id
                for view_id, doc_id, doc_hash in zip(
                    found["view_id"].to_pylist(),
                    found["doc_id"].to_pylist(),
                    found["doc_hash"].to_pylist(),
                    strict=True,
                )
                if doc_hash != current[doc_id]
            ]
        for part in batches(stale):
            table.delete(f"view_id IN ({sql_list(part)})")
        return len(stale)

    def delete(self, corpus: str, space: VectorSpace, doc_ids: Sequence[str]) -> None:
        """Delete every view of ``doc_ids``; each document's views go in one commit, never some of them."""
        if not self.exists(corpus, space):
            return
        table = self.table(corpus, space)
        for part in batches(doc_ids):
            table.delete(f"doc_id IN ({sql_list(part)})")

    def hashes(self, corpus: str, space: VectorSpace) -> dict[str, set[tuple[str, str | None]]]:
        """``doc_id -> {(kind, doc_hash)}`` over all views (None: a view written before views carried one).

        What re-indexing checks each document's views against (see :mod:`storage.corpus_store`).
        """
        if not self.exists(corpus, space):
            return {}
        table = self.table(corpus, space)
        columns = ["doc_id", "kind"] + (["doc_hash"] if "doc_hash" in table.schema.names else [])
        found = table.search().select(columns).limit(None).to_arrow()
        hashes = found["doc_hash"].to_pylist() if "doc_hash" in columns else [None] * found.num_rows
        out: dict[str, set[tuple[str, str | None]]] = {}
        for doc_id, kind, doc_hash in zip(
            found["doc_id"].to_pylist(), found["kind"].to_pylist(), hashes, strict=True
        ):
            out.setdefault(doc_id, set()).add((kind, doc_hash))
        return out

    def document_vectors(
        self, corpus: str, space: VectorSpace, doc_ids: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Each document's stored vector: the normalised mean of its chunk vectors (all documents if None)."""
        if not self.exists(corpus, space):
            return {}
        table = self.table(corpus, space)
        parts = [None] if doc_ids is None else list(batches(doc_ids))
        sums: dict[str, np.ndarray] = {}
        for part in parts:
            where = "kind = 'chunk'" + (f" AND doc_id IN ({sql_list(part)})" if part is not None else "")
            found = table.search().where(where).select(["doc_id", "vector"]).limit(None).to_arrow()
            vectors = arrow_to_vectors(found["vector"])
            for doc_id, vector in zip(found["doc_id"].to_pylist(), vectors, strict=True):
                sums[doc_id] = sums[doc_id] + vector if doc_id in sums else vector.copy()
        return {d: v / (np.linalg.norm(v) or 1.0) for d, v in sums.items()}

    def chunks(
        self, corpus: str, space: VectorSpace, doc_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, np.ndarray]]]:
        """Each document's chunks, ``(text, vector)`` in document order (search snippets read them)."""
        if not doc_ids or not self.exists(corpus, space):
            return {}
        table = self.table(corpus, space)
        out: dict[str, list[tuple[int, str, np.ndarray]]] = {}
        for part in batches(doc_ids):
            found = (
                table.search()
                .where(f"kind = 'chunk' AND doc_id IN ({sql_list(part)})")
                .select(["doc_id", "ordinal", "text", "vector"])
                .limit(None)
                .to_arrow()
            )
            vectors = arrow_to_vectors(found["vector"])
            columns = (found[c].to_pylist() for c in ("doc_id", "ordinal", "text"))
            for (doc_id, ordinal, text), vector in zip(zip(*columns, strict=True), vectors, strict=True):
                out.setdefault(doc_id, []).append((ordinal, text, vector))
        return {
            d: [(text, vector) for _, text, vector in sorted(rows, key=lambda r: r[0])]
            for d, rows in out.items()
        }

    def sync(self, corpus: str, space: VectorSpace, kinds: Sequence[str], rows: pa.Table) -> tuple[int, int]:
        """Make ``rows`` the complete set of views of ``kinds``: add the missing, delete the rest.

        Returns (added, deleted). Views are keyed by content-derived ids, so unchanged ones are untouched; a
        view whose id is stored with another ``doc_hash`` counts as added and is updated.
        """
        self._create(corpus, space, rows.schema)
        table = self._writable(corpus, space)
        rows = conform(table, rows)
        found = (
            table.search()
            .where(f"kind IN ({sql_list(kinds)})")
            .select(["view_id", "doc_hash"])
            .limit(None)
            .to_arrow()
        )
        existing = dict(zip(found["view_id"].to_pylist(), found["doc_hash"].to_pylist(), strict=True))
        wanted = rows["view_id"].to_pylist()
        new = rows.filter(
            pa.array(
                [
                    v not in existing or existing[v] != h
                    for v, h in zip(wanted, rows["doc_hash"].to_pylist(), strict=True)
                ],
                pa.bool_(),
            )
        )
        if new.num_rows:
            table.merge_insert("view_id").when_matched_update_all().when_not_matched_insert_all().execute(new)
        stale = sorted(set(existing) - set(wanted))
        for part in batches(stale):
            table.delete(f"view_id IN ({sql_list(part)})")
        return new.num_rows, len(stale)

    def vector_index_lags(self, corpus: str, space: VectorSpace, min_rows: int) -> bool:
        """Whether :meth:`ensure_vector_index` has work to do (a run killed before it leaves some)."""
        return self.exists(corpus, space) and _index_work(self.table(corpus, space), min_rows) is not None

    def ensure_vector_index(self, corpus: str, space: VectorSpace, min_rows: int) -> bool:
        """Build or refresh the ANN index once the table has ``min_rows`` views; exact search below that.

        The index is :func:`storage.ann.choose_index`'s for the table's size, rebuilt when growth moves the
        table to another index type.
        """
        if not self.exists(corpus, space):
            return False
        table = self.table(corpus, space)
        work = _index_work(table, min_rows)
        if work == "create":
            choice = choose_index(table.count_rows(), _dim(table))
            log.info("building an %s index over the views of %s (%s)", choice.index, corpus, choice.params)
            table.create_index("vector", config=choice.config(), replace=True)
            # Every dense search prefilters on kind: unindexed, that filter scans the whole column per query
            # (ad hoc, on bench/ann.py's tables: 711 ms a query at 1M rows, 16 ms unfiltered; at 100k, 94 ms
            # before this index and 8.8 ms after).
            table.create_index("kind", config=Bitmap(), replace=True)
        elif work == "optimize":
            # New rows are searched exactly until folded into the index.
            fold(table)
        return table.count_rows() >= min_rows

    def search_knobs(self, table: lancedb.table.Table) -> dict[str, int]:
        """The query knobs of :func:`storage.ann.choose_index` if ``table`` has a vector index, else none."""
        if not any(i.columns == ["vector"] for i in table.list_indices()):
            return {}
        return choose_index(table.count_rows(), _dim(table)).knobs


def _dim(table: lancedb.table.Table) -> int:
    return int(table.schema.field("vector").type.list_size)


def _index_work(table: lancedb.table.Table, min_rows: int) -> Literal["create", "optimize"] | None:
    rows = table.count_rows()
    if rows < min_rows:
        return None
    indices = table.list_indices()
    index = next((i for i in indices if i.columns == ["vector"]), None)
    if index is None or not any(i.columns == ["kind"] for i in indices):
        return "create"
    stats = table.index_stats(index.name)
    if stats is None:
        return None
    if stats.index_type != choose_index(rows, _dim(table)).index:
        return "create"
    return "optimize" if stats.num_unindexed_rows else None
