"""Quantized search (storage.quantized, storage.matrix): codes, candidates, rescoring, memory, staleness."""

from __future__ import annotations

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from storage.lance import Lance, vectors_to_arrow
from storage.matrix import Matrices, QuantizedMatrix, ViewMatrix, best, load, load_quantized
from storage.quantized import EXACT, BinaryCodes, Quantization, encode, pack_signs, prepare
from storage.views import views_table
from tasks.ingest import embed
from tasks.ingest.embed import check_truncation
from tests.fakes import fake_workspace

DIM = 384  # all-MiniLM-L6-v2's: 6 words of 64 bits
BINARY = Quantization("binary", rescore=4)
INT8 = Quantization("int8", rescore=4)


def table_rows(start: int, n: int, seed: int, dim: int = DIM) -> pa.Table:
    """``n`` views in clusters of 10 (as documents on a topic), so neighbours stand out from the rest."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(-(-n // 10), dim))
    vectors = (np.repeat(centres, 10, axis=0)[:n] + 0.7 * rng.normal(size=(n, dim))).astype(np.float32)
    return pa.table(
        {
            "view_id": [f"v{i}" for i in range(start, start + n)],
            "doc_id": [f"d{i}" for i in range(start, start + n)],
            "kind": ["chunk" if i % 4 else "title" for i in range(start, start + n)],
            "vector": vectors_to_arrow(vectors),
        }
    )


@pytest.fixture
def lance_db(tmp_path) -> Lance:
    db = Lance(str(tmp_path / "db"))
    db.db.create_table("views", table_rows(0, 300, seed=1))
    return db


def near(matrix: ViewMatrix, n: int, seed: int, noise: float = 0.3) -> np.ndarray:
    """Queries close to ``n`` of the matrix's rows, so each has a clear nearest neighbour."""
    rng = np.random.default_rng(seed)
    rows = matrix.vectors[rng.choice(len(matrix.vectors), n, replace=False)]
    return rows + noise * rng.normal(size=rows.shape).astype(np.float32) / np.sqrt(rows.shape[1])


def assert_same(got: list[list[tuple[str, float]]], expected: list[list[tuple[str, float]]]) -> None:
    """The same documents in the same order, with the same float cosines."""
    assert [[d for d, _ in hits] for hits in got] == [[d for d, _ in hits] for hits in expected]
    assert np.allclose([[s for _, s in h] for h in got], [[s for _, s in h] for h in expected], atol=1e-6)


def test_binary_codes_are_sign_bits_and_score_minus_hamming() -> None:
    vectors = np.array([[1, -1, 2, -3] * 17 + [1, 1], [-1] * 70, [1] * 70], np.float32)  # 70 dims: 2 words
    words = pack_signs(vectors)
    assert words.shape == (3, 2) and words.dtype == np.uint64
    assert np.bitwise_count(words).sum(axis=1).tolist() == [36, 0, 70]  # padding bits stay 0
    scores = BinaryCodes(words).scores(vectors)
    assert scores.tolist() == [[0, -36, -34], [-36, 0, -70], [-34, -70, 0]]
    assert best(scores, 2).tolist() == [[0, 2], [1, 0], [2, 0]]


def test_int8_codes_span_each_dimensions_range() -> None:
    vectors = prepare(np.random.default_rng(3).normal(size=(50, 16)).astype(np.float32), None)
    codes = encode("int8", lambda: [vectors[:20], vectors[20:]], 16)
    assert np.allclose(codes.step * 127, np.abs(vectors).max(axis=0))  # type: ignore[attr-defined]
    assert (np.abs(codes.codes).max(axis=0) == 127).all()  # type: ignore[attr-defined]
    error = np.abs(codes.scores(vectors) - vectors @ vectors.T)
    assert error.max() <= 0.5 * codes.step.sum()  # type: ignore[attr-defined]  # half a step a dimension


def test_rescoring_gives_the_exact_top_k_when_the_neighbours_are_candidates(lance_db: Lance) -> None:
    dataset = lance_db.db.open_table("views").to_lance()
    exact = load(dataset)
    queries = near(exact, 20, seed=5)
    mask = exact.kind_mask(["chunk"])
    expected = exact.top(queries, 5, mask)
    for quantization in (BINARY, INT8):
        matrix = load_quantized(dataset, quantization)
        got = matrix.top(queries, 5, mask)
        rows = np.flatnonzero(mask)
        candidates = rows[best(matrix.codes.scores(prepare(queries, None))[:, rows], 4 * 5)]
        found = 0
        for q, (hits, truth) in enumerate(zip(got, expected, strict=True)):
            true_rows = [int(d[1:]) for d, _ in truth]  # doc d<i> is row i
            if set(true_rows) <= set(candidates[q]):
                found += 1
                assert [d for d, _ in hits] == [d for d, _ in truth]
                assert np.allclose([s for _, s in hits], [s for _, s in truth], atol=1e-6)
        assert found >= 15, quantization  # the check above ran for most queries
    assert_same(load_quantized(dataset, Quantization("binary", rescore=1000)).top(queries, 5, mask), expected)


def test_only_the_codes_are_held(lance_db: Lance) -> None:
    matrices = Matrices(lance_db)
    binary, int8 = matrices.get("views", BINARY), matrices.get("views", INT8)
    assert isinstance(binary, QuantizedMatrix) and isinstance(int8, QuantizedMatrix)
    n = len(binary.doc_ids)
    assert binary.nbytes <= n * DIM // 8 + 64
    assert int8.nbytes <= n * DIM + 4 * DIM
    for matrix in (binary, int8):
        arrays = [
            v for v in [*vars(matrix).values(), *vars(matrix.codes).values()] if isinstance(v, np.ndarray)
        ]
        assert not [a for a in arrays if a.dtype.kind == "f" and len(a) == n]  # no float vectors, codes only
    assert not any(isinstance(h.matrix, ViewMatrix) for h in matrices._held.values())


def test_a_commit_reloads_the_codes_and_rescoring_reads_the_held_version(lance_db: Lance) -> None:
    matrices = Matrices(lance_db)
    before = matrices.get("views", BINARY)
    assert before is not None and matrices.get("views", BINARY) is before
    other = lancedb.connect(lance_db.uri).open_table("views")
    other.add(table_rows(300, 10, seed=2))
    other.delete("view_id IN ('v0', 'v7', 'v150')")  # later rows shift: positions must follow
    after = matrices.get("views", BINARY)
    assert isinstance(after, QuantizedMatrix) and after is not before and len(after.doc_ids) == 307
    exact = matrices.get("views")
    assert isinstance(exact, ViewMatrix) and exact.version == after.version
    queries = near(exact, 10, seed=6)
    all_rows = Quantization("binary", rescore=1000)
    assert_same(matrices.get("views", all_rows).top(queries, 5), exact.top(queries, 5))  # type: ignore[union-attr]
    matrices.forget("views")
    assert not matrices._held


def test_an_empty_table_has_no_hits(tmp_path) -> None:
    table = lancedb.connect(str(tmp_path)).create_table("t", table_rows(0, 3, seed=4))
    table.delete("true")
    matrix = load_quantized(table.to_lance(), BINARY)
    assert matrix.top(np.ones((2, DIM), np.float32), 10) == [[], []]


def test_truncation_searches_the_first_dims_and_scores_with_all(tmp_path) -> None:
    # Row 0 matches the query in its first 2 dims only, row 1 in all 4 but less in the first 2.
    vectors = np.array([[1, 0, 0, 0], [0.6, 0.8, 1, 0], [0, 1, 0, 0]], np.float32)
    data = pa.table(
        {
            "view_id": ["a", "b", "c"],
            "doc_id": ["a", "b", "c"],
            "kind": ["chunk"] * 3,
            "vector": vectors_to_arrow(vectors),
        }
    )
    dataset = lancedb.connect(str(tmp_path)).create_table("t", data).to_lance()
    query = np.array([[1, 0, 1, 0]], np.float32)
    assert [d for d, _ in load(dataset).top(query, 1)[0]] == ["b"]
    truncated = load_quantized(dataset, Quantization("none", rescore=1, dims=2))
    assert truncated.codes.nbytes == 3 * 2 * 4  # type: ignore[attr-defined]
    (hit,) = truncated.top(query, 1)[0]
    assert hit == ("a", pytest.approx(1 / np.sqrt(2)))  # picked by 2 dims, scored by all 4


def test_truncation_is_refused_for_a_model_not_trained_for_it() -> None:
    with pytest.raises(
        ValueError, match=r"'sentence-transformers/all-MiniLM-L6-v2'.*not trained with Matryoshka"
    ):
        check_truncation("sentence-transformers/all-MiniLM-L6-v2", 128)
    check_truncation("sentence-transformers/all-MiniLM-L6-v2", None)
    check_truncation("nomic-ai/nomic-embed-text-v1.5", 256)
    check_truncation("Snowflake/snowflake-arctic-embed-m-v1.5", 256)
    with pytest.raises(ValueError):
        check_truncation("Snowflake/snowflake-arctic-embed-m", 256)  # v1: not Matryoshka


@pytest.mark.parametrize("kind", ["binary", "int8"])
def test_a_workspace_search_with_quantization_on(tmp_path, monkeypatch, kind: str) -> None:
    monkeypatch.setenv("ZSR_QUANTIZATION", kind)
    monkeypatch.setenv("ZSR_RESCORE", "1000")  # every row a candidate: the ranking must be the exact one
    with fake_workspace(tmp_path, monkeypatch) as ws:
        searcher = ws.searcher("c")
        queries = {"q1": "w1 w2 w3", "q2": "w5 w8", "q3": "w11"}
        quantized = searcher.search_batch(queries, "dense", k=5)
        search = ws.store.search
        assert search.quantization == Quantization(kind, 1000)  # type: ignore[arg-type]
        name = views_table("c", searcher.info.space)
        assert isinstance(search.matrices.get(name, search.quantization), QuantizedMatrix)
        held, on_disk = ws.dense_memory("c")  # the fake's 32 dims: 1 word of 64 bits, or 32 bytes + steps
        assert held * 16 == on_disk if kind == "binary" else held * 4 == on_disk + 4 * 4 * 32
        search.quantization = EXACT
        exact = searcher.search_batch(queries, "dense", k=5)
        for qid, ranking in exact.items():  # the same ranking; scores to float32 summation order
            assert [d for d, _ in quantized[qid]] == [d for d, _ in ranking]
            assert [s for _, s in quantized[qid]] == pytest.approx([s for _, s in ranking], abs=1e-6)


def test_a_workspace_refuses_truncation_unless_the_model_is_declared(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ZSR_TRUNCATE_DIMS", "8")
    with fake_workspace(tmp_path, monkeypatch) as ws:
        with pytest.raises(ValueError, match="'fake-bow'"):
            ws.searcher("c")
        monkeypatch.setattr(embed, "MATRYOSHKA_MODELS", (*embed.MATRYOSHKA_MODELS, "fake-bow"))
        hits = ws.searcher("c").search("w1 w2 w3", "dense", k=3)
        assert ws.store.search.quantization == Quantization("none", 4, 8)
        assert len(hits) == 3
