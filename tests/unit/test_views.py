"""Multi-view representations (title and synthetic-query views), multiview search and doc expansion."""

from __future__ import annotations

import dataclasses

import pytest

from tasks.index import reindex
from tasks.search import MultiviewParams, Searcher, _combine, parse_method
from tasks.synthesize import ExtractiveGenerator, Filters, synthesize
from tasks.views import build_views
from tests.fakes import make_docs


def kinds(store, corpus="c"):
    rows = store.views(corpus, 32).to_arrow().select(["doc_id", "kind"]).to_pylist()
    out: dict[str, int] = {}
    for r in rows:
        out[r["kind"]] = out.get(r["kind"], 0) + 1
    return out


@pytest.fixture
def indexed(tmp_store, fake):
    docs = make_docs(6)
    reindex(tmp_store, "c", docs, fake.spec, lambda: fake)
    synthesize(tmp_store, "c", ExtractiveGenerator(), filters=Filters(roundtrip_k=None))
    return tmp_store, docs


def test_views_are_built_incrementally_and_refreshed(indexed, fake):
    store, docs = indexed
    report = build_views(store, "c", lambda: fake)
    assert kinds(store) == {"chunk": 6, "title": 6, "query": 6}
    assert report.added == 12 and report.deleted == 0 and report.expanded_documents == 6
    fake.encoded.clear()
    again = build_views(store, "c", lambda: fake)
    assert (again.added, again.deleted, fake.encoded) == (0, 0, [])  # nothing to do, nothing encoded
    # A changed document loses its stale views at re-index; its old synthetic query no longer counts.
    edited = dataclasses.replace(docs[2], text=docs[2].text + " revised")
    reindex(store, "c", [*docs[:2], edited, *docs[3:]], fake.spec, lambda: fake)
    assert kinds(store) == {"chunk": 6, "title": 5, "query": 5}
    build_views(store, "c", lambda: fake)
    assert kinds(store) == {"chunk": 6, "title": 6, "query": 5}
    synthesize(store, "c", ExtractiveGenerator(), filters=Filters(roundtrip_k=None))
    build_views(store, "c", lambda: fake)
    assert kinds(store) == {"chunk": 6, "title": 6, "query": 6}


def test_query_views_use_the_query_prefix(indexed, fake):
    store, _ = indexed
    fake.as_queries.clear()
    build_views(store, "c", lambda: fake)
    views = store.views("c", 32).to_arrow().to_pylist()
    query_texts = sorted(v["text"] for v in views if v["kind"] == "query")
    assert sorted(fake.as_queries) == query_texts  # embedded as queries, titles as passages
    assert not {v["text"] for v in views if v["kind"] == "title"} & set(fake.as_queries)


def test_multiview_and_d2q_search(indexed, fake):
    store, _ = indexed
    build_views(store, "c", lambda: fake)
    searcher = Searcher(store, "c", lambda: fake)
    for method in ("multiview", "multiview(agg=weighted, query_weight=0.5)", "d2q"):
        hits = searcher.search("term3 wing", method, k=3)
        assert hits[0][0] == "d3", method
        assert len({d for d, _ in hits}) == 3


def test_d2q_needs_an_expanded_index(tmp_store, fake):
    reindex(tmp_store, "c", make_docs(3), fake.spec, lambda: fake)
    with pytest.raises(LookupError, match="zsr synthesize"):
        Searcher(tmp_store, "c", lambda: fake).search("term1", "d2q")


def test_combining_view_scores():
    passages, queries = [("a", 0.9), ("b", 0.5)], [("b", 0.95), ("c", 0.4)]
    assert _combine(passages, queries, MultiviewParams()) == {"a": 0.9, "b": 0.95, "c": 0.4}
    weighted = _combine(passages, queries, MultiviewParams(agg="weighted", query_weight=0.5))
    assert weighted == pytest.approx(
        {"a": 0.5 * 0.9 + 0.5 * 0.4, "b": 0.5 * 0.5 + 0.5 * 0.95, "c": 0.5 * 0.5 + 0.5 * 0.4}
    )
    assert str(parse_method("multiview(agg=weighted)")) == "multiview(agg=weighted)"
