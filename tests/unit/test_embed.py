"""Query and passage prefixes: declared per model family, overridable, and really sent to the model.

Also the model revision, the part of a vector space read from the installed model's files."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import tasks.workspace as api
from storage.corpus_store import CorpusStore
from storage.vector_space import VectorSpace
from tasks.ingest.embed import (
    UNRESOLVED,
    ModelMismatchError,
    SentenceTransformerEmbedder,
    installed_space,
    model_revision,
    vector_space,
)
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
    assert vector_space(name) == VectorSpace(
        name, model_revision(name), query_prefix=query, passage_prefix=passage
    )


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
    space = vector_space("intfloat/e5-small-v2", query, passage)
    assert (space.query_prefix, space.passage_prefix) == expected
    minilm = vector_space("all-MiniLM-L6-v2", "Q> ", None)
    assert (minilm.query_prefix, minilm.passage_prefix) == ("Q> ", "")


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
    ("space", "as_query", "as_passage"),
    [
        (vector_space("intfloat/e5-small-v2"), "query: ", "passage: "),
        (vector_space("BAAI/bge-small-en-v1.5"), BGE, ""),
        (vector_space("intfloat/e5-small-v2", "", ""), "", ""),
        (vector_space("some/unknown-model"), "", ""),
    ],
    ids=["e5", "bge", "e5-empty-overrides", "unknown"],
)
def test_the_prefix_reaches_the_model(stub_model, space, as_query, as_passage):
    embedder = SentenceTransformerEmbedder(space)
    assert stub_model.loaded == [(space.model, {"device": None, "local_files_only": True})]
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
        ({}, ("query: ", "passage: ")),
        ({"ZSR_QUERY_PREFIX": ""}, ("", "passage: ")),
        ({"ZSR_QUERY_PREFIX": "Q> ", "ZSR_PASSAGE_PREFIX": ""}, ("Q> ", "")),
    ],
    ids=["declared", "empty-query-override", "both-overrides"],
)
def test_settings_reach_the_space_the_library_indexes_with(monkeypatch, tmp_path, env, expected):
    loaded: list[VectorSpace] = []
    expected = vector_space("intfloat/e5-small-v2", *expected)

    def load(space, device=None, batch_size=32):
        loaded.append(space)
        fake = FakeEmbedder()
        fake.space = space
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
        api.Workspace.open().ingest(source, "notes")
        info = CorpusStore(get_settings().lancedb).registry.corpus("notes")
    assert loaded == [expected]
    assert info.space == expected
    # Searching embeds queries with the prefixes the corpus was indexed with, whatever the settings say now.
    monkeypatch.setenv("ZSR_QUERY_PREFIX", "changed: ")
    with zsr_home_at(tmp_path / "home"):
        api.Workspace.open().searcher("notes").search("term1 wing", "dense", k=1)
    assert loaded[1:] and set(loaded) == {expected}


def test_the_revision_names_the_model_files_and_not_their_read_me(tmp_path):
    model = tmp_path / "encoder"
    (model / "1_Pooling").mkdir(parents=True)
    (model / "1_Pooling" / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"0" * 64)
    first = model_revision(str(model))
    (model / "README.md").write_text("about the model")
    (model / ".gitattributes").write_text("*")
    assert model_revision(str(model)) == first  # no vector depends on them
    (model / "model.safetensors").write_bytes(b"0" * 65)  # new weights: a new revision
    assert model_revision(str(model)) != first
    assert model_revision(str(tmp_path / "nowhere")) == UNRESOLVED


def test_an_installed_model_of_another_revision_is_refused(stub_model, tmp_path):
    model = tmp_path / "encoder"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"0" * 64)
    space = vector_space(str(model))
    SentenceTransformerEmbedder(space)  # the revision the space names
    (model / "model.safetensors").write_bytes(b"1" * 128)
    with pytest.raises(ModelMismatchError, match=f"not the revision {space.revision}"):
        SentenceTransformerEmbedder(space)
    assert stub_model.loaded == [(str(model), {"device": None, "local_files_only": True})]  # never loaded
    assert SentenceTransformerEmbedder(dataclasses.replace(space, revision=model_revision(str(model))))


def test_a_format_1_corpus_gets_the_space_of_its_model_as_installed():
    assert installed_space("all-MiniLM-L6-v2", "", "") == vector_space("all-MiniLM-L6-v2", "", "")
    with pytest.raises(ValueError, match="not installed"):
        installed_space(str(Path("/no/such/model")), "", "")
