"""Ingest in bounded memory (issue 14, item 5): a source is read record by record and re-indexed in batches.

What these pin: reindex never materialises its documents (it reads them twice, plan then write, and writes
the first batch having read only that batch of the second pass); a source is re-read from disk, and one
that changed since it was checked is refused before anything is written; bad records late in a long
source still leave every stored document in place.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.corpus_store import CorpusStore
from storage.types import BadInputError, Document
from tasks.ingest.index import reindex
from tasks.ingest.sources import read_source
from tests.fakes import FakeEmbedder, make_docs


class Counted:
    """A re-iterable over documents that records, per pass, how many it has handed out so far."""

    def __init__(self, docs: list[Document]) -> None:
        self._docs = docs
        self.passes: list[int] = []

    def __iter__(self) -> Iterator[Document]:
        self.passes.append(0)
        for doc in self._docs:
            self.passes[-1] += 1
            yield doc


def _write_jsonl(path: Path, docs: list[Document], replace: dict[int, str] | None = None) -> Path:
    lines = [json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text, **d.metadata}) for d in docs]
    for index, line in (replace or {}).items():
        lines[index] = line
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_reindex_reads_the_source_twice_and_writes_the_first_batch_after_reading_only_it(tmp_store):
    source, fake = Counted(make_docs(50)), FakeEmbedder()
    seen_at_first_write: list[list[int]] = []
    encode = fake.encode

    def recording_encode(texts: list[str], *, queries: bool):
        if not seen_at_first_write:
            seen_at_first_write.append(list(source.passes))
        return encode(texts, queries=queries)

    fake.encode = recording_encode  # type: ignore[method-assign]
    report = reindex(tmp_store, "c", source, fake.space, lambda: fake, batch_docs=4)

    assert report.added == 50 and tmp_store.counts("c")["documents"] == 50
    assert seen_at_first_write == [[50, 4]]  # the whole plan pass, then one batch of the write pass
    assert source.passes == [50, 50]


def test_reindex_refuses_a_one_shot_iterator_before_writing(tmp_store, fake):
    with pytest.raises(TypeError, match="twice"):
        reindex(tmp_store, "c", iter(make_docs(3)), fake.space, lambda: fake)
    assert tmp_store.tables_of("c") == []


def test_source_documents_are_read_again_from_disk_on_each_iteration(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", make_docs(5))
    documents = read_source(path).documents

    assert len(documents) == 5
    assert [d.doc_id for d in documents] == [d.doc_id for d in documents] == [f"d{i}" for i in range(5)]
    _write_jsonl(path, make_docs(6))
    with pytest.raises(BadInputError, match="changed while it was being read"):
        list(documents)


def test_a_source_changed_after_its_check_is_refused_before_anything_is_written(tmp_path, fake):
    store = CorpusStore(str(tmp_path / "lancedb"))
    path = _write_jsonl(tmp_path / "d.jsonl", make_docs(8))
    reindex(store, "c", read_source(path).documents, fake.space, lambda: fake)
    before = store.versions("c")
    documents = read_source(path).documents
    _write_jsonl(path, make_docs(8, prefix="x"))  # every id gone: a plan from it would delete them all

    with pytest.raises(BadInputError, match="changed while it was being read"):
        reindex(store, "c", documents, fake.space, lambda: fake, batch_docs=2)
    assert store.versions("c") == before and store.counts("c")["documents"] == 8


def test_bad_records_late_in_a_long_source_lose_nothing_stored(tmp_path, fake):
    store = CorpusStore(str(tmp_path / "lancedb"))
    docs = make_docs(40)
    path = _write_jsonl(tmp_path / "d.jsonl", docs)
    reindex(store, "c", read_source(path).documents, fake.space, lambda: fake, batch_docs=4)
    before = store.versions("c")
    late = {37: json.dumps({"_id": "d37", "title": "", "text": " "}), 38: "{broken", 39: "[1, 2]"}
    _write_jsonl(path, docs, replace=late)

    with pytest.raises(BadInputError) as refused:  # without skip_bad: refused, naming every late record
        read_source(path)
    assert [p.location for p in refused.value.problems] == [f"{path}:{n}" for n in (38, 39, 40)]
    assert refused.value.problems[0].record_id == "d37"
    assert store.versions("c") == before

    read = read_source(path, skip_bad=True)
    report = reindex(
        store,
        "c",
        read.documents,
        fake.space,
        lambda: fake,
        batch_docs=4,
        skipped_ids=read.skipped_ids,
        skipped_without_id=read.skipped_without_id,
    )
    assert (report.unchanged, report.deleted, report.kept_skipped, report.kept_unverified) == (37, 0, 1, 2)
    assert store.counts("c")["documents"] == 40


def test_a_metadata_conflict_late_in_the_source_is_refused_before_anything_is_written(tmp_path, fake):
    store = CorpusStore(str(tmp_path / "lancedb"))
    docs = make_docs(30)  # metadata {"n": int}
    docs[27] = Document("d27", "title 27", "text", {"n": "twenty-seven"}, "")
    docs[29] = Document("d29", "title 29", "text", {"n": "twenty-nine"}, "")
    path = _write_jsonl(tmp_path / "d.jsonl", docs)

    with pytest.raises(BadInputError) as refused:
        reindex(store, "c", read_source(path).documents, fake.space, lambda: fake, batch_docs=4)

    assert [p.record_id for p in refused.value.problems] == ["d27", "d29"]  # each one named, not a sample
    assert refused.value.problems[0].location == f"{path}:28"
    assert store.tables_of("c") == [] and fake.encoded == []
