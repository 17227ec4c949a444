"""Late chunking's defining steps, on a fake model whose token vectors carry their window's context.

The real MiniLM runs the same checks in tests/integration/test_late_chunking.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from storage.corpus_store import CorpusStore
from storage.embedding_cache import cache_table
from storage.ids import content_hash
from storage.types import Document
from tasks.ingest.chunking import chunk_documents, join_title
from tasks.ingest.embed import ModelMismatchError
from tasks.ingest.index import reindex
from tasks.ingest.late import LATE, Tokens, contextual_tokens, embed_late, pool
from tasks.methods.search import Searcher
from tests.conftest import zsr_home_at
from tests.fakes import WORD, FakeEmbedder, make_docs


class LateFake(FakeEmbedder):
    """A fake with token vectors: each word's one-hot plus the mean one-hot of its window (its context).

    So a token's vector depends on every word its forward pass saw, as a transformer's does. Its two special
    tokens differ from every word (one of them points along an axis of its own), and :meth:`encode` pools
    a text as a mean-pooling model does: one pass, the mean of every token's vector, special ones included.
    """

    def __init__(self, limit: int = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        self.limit = limit
        self.windows: list[list[int]] = []  # every window a forward pass read

    def tokenize(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        out = []
        for text in texts:
            words = list(WORD.finditer(text))
            ids = [int(hashlib.md5(m[0].lower().encode()).hexdigest(), 16) % self.dim for m in words]
            out.append((ids, [m.span() for m in words]))
        return out

    def forward(self, windows: Sequence[Sequence[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for window in windows:
            self.windows.append(list(window))
            onehots = np.eye(self.dim, dtype=np.float32)[list(window)]
            context = onehots.mean(axis=0) if len(window) else np.zeros(self.dim, np.float32)
            out.append((onehots + context, np.stack([context, np.eye(self.dim, dtype=np.float32)[0]])))
        return out

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        self.encoded += texts
        pooled = []
        for ids, _ in self.tokenize(texts):
            vectors, specials = self.forward([ids])[0]
            pooled.append(np.concatenate([vectors, specials]).mean(axis=0))
        out = np.stack(pooled)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def late_space(fake: FakeEmbedder):
    return dataclasses.replace(fake.space, chunking=LATE)


def late_fake(**kwargs) -> LateFake:
    fake = LateFake(**kwargs)
    fake.space = late_space(fake)
    return fake


def late_vectors(fake: LateFake, docs: list[Document], tmp_store: CorpusStore) -> list[np.ndarray]:
    chunks = chunk_documents(docs, fake, overlap=4)
    keys, vectors, _ = embed_late(tmp_store, fake, docs, chunks)
    return [vectors[k] for k in keys]


def words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def test_a_chunk_vector_depends_on_the_rest_of_its_document(tmp_store):
    fake = late_fake(max_tokens=16)
    shared = words("w", 20)
    one, other = (
        Document("a", "T", f"{shared} {words('x', 20)}"),
        Document("b", "T", f"{shared} {words('y', 20)}"),
    )
    chunks = chunk_documents([one, other], fake, overlap=4)
    first = [c for c in chunks if c.ordinal == 0]
    assert first[0].text == first[1].text  # the same chunk text in both documents ...
    keys, vectors, encoded = embed_late(tmp_store, fake, [one, other], chunks)
    a, b = (vectors[k] for k, c in zip(keys, chunks, strict=True) if c.ordinal == 0)
    assert a @ b < 0.999  # ... and two vectors, each made in its own document's context
    naive = fake.encode([first[0].text], queries=False)[0]
    assert a @ naive < 0.999 and b @ naive < 0.999
    assert encoded == len(set(keys)) == len(chunks)  # keyed by document and span, never by text alone


def test_a_one_chunk_document_gets_the_naive_vector(tmp_store):
    fake = late_fake()
    docs = [
        Document("a", "Shock waves", "shock wave boundary layer interaction at mach three"),
        *make_docs(3),
    ]
    chunks = chunk_documents(docs, fake, overlap=4)
    assert len(chunks) == len(docs)
    late = late_vectors(fake, docs, tmp_store)
    naive = fake.encode([fake.space.passage_prefix + c.text for c in chunks], queries=False)
    assert [round(float(v @ n), 4) for v, n in zip(late, naive, strict=True)] == [1.0] * len(docs)


def test_macro_windows_give_each_token_the_context_of_its_own_window():
    fake = late_fake(limit=12)
    text = words("w", 40)
    (tokens,) = contextual_tokens(fake, [text])
    # 40 tokens in windows of 12 that repeat 6 tokens of left context: [0,12) [6,18) ... [30,40)
    assert [len(w) for w in fake.windows] == [12, 12, 12, 12, 12, 10]
    assert tokens.vectors.shape == (40, fake.dim) and tokens.specials is None
    ((ids, _),) = fake.tokenize([text])
    assert [int(np.argmax(v)) for v in tokens.vectors] == ids  # each row is its own token's
    source = [0] * 12 + [w for w in range(1, 5) for _ in range(6)] + [5] * 4  # the window each row came from

    def changed_rows(edited: str) -> set[int]:
        (other,) = contextual_tokens(fake, [edited])
        return {i for i in range(40) if not np.allclose(tokens.vectors[i], other.vectors[i])}

    # w0 is read by the first window only: the rows it changes are that window's, all of them
    assert changed_rows(text.replace("w0 ", "zz ", 1)) == set(range(12))
    # w35 is read by windows [24,36) and [30,40): the rows those windows gave, [30,40), and no other
    assert changed_rows(text.replace("w35", "zz")) == {i for i in range(40) if source[i] in (4, 5)}


def test_a_chunk_pools_the_prefix_title_and_its_own_body():
    passage = "p: Title a b c d e"  # prefix "p: ", title, then the body "a b c d e"
    offsets = [m.span() for m in WORD.finditer(passage)]
    tokens = Tokens(offsets, np.eye(8, dtype=np.float32)[:7], np.eye(8, dtype=np.float32)[7:])
    head = len("p: Title ")
    pooled = pool(tokens, head, (2, 5), whole=False)  # the body's "b c"
    assert np.flatnonzero(pooled).tolist() == [0, 1, 3, 4]  # p, Title, b, c: no special token
    whole = pool(tokens, head, (0, 9), whole=True)
    assert np.flatnonzero(whole).tolist() == list(range(8))  # everything, the special token too


def test_a_document_longer_than_a_pass_gets_a_vector_per_chunk(tmp_store):
    fake = late_fake(limit=12, max_tokens=16)
    doc = Document("long", "T", words("w", 60))
    vectors = late_vectors(fake, [doc], tmp_store)
    chunks = chunk_documents([doc], fake, overlap=4)
    assert len(vectors) == len(chunks) > 3 and len(fake.windows) > 1
    assert np.allclose([np.linalg.norm(v) for v in vectors], 1.0, atol=1e-5)
    naive = fake.encode([fake.space.passage_prefix + c.text for c in chunks], queries=False)
    # each chunk pools its own tokens: its vector is nearest to its own text's
    assert [int(np.argmax(naive @ v)) for v in vectors] == list(range(len(chunks)))


def test_late_chunking_is_its_own_space_and_cache(tmp_store):
    naive, late = FakeEmbedder(max_tokens=16), late_fake(max_tokens=16)
    docs = [Document("long", "T", words("w", 50)), *make_docs(4)]
    first = reindex(tmp_store, "naive", docs, naive.space, lambda: naive)
    report = reindex(tmp_store, "late", docs, late.space, lambda: late)
    assert naive.space.key != late.space.key
    assert tmp_store.registry.corpus("late").space.chunking == LATE
    # the naive cache holds every chunk text already, and none of it is taken
    assert report.chunks_encoded == report.chunks_written == first.chunks_written and late.encoded == []
    passage = {cache_table(s, "passage") for s in (naive.space, late.space)}
    assert len(passage) == 2 and all(tmp_store.lance.exists(name) for name in passage)
    rows = tmp_store.views.table("late", late.space).to_arrow().to_pylist()
    assert not {r["content_hash"] for r in rows} & {content_hash(r["text"]) for r in rows}
    searcher = Searcher(tmp_store, "late", lambda: late)
    assert searcher.search("term2 wing", "dense", k=1)[0][0] == "d2"


def test_an_edit_re_encodes_every_chunk_of_its_document_and_nothing_else(tmp_store):
    fake = late_fake(max_tokens=16)
    docs = [Document("long", "T", words("w", 50)), *make_docs(4)]
    first = reindex(tmp_store, "c", docs, fake.space, lambda: fake)
    edited = [Document("long", "T", words("w", 50) + " tail"), *make_docs(4)]
    again = reindex(tmp_store, "c", edited, fake.space, lambda: fake)
    long_chunks = len(chunk_documents(edited[:1], fake, overlap=32))
    # the first chunks' text is unchanged, yet their context is not: all are encoded again
    assert (again.changed, again.chunks_encoded, again.chunks_cached) == (1, long_chunks, 0)
    relabelled = [dataclasses.replace(d, metadata={"n": 99}) for d in edited]  # no vector sees metadata
    third = reindex(tmp_store, "c", relabelled, fake.space, lambda: fake)
    assert (third.changed, third.chunks_encoded) == (5, 0)
    assert first.chunks_encoded == first.chunks_written


def test_ingest_records_late_chunking_in_the_corpus_space(tmp_path, monkeypatch):
    monkeypatch.setattr("tasks.workspace.load_embedder", lambda space, *args: LateFake(space=space))
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"_id": d.doc_id, "text": d.text}) + "\n" for d in make_docs(5)))

    def ingest(*options: str):
        return CliRunner().invoke(app, ["ingest", str(source), "--corpus", "k", "--json", *options])

    with zsr_home_at(tmp_path / "home"):
        assert ingest("--chunking", "late").exit_code == 0
        store = CorpusStore(str(tmp_path / "home" / "lancedb"))
        assert store.registry.corpus("k").space.chunking == LATE
        source.write_text(source.read_text() + json.dumps({"_id": "new", "text": "flow heat"}) + "\n")
        result = ingest()  # no flag: the corpus's own chunking
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["added"] == 1
        assert store.registry.corpus("k").space.chunking == LATE
        refused = ingest("--chunking", "tokens")
        assert refused.exit_code != 0
        assert "chunking 'late' vs 'tokens'" in " ".join(refused.output.split())


def test_a_model_without_token_vectors_is_refused_by_name(tmp_store):
    fake = FakeEmbedder()
    fake.space = late_space(fake)
    with pytest.raises(ValueError, match="--chunking tokens"):
        reindex(tmp_store, "c", make_docs(2), fake.space, lambda: fake)
    assert tmp_store.registry.get("c") is None  # refused before anything was written


def test_a_chunk_span_is_where_its_body_lies_in_the_text():
    doc = Document("a", "The title", words("w", 50))
    chunks = chunk_documents([doc], FakeEmbedder(), overlap=4)
    assert len(chunks) > 1 and chunks[0].span[0] == 0 and chunks[-1].span[1] == len(doc.text)
    assert all(c.text == join_title(doc.title, doc.text[slice(*c.span)]) for c in chunks)


def test_the_reindex_form_offers_the_chunkings():
    from prefect.utilities.callables import parameter_schema

    from flows.reindex import reindex as flow

    prop = parameter_schema(flow).model_dump()["properties"]["chunking"]
    assert prop["anyOf"][0]["enum"] == ["tokens", "late"] and prop["default"] is None


def test_a_chunking_asked_of_an_existing_corpus_must_be_its_own(tmp_store):
    fake = FakeEmbedder()
    reindex(tmp_store, "c", make_docs(2), fake.space, lambda: fake)
    with pytest.raises(ModelMismatchError, match="chunking 'tokens' vs 'late'"):
        reindex(tmp_store, "c", make_docs(3), late_space(fake), lambda: late_fake())
