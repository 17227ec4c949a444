"""The embedding cache: every vector ever computed, by vector space, role and text hash.

One table per (space, role), ``embedcache__<space key>__<role>``, shared by every corpus in that space: equal
text embeds equally in one space, and never across two, so no vector can leak into another space. Each table
records its space in its schema metadata, as views tables do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from storage.lance import Lance, arrow_to_vectors, batches, sql_list, vectors_to_arrow
from storage.vector_space import Role, VectorSpace, with_space


def cache_schema(dim: int) -> pa.Schema:
    """Schema of an embedding cache table: one vector per content hash."""
    return pa.schema(
        [
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def cache_table(space: VectorSpace, role: Role) -> str:
    """Name of the cache table of ``role`` texts in ``space``."""
    return f"embedcache__{space.key}__{role}"


class EmbeddingCache:
    """``content_hash -> vector`` per (vector space, role)."""

    def __init__(self, lance: Lance) -> None:
        self.lance = lance

    def get(self, space: VectorSpace, role: Role, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors already computed for any of ``hashes``."""
        name = cache_table(space, role)
        if not self.lance.exists(name):
            return {}
        table = self.lance.open(name)
        out: dict[str, np.ndarray] = {}
        for part in batches(hashes):
            found = (
                table.search()
                .where(f"content_hash IN ({sql_list(part)})")
                .select(["content_hash", "vector"])
                .limit(None)
                .to_arrow()
            )
            out.update(zip(found["content_hash"].to_pylist(), arrow_to_vectors(found["vector"]), strict=True))
        return out

    def put(self, space: VectorSpace, role: Role, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Persist freshly computed vectors (one commit per call, so finished batches survive a crash)."""
        schema = cache_schema(vectors.shape[1])
        rows = pa.Table.from_arrays([pa.array(hashes, pa.string()), vectors_to_arrow(vectors)], schema=schema)
        table = self.lance.open_or_create(cache_table(space, role), with_space(schema, space))
        table.merge_insert("content_hash").when_not_matched_insert_all().execute(rows)
