"""Exact search from memory (storage.matrix): equal to LanceDB's flat search, and never stale."""

from __future__ import annotations

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from storage.lance import Lance, vectors_to_arrow
from storage.matrix import Matrices, load

DIM = 8


def rows(start: int, n: int, seed: int) -> pa.Table:
    vectors = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return pa.table(
        {
            "view_id": [f"v{i}" for i in range(start, start + n)],
            "doc_id": [f"d{i // 2}" for i in range(start, start + n)],
            "kind": ["chunk" if i % 3 else "title" for i in range(start, start + n)],
            "vector": vectors_to_arrow(vectors),
        }
    )


@pytest.fixture
def lance_db(tmp_path) -> Lance:
    db = Lance(str(tmp_path / "db"))
    db.db.create_table("views", rows(0, 60, seed=1))
    return db


def test_matrix_ranks_as_lance_flat_search(lance_db: Lance) -> None:
    queries = np.random.default_rng(7).normal(size=(3, DIM)).astype(np.float32)
    matrix = Matrices(lance_db).get("views")
    assert matrix is not None
    got = matrix.top(queries, 10, matrix.kind_mask(["chunk"]))
    table = lance_db.db.open_table("views")
    for q, hits in zip(queries, got, strict=True):
        found = (
            table.search(q)
            .distance_type("cosine")
            .where("kind IN ('chunk')", prefilter=True)
            .select(["doc_id", "_distance"])
            .limit(10)
            .to_list()
        )
        assert [d for d, _ in hits] == [r["doc_id"] for r in found]
        assert np.allclose([s for _, s in hits], [1 - r["_distance"] for r in found], atol=1e-5)


def test_a_commit_by_another_connection_reloads_the_matrix(lance_db: Lance) -> None:
    matrices = Matrices(lance_db)
    before = matrices.get("views")
    assert before is not None and len(before.doc_ids) == 60
    assert matrices.get("views") is before  # unchanged table: the held matrix, not a reload
    other = lancedb.connect(lance_db.uri).open_table("views")
    other.add(rows(60, 5, seed=2))
    after = matrices.get("views")
    assert after is not None and len(after.doc_ids) == 65
    other.delete("view_id = 'v0'")
    assert "v0" not in matrices.get("views").view_ids  # type: ignore[union-attr]


def test_a_table_with_a_vector_index_is_not_held(lance_db: Lance) -> None:
    table = lance_db.db.open_table("views")
    table.create_index("vector", config=lancedb.index.IvfFlat(distance_type="cosine", num_partitions=2))
    assert Matrices(lance_db).get("views") is None


def test_a_dropped_table_is_not_served_from_memory(lance_db: Lance) -> None:
    matrices = Matrices(lance_db)
    assert matrices.get("views") is not None
    lance_db.drop("views")
    assert matrices.get("views") is None
    lance_db.db.create_table("views", rows(100, 4, seed=3))
    matrices.forget("views")
    recreated = matrices.get("views")
    assert recreated is not None and sorted(recreated.view_ids) == ["v100", "v101", "v102", "v103"]


def test_zero_vectors_and_short_tables(tmp_path) -> None:
    matrix = load(lancedb.connect(str(tmp_path)).create_table("t", rows(0, 3, seed=4)).to_lance())
    hits = matrix.top(np.zeros((1, DIM), np.float32), 10)
    assert len(hits[0]) == 3 and all(s == 0 for _, s in hits[0])
