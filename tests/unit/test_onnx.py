"""The encoding backend setting and the ONNX export's bookkeeping, without the real model (tests/integration
/test_onnx.py holds the exported vectors to the torch ones)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

import tasks.ingest.onnx as onnx
import tasks.workspace
from storage.vector_space import VectorSpace
from tasks.ingest.embed import ModelMismatchError, load_embedder, vector_space
from tasks.settings import Settings
from tasks.workspace import Workspace, embedder_factory
from tests.conftest import zsr_home_at
from tests.fakes import FakeEmbedder

MODEL = "all-MiniLM-L6-v2"  # installed, so its revision is known; never loaded here


def test_each_backend_is_its_own_space_and_torch_keeps_the_key_it_had():
    keys = {b: vector_space(MODEL, backend=b).key for b in ("sentence-transformers", "onnx", "onnx-int8")}
    assert len(set(keys.values())) == 3
    space = vector_space(MODEL)
    assert (
        keys["sentence-transformers"]
        == VectorSpace(
            space.model, space.revision, query_prefix=space.query_prefix, passage_prefix=space.passage_prefix
        ).key
    )


def test_settings_refuse_a_backend_they_do_not_know():
    with pytest.raises(ValidationError, match="embedding_backend"):
        Settings(embedding_backend="tensorrt")  # type: ignore[arg-type]


def test_each_space_is_run_by_its_backend(tmp_path, monkeypatch):
    loaded = []
    monkeypatch.setattr(tasks.workspace, "load_onnx_embedder", lambda *args: loaded.append(("onnx", *args)))
    monkeypatch.setattr(tasks.workspace, "load_embedder", lambda *args: loaded.append(("torch", *args)))
    settings = Settings(home=tmp_path, batch_size=8, device="cpu")
    int8, torch = vector_space(MODEL, backend="onnx-int8"), vector_space(MODEL)
    embedder_factory(int8, settings)()
    embedder_factory(torch, settings)()
    assert loaded == [("onnx", int8, tmp_path / "models", 8), ("torch", torch, "cpu", 8)]


def test_sentence_transformers_refuses_a_space_of_another_backend():
    with pytest.raises(ValueError, match="'onnx' is not run by sentence-transformers"):
        load_embedder.__wrapped__(vector_space(MODEL, backend="onnx"))


# -- which backend a corpus gets ------------------------------------------------------------------------
@pytest.fixture
def source(tmp_path, monkeypatch) -> Path:
    """A three-document source; the workspace's model is the fake, standing in for the space it is asked."""
    for loader in ("load_embedder", "load_onnx_embedder"):
        monkeypatch.setattr(tasks.workspace, loader, lambda space, *args: FakeEmbedder(space=space))
    path = tmp_path / "docs.jsonl"
    lines = (json.dumps({"_id": f"d{i}", "text": f"wing flow term{i}"}) for i in range(3))
    path.write_text("".join(line + "\n" for line in lines))
    return path


def ingest(home: Path, source: Path, **settings: str) -> VectorSpace:
    ws = Workspace.open(Settings(home=home, **settings))  # type: ignore[arg-type]
    ws.ingest(source, "c")
    return ws.store.registry.corpus("c").space


def test_a_new_corpus_gets_the_configured_backend_and_is_searched_with_it(tmp_path, source, monkeypatch):
    space = ingest(tmp_path / "home", source, embedding_backend="onnx-int8")
    assert space.backend == "onnx-int8"
    asked: list[VectorSpace] = []

    def load(space: VectorSpace, *args: object) -> FakeEmbedder:
        asked.append(space)
        return FakeEmbedder(space=space)

    monkeypatch.setattr(tasks.workspace, "load_embedder", load)
    monkeypatch.setattr(tasks.workspace, "load_onnx_embedder", load)
    with zsr_home_at(tmp_path / "home"):  # ZSR_EMBEDDING_BACKEND unset: the corpus's own backend answers
        assert Workspace.open().search("c", "term1", "dense", k=1)[0][0] == "d1"
    assert [s.backend for s in asked] == ["onnx-int8"]


def test_an_unset_backend_leaves_an_existing_corpus_on_its_own(tmp_path, source):
    ingest(tmp_path / "home", source, embedding_backend="onnx")
    assert ingest(tmp_path / "home", source).backend == "onnx"


def test_asking_another_backend_for_an_existing_corpus_is_refused(tmp_path, source):
    ingest(tmp_path / "home", source)
    with pytest.raises(ModelMismatchError, match="backend 'sentence-transformers' vs 'onnx'"):
        ingest(tmp_path / "home", source, embedding_backend="onnx")


# -- the export: made once, reused, redone when unsound --------------------------------------------------
@pytest.fixture
def exports(monkeypatch) -> list[Path]:
    """Stub exporter and quantiser writing small files: the folders each export was staged in."""
    staged: list[Path] = []

    def export(space: VectorSpace, folder: Path) -> dict:
        staged.append(folder)
        (folder / onnx.GRAPH).write_bytes(b"graph " * 100)
        (folder / "tokenizer.json").write_text("{}")
        return {"dim": 4, "max_seq_length": 8, "inputs": ["input_ids"]}

    def quantise(source: dict, float32: Path, folder: Path) -> dict:
        staged.append(folder)
        (folder / onnx.GRAPH).write_bytes((float32 / onnx.GRAPH).read_bytes()[:50])
        return {"dim": 4, "max_seq_length": 8, "inputs": ["input_ids"]}

    monkeypatch.setattr(onnx, "_export_float32", export)
    monkeypatch.setattr(onnx, "_quantise", quantise)
    return staged


def test_the_export_is_made_once_then_reused(tmp_path, exports):
    space = vector_space(MODEL, backend="onnx")
    first = onnx.ensure_export(space, tmp_path)
    assert onnx.ensure_export(space, tmp_path) == first
    assert len(exports) == 1
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == [onnx.export_folder(space, tmp_path).name]


def test_int8_is_quantised_from_the_float32_export(tmp_path, exports):
    onnx.ensure_export(vector_space(MODEL, backend="onnx-int8"), tmp_path)
    onnx.ensure_export(vector_space(MODEL, backend="onnx"), tmp_path)
    assert len(exports) == 2  # float32 once (reused by the second call), int8 once


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda f: (f / onnx.GRAPH).write_bytes(b"graph "), id="truncated-graph"),
        pytest.param(lambda f: (f / "tokenizer.json").write_text('{"x": 1}'), id="altered-tokenizer"),
        pytest.param(lambda f: (f / onnx.MANIFEST).unlink(), id="no-manifest"),
        pytest.param(lambda f: (f / onnx.MANIFEST).write_text("{"), id="half-written-manifest"),
        pytest.param(lambda f: (f / onnx.GRAPH).unlink(), id="no-graph"),
    ],
)
def test_an_unsound_export_is_made_again_not_loaded(tmp_path, exports, damage):
    space = vector_space(MODEL, backend="onnx")
    sound = onnx.ensure_export(space, tmp_path)
    folder = onnx.export_folder(space, tmp_path)
    damage(folder)
    assert onnx.read_manifest(folder) is None
    assert onnx.ensure_export(space, tmp_path) == sound
    assert len(exports) == 2
    assert onnx.read_manifest(folder) == sound


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    def export(space: VectorSpace, folder: Path) -> dict:
        (folder / onnx.GRAPH).write_bytes(b"half a graph")
        raise RuntimeError("killed midway")

    monkeypatch.setattr(onnx, "_export_float32", export)
    with pytest.raises(RuntimeError, match="killed midway"):
        onnx.ensure_export(vector_space(MODEL, backend="onnx"), tmp_path)
    assert list((tmp_path / "onnx").iterdir()) == []


def test_an_export_of_another_revision_is_refused(tmp_path, exports):
    stale = VectorSpace(MODEL, "0123456789abcdef", backend="onnx")
    with pytest.raises(ModelMismatchError, match="revision 0123456789abcdef"):
        onnx.ensure_export(stale, tmp_path)
    assert exports == []


def test_a_backend_this_zsr_does_not_know_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'openvino' is not one this zsr runs"):
        onnx.ensure_export(vector_space(MODEL, backend="openvino"), tmp_path)
