"""A corpus's documents: the ``<corpus>__documents`` rows, their BM25 index, and the expanded BM25 index.

Documents do not depend on the vector space: every space of a corpus shares them (its views do not).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import lancedb
import pyarrow as pa
from lancedb.index import FTS

from storage.lance import Lance, batches, sql_list
from storage.metadata import Fields, add_columns, column, conform, drop_columns, stored_fields

DOCUMENTS_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("text", pa.string()),
        pa.field("lexical", pa.string()),  # what BM25 indexes: title + text (+ expansions, later)
        pa.field("metadata", pa.string()),  # canonical JSON; filterable keys also as meta__<key> columns
        pa.field("content_hash", pa.string()),
        pa.field("source", pa.string()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)
# The one analyser of every BM25 index, so a query is analysed as the text it is matched against.
BM25 = FTS(language="English", stem=True, remove_stop_words=True)


def documents_table(corpus: str) -> str:
    """Name of the documents table of ``corpus``."""
    return f"{corpus}__documents"


def expanded_table(corpus: str) -> str:
    """Name of the expanded lexical table of ``corpus`` (documents + their kept synthetic queries)."""
    return f"{corpus}__expanded"


class Documents:
    """Document rows by ``doc_id``, and the BM25 indexes over them."""

    def __init__(self, lance: Lance) -> None:
        self.lance = lance

    def table(self, corpus: str) -> lancedb.table.Table:
        """The documents table of ``corpus``, created empty on first use."""
        return self.lance.open_or_create(documents_table(corpus), DOCUMENTS_SCHEMA)

    def exists(self, corpus: str) -> bool:
        """Whether the documents table of ``corpus`` exists (reading it through :meth:`table` creates it)."""
        return self.lance.exists(documents_table(corpus))

    def hashes(self, corpus: str) -> dict[str, str]:
        """``doc_id -> content_hash`` of every stored document (the re-index diff's left side)."""
        table = self.table(corpus).to_arrow().select(["doc_id", "content_hash"])
        return dict(zip(table["doc_id"].to_pylist(), table["content_hash"].to_pylist(), strict=True))

    def metadata_fields(self, corpus: str) -> Fields:
        """The filterable metadata keys of ``corpus`` and their types (see :mod:`storage.metadata`)."""
        return stored_fields(self.table(corpus).schema)

    def add_metadata_columns(self, corpus: str, fields: Fields) -> bool:
        """Add the columns of new metadata keys, null for the stored documents (one commit, if any)."""
        return add_columns(self.table(corpus), fields)

    def unused_metadata(self, corpus: str, also: Iterable[str] = ()) -> list[str]:
        """Metadata keys with a column here, or in ``also``, that no stored document has a value for."""
        table = self.table(corpus)
        keys = set(stored_fields(table.schema)) | set(also)
        return [
            key
            for key in sorted(keys)
            if column(key) not in table.schema.names or table.count_rows(f"`{column(key)}` IS NOT NULL") == 0
        ]

    def drop_metadata_columns(self, corpus: str, keys: Sequence[str]) -> bool:
        """Drop the columns of ``keys`` (one commit, if any): see :meth:`unused_metadata`."""
        return drop_columns(self.table(corpus), keys)

    def upsert(self, corpus: str, rows: pa.Table) -> None:
        """Insert or replace documents by ``doc_id`` (one commit, once :meth:`add_metadata_columns` ran)."""
        table = self.table(corpus)
        rows = conform(table, rows)
        table.merge_insert("doc_id").when_matched_update_all().when_not_matched_insert_all().execute(rows)

    def delete(self, corpus: str, doc_ids: Sequence[str]) -> None:
        """Delete document rows (their views go first, with :meth:`storage.views.Views.delete`)."""
        table = self.table(corpus)
        for part in batches(doc_ids):
            table.delete(f"doc_id IN ({sql_list(part)})")

    def fetch(self, corpus: str, doc_ids: Sequence[str], columns: Sequence[str]) -> list[dict[str, Any]]:
        """Selected columns of the given documents (order not guaranteed)."""
        table, out = self.table(corpus), []
        for part in batches(doc_ids):
            out += (
                table.search()
                .where(f"doc_id IN ({sql_list(part)})")
                .select(list(columns))
                .limit(None)
                .to_list()
            )
        return out

    def rebuild_fts(self, corpus: str) -> None:
        """(Re)build the BM25 index over ``lexical``.

        Rebuilt rather than optimised incrementally, so the index (and every BM25 score) is the same as a
        fresh ingest of the same content would give.
        """
        self.table(corpus).create_index("lexical", config=BM25, replace=True)

    def fts_built(self, corpus: str) -> bool:
        """Whether a BM25 index was ever built (a first ingest builds it last)."""
        return any(index.index_type == "FTS" for index in self.table(corpus).list_indices())

    def has_fts(self, corpus: str) -> bool:
        """Whether the BM25 index exists and its statistics describe the table as it is now.

        "No unindexed rows" is not enough: rows deleted after the build stay in the index's statistics
        (document count, lengths, document frequencies) while Lance reports nothing unindexed. So the index's
        document count must also equal the table's rows; a run killed between deleting rows and rebuilding
        fails this, and the next ingest rebuilds.
        """
        table = self.table(corpus)
        index = next((i for i in table.list_indices() if i.index_type == "FTS"), None)
        if index is None:
            return False
        stats = table.to_lance().stats.index_stats(index.name)
        documents = sum(segment["num_docs"] for segment in stats["indices"])
        return stats["num_unindexed_rows"] == 0 and documents == table.count_rows()

    def write_expansion(self, corpus: str, rows: pa.Table) -> None:
        """Replace the expanded lexical index: title + text + kept synthetic queries, BM25-indexed.

        A table of its own, rebuilt whole (one commit, then one index build): cheap next to generation, and
        the plain ``bm25`` index stays exactly as ingested.
        """
        table = self.lance.db.create_table(expanded_table(corpus), rows, mode="overwrite")
        table.create_index("lexical", config=BM25, replace=True)
