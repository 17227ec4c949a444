"""Whitening (storage.whitening, ``dense(whiten=true, dims=k)``): the fit, the refit rule, whitened search and
where the fit is stored (issue 16, item 3)."""

from __future__ import annotations

import numpy as np
import pytest

from storage.types import Document
from storage.upkeep import owner
from storage.whitening import fit, whitening_table
from tasks.ingest.index import reindex
from tasks.methods.registry import MethodSpecError, parse_method
from tasks.methods.search import Searcher
from tests.fakes import fake_workspace, make_docs

QUERIES = {"a": "term1 wing flow", "b": "heat shock term7", "c": "boundary layer mach"}


def correlated(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """``n`` vectors with a mean far from 0 and strongly correlated coordinates (variances ~ 100 to 0.01)."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return (rng.normal(size=(n, dim)) * np.logspace(1, -1, dim)) @ rotation.T + rng.normal(size=dim) * 5


def ids(n: int, prefix: str = "v") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


@pytest.fixture
def indexed(tmp_store, fake):
    reindex(tmp_store, "c", make_docs(12), fake.space, lambda: fake)
    return tmp_store


def test_the_fit_makes_the_covariance_of_the_vectors_the_identity():
    vectors = correlated(2_000, 12)
    whitening = fit(vectors, ids(2_000), views_version=1)
    whitened = (vectors - whitening.mean) @ whitening.transform
    assert np.allclose(whitened.mean(axis=0), 0, atol=1e-9)
    assert np.allclose(np.cov(whitened, rowvar=False), np.eye(12), atol=1e-8)
    assert np.all(np.diff(whitening.variances) <= 0)  # columns by decreasing variance


def test_dims_keeps_the_directions_of_most_variance():
    rng = np.random.default_rng(1)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    spreads = np.array([9.0, 4.0, 1.0, 0.5, 0.2, 0.1])  # per axis, before the rotation
    vectors = (rng.normal(size=(5_000, 6)) * spreads) @ rotation.T
    whitening = fit(vectors, ids(5_000), views_version=1)
    kept = whitening.transform[:, :2] / np.linalg.norm(whitening.transform[:, :2], axis=0)
    # the two kept columns span the two widest axes: each is (up to sign) one of them
    assert np.allclose(np.abs(kept.T @ rotation[:, :2]), np.eye(2), atol=0.02)
    assert whitening.apply(vectors[:3], dims=2).shape == (3, 2)
    assert np.allclose(np.linalg.norm(whitening.apply(vectors[:3], dims=2), axis=1), 1)


def test_fewer_vectors_than_dimensions_whiten_only_the_directions_they_span():
    vectors = correlated(5, 16)
    whitening = fit(vectors, ids(5), views_version=1)
    assert whitening.transform.shape == (16, 4)  # 5 points span 4 directions around their mean
    assert np.isfinite(whitening.transform).all()
    assert whitening.apply(vectors, dims=100).shape == (5, 4)  # dims beyond the rank keeps them all


def test_churn_counts_views_added_and_deleted_against_those_fit_on():
    whitening = fit(correlated(10, 4), ids(10), views_version=1)
    assert whitening.churn(ids(10)) == 0
    assert whitening.churn([*ids(9), "new"]) == pytest.approx(0.2)  # v9 out, "new" in
    assert whitening.churn([*ids(10), "x", "y", "z"]) == pytest.approx(0.3)
    assert whitening.churn(ids(5)) == pytest.approx(0.5)


def test_refresh_fits_when_missing_and_refits_only_past_the_share(indexed, fake):
    first = indexed.whitening.refresh("c", fake.space, share=0.1)
    assert first is not None and first.rows == 12
    assert indexed.whitening.get("c", fake.space).views_version == first.views_version
    assert indexed.whitening.refresh("c", fake.space, share=0.1) is None  # nothing changed
    docs = make_docs(12)
    docs[3] = Document("d3", "title 3", "an entirely new text about nozzles", {"n": 3}, "mem:3")
    reindex(indexed, "c", docs, fake.space, lambda: fake)
    # one chunk replaced: 1 deleted + 1 added over 12 fit on = 0.167
    assert indexed.whitening.refresh("c", fake.space, share=0.2) is None
    assert indexed.whitening.get("c", fake.space) is not None
    assert indexed.whitening.get("c", fake.space).views_version == first.views_version
    refit = indexed.whitening.refresh("c", fake.space, share=0.1)
    assert refit is not None and refit.views_version > first.views_version
    assert indexed.whitening.get("c", fake.space).views_version == refit.views_version


def test_a_whitened_search_ranks_by_the_cosine_of_the_whitened_vectors(indexed, fake):
    searcher = Searcher(indexed, "c", lambda: fake)
    views = indexed.search.matrices.get(f"c__views__{fake.space.key}")
    assert (
        views is not None and set(views.kinds) == {"chunk"} and len(set(views.doc_ids)) == len(views.doc_ids)
    )
    for dims in (None, 3):
        method = "dense(whiten=true)" if dims is None else f"dense(whiten=true, dims={dims})"
        got = searcher.search_batch(QUERIES, method, k=12)
        whitening = indexed.whitening.get("c", fake.space)  # fit on the first whitened search
        assert whitening is not None and whitening.rows == 12
        stored = whitening.apply(views.vectors, dims)
        for qid, text in QUERIES.items():
            query = whitening.apply(fake.encode([text], queries=True), dims)[0]
            expected = dict(zip(views.doc_ids, (stored @ query).tolist(), strict=True))
            assert [d for d, _ in got[qid]] == sorted(expected, key=lambda d: (-expected[d], d))
            assert np.allclose([s for _, s in got[qid]], sorted(expected.values(), reverse=True), atol=1e-5)
    assert searcher.search_batch(QUERIES, "dense", k=12) != searcher.search_batch(
        QUERIES, "dense(whiten=true)", k=12
    )


def test_a_filter_applies_to_whitened_search(indexed, fake):
    hits = Searcher(indexed, "c", lambda: fake, where="n < 6").search("term9 wing", "dense(whiten=true)", 4)
    assert len(hits) == 4 and all(int(d[1:]) < 6 for d, _ in hits)


def test_dims_without_whiten_is_refused():
    with pytest.raises(MethodSpecError, match="whiten=true"):
        parse_method("dense(dims=64)")
    assert str(parse_method("dense(whiten=true, dims=64)")) == "dense(dims=64, whiten=True)"


def test_ingest_fits_and_the_fit_is_dropped_with_the_corpus(tmp_path, monkeypatch):
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(f'{{"_id": "{d.doc_id}", "text": "{d.text}"}}\n' for d in make_docs(8)))
    with fake_workspace(tmp_path, monkeypatch, corpora=("c",)) as ws:
        space = ws.store.registry.corpus("c").space
        assert ws.store.whitening.get("c", space) is None  # indexed without the ingest hook
        ws.ingest(source, "c")
        table = whitening_table("c", space)
        assert ws.store.whitening.get("c", space) is not None
        assert table in ws.store.tables_of("c") and owner(table) == "c"
        ws.remove_corpus("c", with_testsets=True)
        assert table not in ws.store.lance.names()
        assert ws.store.whitening.get("c", space) is None
