"""Multi-view representations (title and synthetic-query views), multiview search and doc expansion."""

from __future__ import annotations

import dataclasses

import pytest

from storage.llm_cache import ResponseCache
from tasks.ingest.index import reindex
from tasks.ingest.views import build_views
from tasks.llm.client import LLMClient, LLMConfig
from tasks.methods.first_stage import MultiviewParams, combine
from tasks.methods.registry import parse_method
from tasks.methods.search import Searcher
from tasks.synthetic.generate import Filters, synthesize
from tasks.synthetic.generators import ExtractiveGenerator, LLMGenerator
from tests import fake_llm
from tests.fakes import make_docs


def kinds(store, corpus="c"):
    rows = store.views.table(corpus, store.registry.corpus(corpus).space).to_arrow()
    rows = rows.select(["doc_id", "kind"]).to_pylist()
    out: dict[str, int] = {}
    for r in rows:
        out[r["kind"]] = out.get(r["kind"], 0) + 1
    return out


@pytest.fixture
def indexed(tmp_store, fake):
    docs = make_docs(6)
    reindex(tmp_store, "c", docs, fake.space, lambda: fake)
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
    reindex(store, "c", [*docs[:2], edited, *docs[3:]], fake.space, lambda: fake)
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
    views = store.views.table("c", fake.space).to_arrow().to_pylist()
    query_texts = sorted(v["text"] for v in views if v["kind"] == "query")
    assert sorted(fake.as_queries) == query_texts  # embedded as queries, titles as passages
    assert not {v["text"] for v in views if v["kind"] == "title"} & set(fake.as_queries)


# A word in no document: only a synthetic query of d3 holds it, so only methods that read synthetic
# queries (multiview's query views, d2q's expanded index) can find d3 for it.
UNSEEN = "zephyrine"
PROBES = [UNSEEN, "term3 wing", "boundary layer pressure", "term1 drag"]


def test_multiview_and_d2q_search(tmp_store, fake, tmp_path):
    provider = fake_llm.install()

    def answer(messages, params):
        n = int(messages[-1]["content"].split("term")[1].split()[0])
        return f"why do {UNSEEN} gusts form" if n == 3 else f"what is term{n} about"

    provider.rule = answer
    docs = make_docs(6)
    assert not any(UNSEEN in f"{d.title} {d.text}" for d in docs)
    reindex(tmp_store, "c", docs, fake.space, lambda: fake)
    searcher = Searcher(tmp_store, "c", lambda: fake)
    bm25_before = {q: searcher.search(q, "bm25", k=6) for q in PROBES}
    documents_version = tmp_store.versions("c")["documents"]

    llm = LLMClient(
        LLMConfig(model="zsr-fake/m"), ResponseCache(tmp_path / "llm.sqlite"), sleep=lambda s: None
    )
    report = synthesize(tmp_store, "c", LLMGenerator(llm), filters=Filters(roundtrip_k=None))
    assert report.kept == 6
    build_views(tmp_store, "c", lambda: fake)
    searcher = Searcher(tmp_store, "c", lambda: fake)

    for method in ("multiview", "multiview(agg=weighted, query_weight=0.5)", "d2q"):
        hits = searcher.search(UNSEEN, method, k=3)
        assert [d for d, _ in hits][:1] == ["d3"], (method, hits)
        hits = searcher.search("term3 wing", method, k=3)
        assert hits[0][0] == "d3", method
        assert len({d for d, _ in hits}) == 3
    assert [d for d, _ in searcher.search(UNSEEN, "d2q", k=3)] == ["d3"]  # the only expansion with it
    # The plain methods see only the documents: the word is nowhere in them.
    dense = searcher.search(UNSEEN, "dense", k=6)
    assert max(s for _, s in dense) < 1e-3 and "d3" not in [d for d, _ in dense[:3]]
    assert searcher.search(UNSEEN, "bm25", k=3) == []
    # bm25 stays as ingested: same hits and scores, documents table untouched by synthesis and views.
    assert {q: searcher.search(q, "bm25", k=6) for q in PROBES} == bm25_before
    assert tmp_store.versions("c")["documents"] == documents_version


def test_d2q_needs_an_expanded_index(tmp_store, fake):
    reindex(tmp_store, "c", make_docs(3), fake.space, lambda: fake)
    with pytest.raises(LookupError, match="zsr synthesize"):
        Searcher(tmp_store, "c", lambda: fake).search("term1", "d2q")


def test_combining_view_scores():
    passages, queries = [("a", 0.9), ("b", 0.5)], [("b", 0.95), ("c", 0.4)]
    assert combine(passages, queries, MultiviewParams()) == {"a": 0.9, "b": 0.95, "c": 0.4}
    weighted = combine(passages, queries, MultiviewParams(agg="weighted", query_weight=0.5))
    assert weighted == pytest.approx(
        {"a": 0.5 * 0.9 + 0.5 * 0.4, "b": 0.5 * 0.5 + 0.5 * 0.95, "c": 0.5 * 0.5 + 0.5 * 0.4}
    )
    assert str(parse_method("multiview(agg=weighted)")) == "multiview(agg=weighted)"
