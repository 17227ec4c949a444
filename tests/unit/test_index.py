from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from storage.corpus_store import CorpusStore
from storage.ids import content_hash
from storage.types import Document
from storage.vector_space import VectorSpace
from tasks.ingest.embed import ModelMismatchError
from tasks.ingest.index import embed_cached, reindex, resolve_corpus
from tasks.ingest.sources import read_source
from tasks.ingest.views import build_views
from tasks.methods.search import Searcher
from tasks.settings import get_settings
from tasks.synthetic.generate import Filters, synthesize
from tasks.synthetic.generators import ExtractiveGenerator
from tests.conftest import zsr_home_at
from tests.fakes import FakeEmbedder, make_docs
from tests.kill_target import instrument

ROOT = Path(__file__).resolve().parents[2]


def run(store: CorpusStore, docs, fake: FakeEmbedder, **kwargs):
    return reindex(store, "c", docs, fake.space, lambda: fake, batch_docs=4, **kwargs)


def test_first_ingest_indexes_everything(tmp_store, fake):
    report = run(tmp_store, make_docs(10), fake)
    assert (report.added, report.changed, report.deleted, report.unchanged) == (10, 0, 0, 0)
    assert tmp_store.counts("c") == {"documents": 10, "views": report.chunks_written}
    assert report.chunks_encoded == report.chunks_written == len(fake.encoded)
    assert report.versions == tmp_store.versions("c") and report.versions["documents"] > 0
    info = tmp_store.registry.corpus("c")
    assert (info.space.model, info.dim, info.space.passage_prefix) == ("fake-bow", 32, "p: ")
    assert info.space == fake.space


def test_unchanged_source_encodes_and_writes_nothing(tmp_store):
    docs = make_docs(10)
    run(tmp_store, docs, FakeEmbedder())
    before = tmp_store.versions("c")
    loaded = []
    report = reindex(tmp_store, "c", docs, FakeEmbedder().space, lambda: loaded.append(1) or FakeEmbedder())
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
    hashes = tmp_store.documents.hashes("c")
    assert "d9" not in hashes and hashes["d3"] == edited.content_hash and "new" in hashes
    view_docs = tmp_store.views.table("c", FakeEmbedder().space).to_arrow()["doc_id"].to_pylist()
    assert "d9" not in view_docs and view_docs.count("d3") == 1


def test_keep_deleted_keeps_documents_gone_from_the_source(tmp_store, fake):
    docs = make_docs(5)
    run(tmp_store, docs, fake)
    report = run(tmp_store, docs[:3], fake, keep_deleted=True)
    assert (report.deleted, report.kept_deleted, report.unchanged) == (0, 2, 3)
    assert len(tmp_store.documents.hashes("c")) == 5


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
    row = tmp_store.documents.fetch("c", ["d0"], ["metadata"])[0]
    assert row["metadata"] == '{"n":99}'


def test_long_documents_are_chunked_and_aggregate_to_one_hit(tmp_store):
    fake = FakeEmbedder(dim=512, max_tokens=16)
    filler = [f"filler{i}" for i in range(80)]
    long_doc = Document("long", "", " ".join([*filler[:40], "supersonic", "transition", *filler[40:]]))
    run(tmp_store, [long_doc, *make_docs(6)], fake)
    assert tmp_store.counts("c")["views"] > 7
    assert tmp_store.views.table("c", fake.space).count_rows("doc_id = 'long'") > 1
    searcher = Searcher(tmp_store, "c", lambda: fake)
    hits = searcher.search("supersonic transition", "dense", k=5)
    assert hits[0][0] == "long"
    assert len({d for d, _ in hits}) == len(hits) == 5  # each document once, by its best chunk


def test_search_methods_find_the_matching_document(tmp_store, fake):
    run(tmp_store, make_docs(12), fake)
    searcher = Searcher(tmp_store, "c", lambda: fake)
    for method in ("dense", "bm25", "hybrid", "hybrid(fusion=rrf, dense_weight=0.3)"):
        hits = searcher.search("term7 wing", method, k=3)
        assert hits[0][0] == "d7", method
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    batch = searcher.search_batch({"a": "term2", "b": "term5?"}, "hybrid", k=2)
    assert batch["a"][0][0] == "d2" and batch["b"][0][0] == "d5"
    assert searcher.search("!!!", "bm25") == []


def test_model_mismatch_is_an_error(tmp_store, fake):
    run(tmp_store, make_docs(2), fake)
    other = dataclasses.replace(fake.space, model="other-model")
    with pytest.raises(ModelMismatchError, match="indexed with 'fake-bow'"):
        resolve_corpus(tmp_store, "c", other, explicit=True)
    assert resolve_corpus(tmp_store, "c", other, explicit=False) == fake.space
    newer = dataclasses.replace(fake.space, revision="fake-2")  # the same model name, new weights
    with pytest.raises(ModelMismatchError, match="revision 'fake' vs 'fake-2'"):
        resolve_corpus(tmp_store, "c", newer, explicit=True)
    with pytest.raises(ModelMismatchError, match="revision 'fake' vs 'fake-2'"):  # reindex checks it too
        reindex(tmp_store, "c", make_docs(3), newer, lambda: with_space(newer))
    with pytest.raises(ModelMismatchError, match="embeds into"):  # vectors are filed under their own space
        reindex(tmp_store, "new", make_docs(3), fake.space, lambda: with_space(other))
    assert tmp_store.registry.get("new") is None


def test_bad_corpus_names_and_unknown_corpora(tmp_store, fake):
    with pytest.raises(ValueError, match="not allowed"):
        reindex(tmp_store, "bad name!", make_docs(1), fake.space, lambda: fake)
    with pytest.raises(LookupError, match="never ingested"):
        tmp_store.registry.corpus("nope")


def test_ann_index_is_built_beyond_the_threshold(tmp_store, fake):
    run(tmp_store, make_docs(300, prefix="x"), fake, ann_min_rows=256)
    indices = tmp_store.views.table("c", fake.space).list_indices()
    assert sorted(i.columns for i in indices) == [["kind"], ["vector"]]  # ANN, and the kind prefilter's
    hits = Searcher(tmp_store, "c", lambda: fake).search("term42", "dense", k=3)
    assert len(hits) == 3


def with_space(space: VectorSpace) -> FakeEmbedder:
    fake = FakeEmbedder()
    fake.space = space
    return fake


def test_embedding_cache_is_shared_across_corpora_of_one_model_and_prefix(tmp_store):
    docs = make_docs(8, words_per_doc=30)
    first = FakeEmbedder()
    reindex(tmp_store, "c", docs, first.space, lambda: first)
    assert len(first.encoded) > len(docs)  # several chunks a document

    again = FakeEmbedder()
    report = reindex(tmp_store, "c2", docs, again.space, lambda: again)
    assert again.encoded == [] and report.chunks_encoded == 0
    assert report.chunks_cached == report.chunks_written == len(first.encoded)
    for query in ("term5 wing", "boundary layer heat"):  # the cached vectors serve c2 as they serve c
        search = {c: Searcher(tmp_store, c, lambda: again).search(query, "dense", k=8) for c in ("c", "c2")}
        assert search["c2"] == search["c"]

    # Another passage prefix (or model, or revision) embeds the same text differently: all is encoded again.
    for corpus, space in (
        ("c3", dataclasses.replace(first.space, passage_prefix="passage: ")),
        ("c4", dataclasses.replace(first.space, model="fake-bow-2")),
        ("c5", dataclasses.replace(first.space, revision="fake-2")),
    ):
        other = with_space(space)
        report = reindex(tmp_store, corpus, docs, space, lambda other=other: other)
        assert sorted(other.encoded) == sorted(first.encoded), corpus
        assert report.chunks_cached == 0, corpus


def test_the_cache_keeps_query_and_passage_vectors_apart(tmp_store, fake):
    texts = {content_hash("wing flutter"): "wing flutter"}
    for queries in (False, True, False, True):
        embed_cached(tmp_store, fake, texts, queries=queries)
    assert fake.encoded == ["wing flutter"] * 2 and fake.as_queries == ["wing flutter"]  # once per role


def test_reindex_killed_after_a_cache_commit_encodes_only_what_the_cache_lacks(tmp_path):
    docs = make_docs(10, words_per_doc=30)
    source = tmp_path / "docs.jsonl"
    source.write_text(
        "".join(json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text}) + "\n" for d in docs)
    )
    docs = read_source(source).documents
    clean, marks = FakeEmbedder(), []
    reindex(
        CorpusStore(str(tmp_path / "clean")),
        "c",
        docs,
        clean.space,
        lambda: clean,
        batch_docs=2,
        progress=lambda done, total: marks.append(len(clean.encoded)),
    )
    total = len(clean.encoded)
    assert len(marks) == 5 and len(set(clean.encoded)) == total

    uri = str(tmp_path / "db")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.cache_kill_target", uri, str(source)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    for batch in range(3):  # batches 1 and 2 finish; batch 3 is killed right after its cache commit
        line = proc.stdout.readline()
        assert line.startswith("cached"), line
        if batch < 2:
            proc.stdin.write("go\n")
            proc.stdin.flush()
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    store = CorpusStore(uri)
    assert set(store.documents.hashes("c")) == {d.doc_id for d in list(docs)[:4]}  # batch 3 never committed
    cached = set(store.cache.get(clean.space, "passage", [content_hash(t) for t in clean.encoded]))
    assert cached == {content_hash(t) for t in clean.encoded[: marks[2]]}  # its vectors were

    rerun = FakeEmbedder()
    report = reindex(store, "c", docs, rerun.space, lambda: rerun, batch_docs=2)
    assert report.added == 6 and 0 < len(rerun.encoded) == total - len(cached) < total
    assert sorted(rerun.encoded) == sorted(clean.encoded[marks[2] :])
    assert report.chunks_cached == marks[2] - marks[1]  # batch 3's chunks came from the cache


# -- a document row and the views carrying its content hash are one unit ------------------------------------
class Crash(BaseException):
    """Stands in for SIGKILL: nothing in a re-index catches it, so no clean-up code runs."""


def crash_before(store: CorpusStore, method: str) -> CorpusStore:
    """``store``, made to crash at its first call of ``part.method`` (the earlier writes stay committed)."""

    def crash(*args, **kwargs):
        raise Crash(method)

    part, name = method.split(".")
    setattr(getattr(store, part), name, crash)
    return store


def tables(store: CorpusStore, corpus: str = "c") -> dict[str, list]:
    docs = (
        store.documents.table(corpus).to_arrow().drop_columns(["ingested_at"]).sort_by("doc_id").to_pylist()
    )
    views = (
        store.views.table(corpus, store.registry.get(corpus).space).to_arrow().sort_by("view_id").to_pylist()
    )
    return {"documents": docs, "views": views}


def test_reingesting_the_old_source_after_a_reindex_killed_between_views_and_rows(tmp_store, fake):
    docs = make_docs(6)
    run(tmp_store, docs, fake)
    clean = tables(tmp_store)
    edited = dataclasses.replace(docs[1], text=docs[1].text + " supersonic")
    v2 = [docs[0], edited, *docs[2:], Document("n0", "fresh", "nozzle plume noise")]
    with pytest.raises(Crash):  # the batch's views are written, its document rows are not
        run(crash_before(CorpusStore(tmp_store.uri), "documents.upsert"), v2, fake)

    store = CorpusStore(tmp_store.uri)
    report = run(store, docs, fake)
    assert tables(store) == clean  # d1's v2 vectors and the orphan n0's are gone, d1's v1 vectors back
    assert Searcher(store, "c", lambda: fake).search("supersonic nozzle", "dense", k=6)[0][0] != "d1"
    assert (report.added, report.changed, report.deleted, report.repaired) == (0, 0, 0, 2)
    before = store.versions("c")
    assert run(store, docs, fake).repaired == 0 and store.versions("c") == before


def test_a_repair_keeps_the_title_and_query_views_of_the_document(tmp_store, fake):
    docs = make_docs(4)
    run(tmp_store, docs, fake)
    synthesize(tmp_store, "c", ExtractiveGenerator(), filters=Filters(roundtrip_k=None))
    build_views(tmp_store, "c", lambda: fake)
    clean = tables(tmp_store)
    assert {v["kind"] for v in clean["views"] if v["doc_id"] == "d2"} == {"chunk", "title", "query"}
    edited = dataclasses.replace(docs[2], text=docs[2].text + " revised")
    with pytest.raises(Crash):
        run(crash_before(CorpusStore(tmp_store.uri), "documents.upsert"), [*docs[:2], edited, docs[3]], fake)

    store = CorpusStore(tmp_store.uri)
    report = run(store, docs, fake)
    assert tables(store) == clean  # d2 is back as it was: its chunk, and its title and query views
    assert report.repaired == 1
    # Finishing the change instead drops d2's title and query views with its old version.
    run(store, [*docs[:2], edited, docs[3]], fake)
    kinds = {v["kind"] for v in tables(store)["views"] if v["doc_id"] == "d2"}
    assert kinds == {"chunk"}


def test_a_kept_document_with_broken_views_is_repaired_from_its_row(tmp_store, fake):
    docs = make_docs(4)
    run(tmp_store, docs, fake)
    clean = tables(tmp_store)
    edited = dataclasses.replace(docs[1], text=docs[1].text + " revised")
    with pytest.raises(Crash):
        run(crash_before(CorpusStore(tmp_store.uri), "documents.upsert"), [docs[0], edited, *docs[2:]], fake)

    store = CorpusStore(tmp_store.uri)
    report = run(store, [docs[0], *docs[2:]], fake, keep_deleted=True)  # d1 is no longer in the source
    assert tables(store) == clean
    assert (report.kept_deleted, report.repaired, report.deleted) == (1, 1, 0)


def test_views_written_before_views_carried_their_documents_hash_are_rebuilt(tmp_store, fake):
    docs = make_docs(5)
    run(tmp_store, docs, fake)
    clean = tables(tmp_store)
    tmp_store.views.table("c", fake.space).drop_columns(["doc_hash"])  # a table written by an older zsr

    store = CorpusStore(tmp_store.uri)
    assert len(Searcher(store, "c", lambda: fake).search("term2", "dense", k=3)) == 3  # still readable
    fake.encoded.clear()
    report = run(store, docs, fake)
    assert (report.repaired, report.changed, fake.encoded) == (5, 0, [])  # from the cache, nothing encoded
    assert tables(store) == clean
    before = store.versions("c")
    run(store, docs, fake)
    assert store.versions("c") == before


# -- --skip-bad keeps what is indexed for a record it skips ------------------------------------------------
def test_skip_bad_keeps_the_indexed_version_of_a_skipped_record(tmp_path, monkeypatch):
    monkeypatch.setattr("tasks.workspace.load_embedder", lambda space, *args: FakeEmbedder(space=space))
    source = tmp_path / "docs.jsonl"
    lines = {
        "a": '{"_id": "a", "text": "alpha wing"}',
        "b": '{"_id": "b", "text": "beta flow"}',
        "c": '{"_id": "c", "text": "gamma heat"}',
    }

    def ingest(*records: str) -> dict:
        source.write_text("".join(record + "\n" for record in records))
        result = CliRunner().invoke(app, ["ingest", str(source), "--corpus", "k", "--skip-bad", "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    with zsr_home_at(tmp_path / "home"):
        ingest(*lines.values())
        store = CorpusStore(str(tmp_path / "home" / "lancedb"))
        indexed = tables(store, "k")

        # b's line is bad but its id is readable: b keeps its indexed version, and the report says so
        report = ingest(lines["a"], '{"_id": "b", "title": " "}', lines["c"])  # neither title nor text
        assert tables(store, "k") == indexed
        assert (report["deleted"], report["kept_skipped"], report["unchanged"]) == (0, 1, 2)
        printed = CliRunner().invoke(app, ["ingest", str(source), "--corpus", "k", "--skip-bad"]).output
        printed = " ".join(printed.split())  # as rich wraps it
        assert "1 kept as indexed (bad record skipped)" in printed

        # b's line is broken JSON (no readable id) and c is gone: nothing may be deleted, and it says why
        report = ingest(lines["a"], '{"_id": "b", "text": ')
        assert tables(store, "k") == indexed
        assert (report["deleted"], report["kept_unverified"]) == (0, 2)
        printed = CliRunner().invoke(app, ["ingest", str(source), "--corpus", "k", "--skip-bad"]).output
        printed = " ".join(printed.split())  # as rich wraps it
        assert "2 documents missing from the source were kept" in printed
        assert "1 skipped record has no readable id" in printed

        # once the source is fixed, what is really gone is deleted
        report = ingest(lines["a"], lines["b"])
        assert (report["deleted"], report["kept_unverified"]) == (1, 0)


class CrashAfterFirstDelete:
    """A views table whose first ``delete`` commits, then crashes (a kill between two delete commits)."""

    def __init__(self, table) -> None:
        self.table = table

    def __getattr__(self, name: str):
        return getattr(self.table, name)

    def delete(self, where: str) -> None:
        self.table.delete(where)
        raise Crash("after the first delete")


def crash_after_first_view_delete(store: CorpusStore, monkeypatch) -> CorpusStore:
    table = store.views.table
    monkeypatch.setattr(
        store.views, "table", lambda corpus, space: CrashAfterFirstDelete(table(corpus, space))
    )
    return store


def test_a_gone_documents_views_are_deleted_all_at_once(tmp_store, fake, monkeypatch):
    monkeypatch.setattr("storage.lance.IN_BATCH", 2)  # every IN list split into pairs
    long = Document("long", "", " ".join(f"w{i}" for i in range(60)))
    docs = [long, *make_docs(3)]
    run(tmp_store, docs, fake)
    clean = tables(tmp_store)
    assert sum(v["doc_id"] == "long" for v in clean["views"]) > 2

    store = crash_after_first_view_delete(CorpusStore(tmp_store.uri), monkeypatch)
    with pytest.raises(Crash):  # "long" is gone: its views are deleted, then its row would be
        run(store, docs[1:], fake)

    store = CorpusStore(tmp_store.uri)
    report = run(store, docs, fake)  # "long" is back: none of its views may be missing
    assert tables(store) == clean
    assert report.repaired == 1


def test_a_run_killed_before_the_ann_index_builds_it_the_next_time(tmp_store, fake):
    docs = make_docs(300, prefix="x")
    with pytest.raises(Crash):
        run(
            crash_before(CorpusStore(tmp_store.uri), "views.ensure_vector_index"),
            docs,
            fake,
            ann_min_rows=256,
        )
    store = CorpusStore(tmp_store.uri)
    assert store.views.table("c", fake.space).list_indices() == []

    report = run(store, docs, fake, ann_min_rows=256)  # nothing else to do, but the index is missing
    indices = store.views.table("c", fake.space).list_indices()
    assert sorted(i.columns for i in indices) == [["kind"], ["vector"]]
    assert (report.added, report.changed, report.repaired) == (0, 0, 0)
    before = store.versions("c")
    run(store, docs, fake, ann_min_rows=256)
    assert store.versions("c") == before


def test_views_built_between_a_crash_and_its_repair_carry_the_new_version(tmp_store, fake):
    docs = make_docs(4)
    edited = dataclasses.replace(docs[2], text=docs[2].text + " revised")
    v2 = [*docs[:2], edited, docs[3]]
    clean = CorpusStore(str(tmp_store.uri) + "-clean")
    for store in (tmp_store, clean):
        run(store, docs, fake)
        synthesize(store, "c", ExtractiveGenerator(), filters=Filters(roundtrip_k=None))
        build_views(store, "c", lambda: fake)
    run(clean, v2, fake)
    build_views(clean, "c", lambda: fake)

    with pytest.raises(Crash):  # d2's new row is in, its old views are not deleted yet
        run(crash_before(CorpusStore(tmp_store.uri), "views.delete_stale"), v2, fake)
    store = CorpusStore(tmp_store.uri)
    build_views(store, "c", lambda: fake)  # d2's title view is unchanged, but now belongs to v2
    run(store, v2, fake)
    assert tables(store) == tables(clean)


def test_old_views_are_deleted_only_after_the_new_version_is_in(tmp_store, fake, monkeypatch):
    monkeypatch.setattr("storage.lance.IN_BATCH", 1)  # one view per delete commit
    long = Document("long", "old title", " ".join(f"w{i}" for i in range(60)))
    docs = [long, *make_docs(2)]
    run(tmp_store, docs, fake)
    clean = tables(tmp_store)
    assert sum(v["doc_id"] == "long" for v in clean["views"]) > 2

    store = crash_after_first_view_delete(CorpusStore(tmp_store.uri), monkeypatch)
    retitled = dataclasses.replace(long, title="new title")  # every chunk of it changes
    with pytest.raises(Crash):  # one of its old views is deleted, the others are not
        run(store, [retitled, *docs[1:]], fake)

    store = CorpusStore(tmp_store.uri)
    run(store, docs, fake)  # back to the old title: every old view must be there again
    assert tables(store) == clean


def test_a_metadata_change_keeps_the_chunk_views_under_the_new_version(tmp_store, fake):
    docs = make_docs(3)
    run(tmp_store, docs, fake)
    before = [v for v in tables(tmp_store)["views"] if v["doc_id"] == "d0"]
    changed = dataclasses.replace(docs[0], metadata={"n": 99})
    run(tmp_store, [changed, *docs[1:]], fake)
    after = [v for v in tables(tmp_store)["views"] if v["doc_id"] == "d0"]
    assert [v["doc_hash"] for v in after] == [changed.content_hash] * len(before)
    assert [v["meta__n"] for v in after] == [99] * len(before)  # views carry the metadata (--where)
    same = {"doc_hash": None, "meta__n": None}
    assert [{**v, **same} for v in after] == [{**v, **same} for v in before]


class _Stopped(Exception):
    """Stands in for SIGKILL: the first ingest stops at a store call and never resumes."""


@pytest.mark.parametrize(
    ("stop_before", "reason"),
    [
        ("registry.register", "never registered"),
        ("views.put", "views table"),
        ("documents.rebuild_fts", "BM25 index"),
    ],
)
def test_a_corpus_whose_first_ingest_stopped_is_reported_incomplete(tmp_store, fake, stop_before, reason):

    def hook(number: int, name: str, side: str) -> None:
        if (name, side) == (stop_before, "before"):
            raise _Stopped

    with pytest.raises(_Stopped):
        reindex(instrument(tmp_store, hook), "c", make_docs(6), fake.space, lambda: fake, batch_docs=2)
    store = CorpusStore(tmp_store.uri)

    with pytest.raises(LookupError, match=rf"corpus 'c' is incomplete \(.*{reason}.*re-run the ingest"):
        Searcher(store, "c", lambda: fake)
    assert store.registry.incomplete("c") is not None and reason in store.registry.incomplete("c")
    assert "c" in store.registry.incomplete_corpora()

    reindex(store, "c", make_docs(6), fake.space, lambda: fake)
    assert store.registry.incomplete("c") is None and store.registry.incomplete_corpora() == {}
    assert Searcher(store, "c", lambda: fake).search("term1", "hybrid", k=1)[0][0] == "d1"


def test_zsr_corpora_marks_a_corpus_whose_first_ingest_stopped(tmp_path, fake):
    def hook(number: int, name: str, side: str) -> None:
        if (name, side) == ("views.put", "before"):
            raise _Stopped

    with zsr_home_at(tmp_path / "home"):
        from tasks.workspace import Workspace

        reindex(Workspace.open().store, "whole", make_docs(3), fake.space, lambda: fake)
        stopping = instrument(Workspace.open(get_settings()).store, hook)  # a store of its own
        with pytest.raises(_Stopped):
            reindex(stopping, "half", make_docs(3), fake.space, lambda: fake)
        rows = json.loads(CliRunner().invoke(app, ["corpora", "--json"]).output)

    assert {r["name"]: r["incomplete"] for r in rows} == {"half": "its views table is missing", "whole": ""}


def test_a_delete_only_run_killed_before_the_bm25_rebuild_rebuilds_it_next_time(tmp_store, fake):
    """Deleted rows stay in the BM25 statistics until the index is rebuilt: the next run must see that."""
    docs = make_docs(8)
    clean = CorpusStore(str(tmp_store.uri) + "-clean")
    run(clean, docs[:5], fake)
    run(tmp_store, docs, fake)
    with pytest.raises(Crash):  # the rows are deleted, the index still counts them
        run(crash_before(CorpusStore(tmp_store.uri), "documents.rebuild_fts"), docs[:5], fake)
    store = CorpusStore(tmp_store.uri)
    probes = ("wing flow", "term2 heat", "shock mach pressure")
    stale = [store.search.fts("c", q, 10) for q in probes]
    expected = [clean.search.fts("c", q, 10) for q in probes]
    assert stale != expected  # the kill really left stale scores behind
    report = run(store, docs[:5], fake)  # nothing added, changed or deleted, yet the index is rebuilt
    assert (report.added, report.changed, report.deleted) == (0, 0, 0)
    assert [store.search.fts("c", q, 10) for q in probes] == expected
    before = store.versions("c")
    run(store, docs[:5], fake)  # and then nothing is left to do
    assert store.versions("c") == before
