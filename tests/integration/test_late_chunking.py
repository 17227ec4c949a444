"""Late chunking with the real MiniLM: context, the one-chunk identity, macro windows, its own space."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from storage.embedding_cache import cache_table
from storage.types import Document
from tasks.ingest.chunking import chunk_documents
from tasks.ingest.embed import load_embedder, vector_space
from tasks.ingest.late import LATE, contextual_tokens, embed_late, token_model
from tasks.settings import Settings
from tasks.workspace import Workspace

pytestmark = pytest.mark.slow
CRANFIELD = Path(__file__).resolve().parents[2] / "bench" / "data" / "cranfield" / "corpus.jsonl"


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(vector_space("all-MiniLM-L6-v2", chunking=LATE))


@pytest.fixture(scope="module")
def abstracts() -> list[str]:
    with CRANFIELD.open() as lines:
        return [json.loads(line)["text"] for line, _ in zip(lines, range(40), strict=False)]


def late(store, embedder, docs: list[Document]) -> tuple[list, list[np.ndarray]]:
    chunks = chunk_documents(docs, embedder, overlap=32)
    keys, vectors, _ = embed_late(store, embedder, docs, chunks)
    return chunks, [vectors[k] for k in keys]


def test_one_pass_takes_every_position_and_queries_keep_their_window(embedder):
    assert token_model(embedder).limit == 510  # 512 positions less [CLS] and [SEP]
    assert embedder.model.max_seq_length == 256  # the shared model is left as it was


def test_the_same_chunk_text_in_two_documents_gets_two_vectors(tmp_store, embedder, abstracts):
    shared = " ".join(abstracts[:2])
    one = Document("a", "Wings", f"{shared} {' '.join(abstracts[2:4])}")
    other = Document("b", "Wings", f"{shared} {' '.join(abstracts[10:12])}")
    chunks, vectors = late(tmp_store, embedder, [one, other])
    first = [i for i, c in enumerate(chunks) if c.ordinal == 0]
    assert chunks[first[0]].text == chunks[first[1]].text
    assert float(vectors[first[0]] @ vectors[first[1]]) < 0.999


def test_a_one_chunk_document_gets_the_naive_vector(tmp_store, embedder, abstracts):
    docs = [Document(f"d{i}", f"title {i}", text) for i, text in enumerate(abstracts)]
    docs = [d for d in docs if len(chunk_documents([d], embedder, overlap=32)) == 1][:10]
    chunks, vectors = late(tmp_store, embedder, docs)
    assert len(chunks) == len(docs) == 10
    naive = embedder.encode([c.text for c in chunks], queries=False)
    assert min(float(v @ n) for v, n in zip(vectors, naive, strict=True)) >= 0.9999


def test_a_document_beyond_the_position_limit_goes_in_macro_windows(tmp_store, embedder, abstracts):
    text = " ".join(abstracts[:12])
    model = token_model(embedder)
    (whole,) = contextual_tokens(model, [text])
    assert len(whole.offsets) > 2 * model.limit and whole.specials is None
    assert whole.vectors.shape == (len(whole.offsets), embedder.dim)
    # The first window's tokens are those of a single pass over the text cut after its last token.
    cut = text[: whole.offsets[model.limit - 1][1]]
    (alone,) = contextual_tokens(model, [cut])
    assert alone.specials is not None  # one pass
    a, b = whole.vectors[: model.limit], alone.vectors
    cosines = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosines.min() >= 0.9999
    chunks, vectors = late(tmp_store, embedder, [Document("long", "Aerodynamics", text)])
    assert len(vectors) == len(chunks) > 4
    naive = embedder.encode([c.text for c in chunks], queries=False)
    # each chunk's vector stays nearest its own text's, in the last window as in the first
    assert [int(np.argmax(naive @ v)) for v in vectors] == list(range(len(chunks)))


def test_a_late_corpus_has_its_own_space_cache_and_search(tmp_path, abstracts):
    source = tmp_path / "docs.jsonl"
    docs = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(abstracts[:8])]
    source.write_text("".join(json.dumps(d) + "\n" for d in docs))
    ws = Workspace.open(Settings(home=tmp_path / "home"))
    naive, _ = ws.ingest(source, "naive")
    late_report, _ = ws.ingest(source, "late", chunking=LATE)
    spaces = {name: ws.store.registry.corpus(name).space for name in ("naive", "late")}
    assert spaces["naive"].key != spaces["late"].key and spaces["late"].chunking == LATE
    assert late_report.chunks_encoded == naive.chunks_encoded  # nothing taken from the naive cache
    assert all(ws.store.lance.exists(cache_table(s, "passage")) for s in spaces.values())
    assert ws.search("late", abstracts[3][:200], method="dense", k=1)[0][0] == "d3"
