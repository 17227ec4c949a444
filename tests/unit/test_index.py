from __future__ import annotations

import dataclasses

import pytest

from storage.corpus_store import CorpusStore
from storage.types import Document
from tasks.index import ModelMismatchError, reindex, resolve_corpus
from tasks.search import Searcher
from tests.fakes import FakeEmbedder, make_docs


def run(store: CorpusStore, docs, fake: FakeEmbedder, **kwargs):
    return reindex(store, "c", docs, fake.spec, lambda: fake, batch_docs=4, **kwargs)


def test_first_ingest_indexes_everything(tmp_store, fake):
    report = run(tmp_store, make_docs(10), fake)
    assert (report.added, report.changed, report.deleted, report.unchanged) == (10, 0, 0, 0)
    assert tmp_store.counts("c") == {"documents": 10, "views": report.chunks_written}
    assert report.chunks_encoded == report.chunks_written == len(fake.encoded)
    assert report.versions == tmp_store.versions("c") and report.versions["documents"] > 0
    info = tmp_store.corpus("c")
    assert (info.model, info.dim, info.passage_prefix) == ("fake-bow", 32, "p: ")


def test_unchanged_source_encodes_and_writes_nothing(tmp_store):
    docs = make_docs(10)
    run(tmp_store, docs, FakeEmbedder())
    before = tmp_store.versions("c")
    loaded = []
    report = reindex(tmp_store, "c", docs, FakeEmbedder().spec, lambda: loaded.append(1) or FakeEmbedder())
    assert (report.added, report.changed, report.deleted, report.unchanged) == (0, 0, 0, 10)
    assert loaded == []  # the model is not even loaded
    assert tmp_store.versions("c") == before == report.versions


def test_changes_are_applied_incrementally(tmp_store):
    docs = make_docs(10)
    run(tmp_store, docs, FakeEmbedder())
    edited = dataclasses.replace(docs[3], text=docs[3].text + " newword")
    new = Document("new", "fresh", "brand new document text")
    fake = FakeEmbedder()
    report = run(tmp_store, [*docs[:3], edited, *docs[4:9], new], fake)  # d9 is gone
    assert (report.added, report.changed, report.deleted, report.unchanged) == (1, 1, 1, 8)
    assert sorted(fake.encoded) == sorted(["title 3 " + edited.text, "fresh brand new document text"])
    hashes = tmp_store.document_hashes("c")
    assert "d9" not in hashes and hashes["d3"] == edited.content_hash and "new" in hashes
    view_docs = tmp_store.views("c", 32).to_arrow()["doc_id"].to_pylist()
    assert "d9" not in view_docs and view_docs.count("d3") == 1


def test_keep_deleted_keeps_documents_gone_from_the_source(tmp_store, fake):
    docs = make_docs(5)
    run(tmp_store, docs, fake)
    report = run(tmp_store, docs[:3], fake, keep_deleted=True)
    assert (report.deleted, report.kept_deleted, report.unchanged) == (0, 2, 3)
    assert len(tmp_store.document_hashes("c")) == 5


def test_embedding_cache_survives_deletion(tmp_store):
    docs = make_docs(4)
    run(tmp_store, docs, FakeEmbedder())
    run(tmp_store, docs[:2], FakeEmbedder())
    fake = FakeEmbedder()
    report = run(tmp_store, docs, fake)  # d2, d3 come back: their vectors are cached
    assert report.added == 2 and report.chunks_encoded == 0 and fake.encoded == []


def test_metadata_change_updates_without_reencoding(tmp_store):
    docs = make_docs(3)
    run(tmp_store, docs, FakeEmbedder())
    fake = FakeEmbedder()
    report = run(tmp_store, [dataclasses.replace(docs[0], metadata={"n": 99}), *docs[1:]], fake)
    assert report.changed == 1 and fake.encoded == []
    row = tmp_store.fetch_documents("c", ["d0"], ["metadata"])[0]
    assert row["metadata"] == '{"n":99}'


def test_long_documents_are_chunked_and_aggregate_to_one_hit(tmp_store):
    fake = FakeEmbedder(dim=512, max_tokens=16)
    filler = [f"filler{i}" for i in range(80)]
    long_doc = Document("long", "", " ".join([*filler[:40], "supersonic", "transition", *filler[40:]]))
    run(tmp_store, [long_doc, *make_docs(6)], fake)
    assert tmp_store.counts("c")["views"] > 7
    assert tmp_store.views("c", 512).count_rows("doc_id = 'long'") > 1
    searcher = Searcher(tmp_store, "c", lambda: fake)
    hits = searcher.search("supersonic transition", "dense", k=5)
    assert hits[0][0] == "long"
    assert len({d for d, _ in hits}) == len(hits) == 5  # each document once, by its best chunk


def test_search_methods_find_the_matching_document(tmp_store, fake):
    run(tmp_store, make_docs(12), fake)
    searcher = Searcher(tmp_store, "c", lambda: fake)
    for method in ("dense", "bm25", "hybrid", "hybrid(fusion=score, dense_weight=0.3)"):
        hits = searcher.search("term7 wing", method, k=3)
        assert hits[0][0] == "d7", method
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    batch = searcher.search_batch({"a": "term2", "b": "term5?"}, "hybrid", k=2)
    assert batch["a"][0][0] == "d2" and batch["b"][0][0] == "d5"
    assert searcher.search("!!!", "bm25") == []


def test_model_mismatch_is_an_error(tmp_store, fake):
    run(tmp_store, make_docs(2), fake)
    other = dataclasses.replace(fake.spec, name="other-model")
    with pytest.raises(ModelMismatchError, match="indexed with 'fake-bow'"):
        resolve_corpus(tmp_store, "c", other, explicit=True)
    assert resolve_corpus(tmp_store, "c", other, explicit=False) == fake.spec


def test_bad_corpus_names_and_unknown_corpora(tmp_store, fake):
    with pytest.raises(ValueError, match="not allowed"):
        reindex(tmp_store, "bad name!", make_docs(1), fake.spec, lambda: fake)
    with pytest.raises(LookupError, match="never ingested"):
        tmp_store.corpus("nope")


def test_ann_index_is_built_beyond_the_threshold(tmp_store, fake):
    run(tmp_store, make_docs(300, prefix="x"), fake, ann_min_rows=256)
    assert [i.columns for i in tmp_store.views("c", 32).list_indices()] == [["vector"]]
    hits = Searcher(tmp_store, "c", lambda: fake).search("term42", "dense", k=3)
    assert len(hits) == 3
