"""Query and passage prefixes: declared per model family, overridable, and really sent to the model."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import tasks.workspace as api
from storage.corpus_store import CorpusStore
from tasks.ingest.embed import ModelSpec, SentenceTransformerEmbedder, model_spec
from tasks.settings import get_settings
from tests.conftest import zsr_home_at
from tests.fakes import FakeEmbedder, make_docs

BGE = "Represent this sentence for searching relevant passages: "


@pytest.mark.parametrize(
    ("name", "query", "passage"),
    [
        ("intfloat/e5-small-v2", "query: ", "passage: "),
        ("intfloat/multilingual-E5-large", "query: ", "passage: "),  # matched case-insensitively
        ("BAAI/bge-small-en-v1.5", BGE, ""),
        ("nomic-ai/nomic-embed-text-v1.5", "search_query: ", "search_document: "),
        ("all-MiniLM-L6-v2", "", ""),
        ("/models/my-own-encoder", "", ""),
    ],
    ids=["e5", "e5-upper-case", "bge", "nomic", "minilm", "local-path"],
)
def test_declared_prefixes_per_family(name, query, passage):
    assert model_spec(name) == ModelSpec(name, query, passage)


@pytest.mark.parametrize(
    ("query", "passage", "expected"),
    [
        ("", None, ("", "passage: ")),  # an empty override means no prefix, not "use the declared one"
        (None, "", ("query: ", "")),
        ("", "", ("", "")),
        ("Q> ", "P> ", ("Q> ", "P> ")),
    ],
    ids=["empty-query", "empty-passage", "both-empty", "both-set"],
)
def test_overrides_replace_the_declared_prefixes(query, passage, expected):
    spec = model_spec("intfloat/e5-small-v2", query, passage)
    assert (spec.query_prefix, spec.passage_prefix) == expected
    assert model_spec("all-MiniLM-L6-v2", "Q> ", None) == ModelSpec("all-MiniLM-L6-v2", "Q> ", "")


class StubModel:
    """Stands in for a loaded sentence-transformers model; hands what it encodes to ``seen``."""

    def __init__(self, seen: list[list[str]]) -> None:
        self.seen = seen
        self.max_seq_length = 18
        self.tokenizer = None

    def get_embedding_dimension(self) -> int:
        return 4

    def encode(self, texts: list[str], **kwargs) -> np.ndarray:
        self.seen.append(list(texts))
        return np.ones((len(texts), 4))


class StubLibrary(types.ModuleType):
    """A ``sentence_transformers`` module whose ``SentenceTransformer`` records loads and encodings."""

    def __init__(self) -> None:
        super().__init__("sentence_transformers")
        self.loaded: list[tuple[str, dict]] = []
        self.encoded: list[list[str]] = []

    def SentenceTransformer(self, path: str, **kwargs) -> StubModel:
        self.loaded.append((path, kwargs))
        return StubModel(self.encoded)


@pytest.fixture
def stub_model(monkeypatch) -> StubLibrary:
    library = StubLibrary()
    monkeypatch.setitem(sys.modules, "sentence_transformers", library)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # restored afterwards; the embedder sets them if unset
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return library


@pytest.mark.parametrize(
    ("spec", "as_query", "as_passage"),
    [
        (model_spec("intfloat/e5-small-v2"), "query: ", "passage: "),
        (model_spec("BAAI/bge-small-en-v1.5"), BGE, ""),
        (model_spec("intfloat/e5-small-v2", "", ""), "", ""),
        (model_spec("some/unknown-model"), "", ""),
    ],
    ids=["e5", "bge", "e5-empty-overrides", "unknown"],
)
def test_the_prefix_reaches_the_model(stub_model, spec, as_query, as_passage):
    embedder = SentenceTransformerEmbedder(spec)
    assert stub_model.loaded == [(spec.name, {"device": None, "local_files_only": True})]
    assert (embedder.dim, embedder.max_tokens) == (4, 16)
    vectors = embedder.encode(["wing flutter", "shock"], queries=True)
    embedder.encode(["the wing flutters"], queries=False)
    assert stub_model.encoded == [
        [as_query + "wing flutter", as_query + "shock"],
        [as_passage + "the wing flutters"],
    ]
    assert vectors.dtype == np.float32 and vectors.shape == (2, 4)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ModelSpec("intfloat/e5-small-v2", "query: ", "passage: ")),
        ({"ZSR_QUERY_PREFIX": ""}, ModelSpec("intfloat/e5-small-v2", "", "passage: ")),
        (
            {"ZSR_QUERY_PREFIX": "Q> ", "ZSR_PASSAGE_PREFIX": ""},
            ModelSpec("intfloat/e5-small-v2", "Q> ", ""),
        ),
    ],
    ids=["declared", "empty-query-override", "both-overrides"],
)
def test_settings_reach_the_spec_the_library_indexes_with(monkeypatch, tmp_path, env, expected):
    loaded: list[ModelSpec] = []

    def load(spec, device=None, batch_size=32):
        loaded.append(spec)
        fake = FakeEmbedder()
        fake.spec = spec
        return fake

    monkeypatch.setattr(api, "load_embedder", load)
    for name in ("ZSR_QUERY_PREFIX", "ZSR_PASSAGE_PREFIX", "ZSR_LANCEDB_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ZSR_EMBEDDING_MODEL", "intfloat/e5-small-v2")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(f'{{"_id": "{d.doc_id}", "text": "{d.text}"}}\n' for d in make_docs(3)))
    with zsr_home_at(tmp_path / "home"):
        api.ingest(source, "notes")
        info = CorpusStore(get_settings().lancedb).corpus("notes")
    assert loaded == [expected]
    assert ModelSpec(info.model, info.query_prefix, info.passage_prefix) == expected
    # Searching embeds queries with the prefixes the corpus was indexed with, whatever the settings say now.
    monkeypatch.setenv("ZSR_QUERY_PREFIX", "changed: ")
    with zsr_home_at(tmp_path / "home"):
        api.searcher("notes").search("term1 wing", "dense", k=1)
    assert loaded[1:] and set(loaded) == {expected}
