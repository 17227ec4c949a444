from __future__ import annotations

import itertools

from storage.types import Document
from tasks.ingest.chunking import chunk_documents, windows
from tests.fakes import FakeEmbedder


def test_windows_cover_every_token_with_overlap():
    spans = windows(40, 16, 4)
    assert spans[0] == (0, 16)
    assert spans[-1][1] == 40
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end - start == 4  # consecutive windows share exactly the overlap
    assert all(end - start <= 16 for start, end in spans)


def test_short_document_stays_one_chunk():
    assert windows(5, 16, 4) == [(0, 5)]
    doc = Document("a", "Title", "few words only")
    chunks = chunk_documents([doc], FakeEmbedder(max_tokens=16), overlap=4)
    assert [(c.ordinal, c.text) for c in chunks] == [(0, "Title few words only")]


def test_long_document_chunks_fit_the_model_window():
    fake = FakeEmbedder(max_tokens=16)
    text = " ".join(f"w{i}" for i in range(100))
    chunks = chunk_documents([Document("a", "The title", text)], fake, overlap=4)
    assert len(chunks) > 1
    for chunk in chunks:
        tokens = fake.token_offsets([fake.space.passage_prefix + chunk.text])[0]
        assert len(tokens) <= fake.max_tokens  # prefix + title + body fit
        assert chunk.text.startswith("The title ")
    bodies = [c.text.removeprefix("The title ").split() for c in chunks]
    assert bodies[0][0] == "w0" and bodies[-1][-1] == "w99"
    assert bodies[0][-4:] == bodies[1][:4]  # overlap of 4 tokens
    assert len({c.view_id for c in chunks}) == len(chunks)


def test_chunk_ids_are_derived_from_content():
    doc = Document("a", "t", " ".join(f"w{i}" for i in range(50)))
    first = chunk_documents([doc], FakeEmbedder(), overlap=2)
    again = chunk_documents([doc], FakeEmbedder(), overlap=2)
    assert [c.view_id for c in first] == [c.view_id for c in again]
    edited = chunk_documents([Document("a", "t", doc.text + " extra")], FakeEmbedder(), overlap=2)
    assert first[0].view_id == edited[0].view_id  # untouched leading chunk keeps its id
    assert first[-1].view_id != edited[-1].view_id
