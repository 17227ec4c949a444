"""The query path from memory (issue 14, item 1): filtered dense search and stored document vectors served by
the held matrix, equal to what Lance gives and never stale; warm searches open no table."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

import tasks.methods.search
from storage.lance import Lance
from storage.views import views_table
from tasks.ingest.index import reindex
from tasks.methods.search import Searcher
from tests.fakes import make_docs


@pytest.fixture
def indexed(tmp_store, fake):
    reindex(tmp_store, "c", make_docs(40), fake.space, lambda: fake)
    return tmp_store


def lance_dense(store, fake, vector: np.ndarray, limit: int, kinds: str, where: str) -> list:
    """Lance's own prefiltered flat search over the views table, as Search ran it before the matrix."""
    found = (
        store.views.table("c", fake.space)
        .search(vector)
        .distance_type("cosine")
        .where(f"kind IN ({kinds}) AND ({where})", prefilter=True)
        .select(["doc_id", "_distance"])
        .limit(limit)
        .to_list()
    )
    return [(r["doc_id"], 1 - r["_distance"]) for r in found]


@pytest.mark.parametrize("kinds", [("chunk",), ("chunk", "title")])
def test_a_filtered_search_from_memory_equals_lances_prefilter(indexed, fake, kinds):
    where = Searcher(indexed, "c", lambda: fake, where="n >= 7 AND n < 30").where
    assert where is not None
    assert indexed.search.matrices.get(views_table("c", fake.space)) is not None  # served from memory
    queries = np.random.default_rng(3).normal(size=(4, fake.dim)).astype(np.float32)
    got = indexed.search.dense("c", fake.space, queries, 12, kinds, where)
    for query, hits in zip(queries, got, strict=True):
        want = lance_dense(indexed, fake, query, 12, ", ".join(f"'{k}'" for k in kinds), where)
        assert [d for d, _ in hits] == [d for d, _ in want]
        assert np.allclose([s for _, s in hits], [s for _, s in want], atol=1e-5)


def test_a_commit_changes_what_a_held_filter_keeps(indexed, fake):
    engine = Searcher(indexed, "c", lambda: fake, where="n >= 30")
    assert {d for d, _ in engine.search("term3", "dense", 20)} == {f"d{i}" for i in range(30, 40)}
    moved = [replace(d, metadata={"n": 99}) if d.doc_id == "d3" else d for d in make_docs(40)]
    reindex(indexed, "c", moved, fake.space, lambda: fake)  # d3's metadata changes, its chunks do not
    hits = {d for d, _ in engine.search("term3", "dense", 20)}
    assert hits == {"d3", *(f"d{i}" for i in range(30, 40))}


def test_stored_document_vectors_from_memory_equal_the_tables(tmp_store, fake):
    reindex(tmp_store, "c", make_docs(12, words_per_doc=40), fake.space, lambda: fake)  # several chunks each
    assert tmp_store.counts("c")["views"] > 2 * 12
    wanted = ["d0", "d7", "d11", "missing"]
    held = tmp_store.search.document_vectors("c", fake.space, wanted)
    read = tmp_store.views.document_vectors("c", fake.space, wanted)
    assert held.keys() == read.keys() == {"d0", "d7", "d11"}
    for doc_id, vector in read.items():
        assert np.allclose(held[doc_id], vector, atol=1e-6)


def test_a_warm_search_opens_no_table(indexed, fake, monkeypatch):
    engine = Searcher(indexed, "c", lambda: fake, where="n >= 7")
    for method in ("prf", "hybrid"):  # warm: the matrix, the filter's rows, the documents' vectors, tables
        engine.search("term3 wing", method)
    opened = []
    monkeypatch.setattr(Lance, "exists", lambda self, name: opened.append(name) or True)
    monkeypatch.setattr(indexed.lance.db, "open_table", lambda name, **kw: opened.append(name))
    for method in ("prf", "hybrid", "bm25"):
        assert engine.search("term9 flow", method)[0][0] == "d9"
    assert opened == []


def test_a_held_table_is_reopened_after_a_commit(indexed, fake):
    engine = Searcher(indexed, "c", lambda: fake)
    assert engine.search("term45", "bm25") == []
    reindex(indexed, "c", make_docs(46), fake.space, lambda: fake)
    assert engine.search("term45", "bm25")[0][0] == "d45"


def test_hybrid_runs_its_legs_side_by_side(indexed, fake, monkeypatch):
    engine = Searcher(indexed, "c", lambda: fake)
    bm25_started = threading.Event()
    search_text, encode = engine.search_text, engine.encode

    def bm25_leg(*args, **kwargs):
        bm25_started.set()
        return search_text(*args, **kwargs)

    def dense_leg(*args, **kwargs):  # finishes only once the bm25 leg has started: fails when run in turn
        assert bm25_started.wait(timeout=10), "the bm25 leg waited for the dense leg"
        return encode(*args, **kwargs)

    monkeypatch.setattr(engine, "search_text", bm25_leg)
    monkeypatch.setattr(engine, "encode", dense_leg)
    assert engine.search("term4 wing", "hybrid", 3)[0][0] == "d4"


def test_the_bm25_searches_of_a_batch_run_side_by_side_in_order(indexed, fake, monkeypatch):
    engine = Searcher(indexed, "c", lambda: fake)
    queries = {f"q{i}": f"term{i} wing" for i in range(6)}
    one_by_one = {qid: engine.search(text, "bm25", 3) for qid, text in queries.items()}
    monkeypatch.setattr(tasks.methods.search, "BM25_THREADS", 2)  # as on the 2 cores it was measured on
    together, fts = threading.Barrier(2, timeout=10), indexed.search.fts

    def paired(*args, **kwargs):  # broken (raises) unless two searches are in flight at once
        together.wait()
        return fts(*args, **kwargs)

    monkeypatch.setattr(indexed.search, "fts", paired)
    assert engine.search_batch(queries, "bm25", 3) == one_by_one


def test_a_query_is_encoded_once_a_search(indexed, fake):
    engine = Searcher(indexed, "c", lambda: fake)
    engine.search("term3 wing", "prf")  # its first stage (dense) encodes the query too
    assert fake.as_queries == ["term3 wing"]
    engine.search("term3 wing", "prf")
    assert fake.as_queries == ["term3 wing"] * 2  # a new search encodes anew
