"""A corpus's synthetic queries: every generated query with each filter's decision and score.

Queries are keyed by content-derived ids, so a rerun updates rather than duplicates, and they carry the hash
of the document version they were written from, so a changed document's old queries stop counting.
"""

from __future__ import annotations

from typing import Any

import lancedb
import pyarrow as pa

from storage.lance import Lance

SYNTHETIC_SCHEMA = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string()),
        pa.field("doc_hash", pa.string()),  # content hash of the document the query was written from
        pa.field("text", pa.string()),  # the parsed query ("" when nothing usable was parsed)
        pa.field("raw", pa.string()),  # the generator's output, kept as it came
        pa.field("style", pa.string()),
        pa.field("generator", pa.string()),
        pa.field("prompt_version", pa.string()),
        pa.field("sample", pa.int32()),
        pa.field("kept", pa.bool_()),
        pa.field("reason", pa.string()),  # why it was rejected, null when kept
        pa.field("n_words", pa.int32()),
        # share of the query's words in one run copied from the document
        pa.field("copy_score", pa.float32()),
        pa.field("duplicate_of", pa.string()),
        # rank of the source document for the query; null: not in top k
        pa.field("roundtrip_rank", pa.int32()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


def synthetic_table(corpus: str) -> str:
    """Name of the synthetic queries table of ``corpus``."""
    return f"{corpus}__synthetic_queries"


class SyntheticQueries:
    """Synthetic queries by ``query_id``, one table per corpus."""

    def __init__(self, lance: Lance) -> None:
        self.lance = lance

    def table(self, corpus: str) -> lancedb.table.Table:
        """The synthetic queries table of ``corpus``, created empty on first use."""
        return self.lance.open_or_create(synthetic_table(corpus), SYNTHETIC_SCHEMA)

    def rows(self, corpus: str) -> list[dict[str, Any]]:
        """Every stored query of ``corpus``, kept or not, as dicts."""
        return self.table(corpus).to_arrow().to_pylist()

    def upsert(self, corpus: str, rows: pa.Table) -> None:
        """Insert or update synthetic queries by ``query_id`` (one commit)."""
        if rows.num_rows:
            self.table(corpus).merge_insert(
                "query_id"
            ).when_matched_update_all().when_not_matched_insert_all().execute(rows.cast(SYNTHETIC_SCHEMA))
