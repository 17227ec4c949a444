"""The ONNX backends with the real model: their vectors are the torch ones (int8: nearly), their exports are
made once per home, and a corpus indexed with one backend never takes another's cached vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tasks.ingest.onnx as onnx
from tasks.ingest.chunking import chunk_documents
from tasks.ingest.embed import Embedder, load_embedder, vector_space
from tasks.ingest.onnx import OnnxEmbedder
from tasks.ingest.sources import read_source
from tasks.settings import Settings
from tasks.workspace import Workspace

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CRANFIELD = ROOT / "bench" / "data" / "cranfield"
MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """One models folder for the module: each backend is exported into it once."""
    return tmp_path_factory.mktemp("home") / "models"


@pytest.fixture(scope="module")
def torch() -> Embedder:
    return load_embedder(vector_space(MODEL))


@pytest.fixture(scope="module")
def texts(torch) -> list[str]:
    """Cranfield chunks (full windows among them) and queries, as ingest and search encode them."""
    docs = list(read_source(CRANFIELD, fmt="beir", skip_bad=True).documents)[:24]
    return [c.text for c in chunk_documents(docs, torch, overlap=32)]


@pytest.fixture(scope="module")
def queries() -> list[str]:
    lines = (CRANFIELD / "queries.jsonl").read_text().splitlines()[:32]
    return [json.loads(line)["text"] for line in lines]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


@pytest.mark.parametrize(("backend", "floor"), [("onnx", 0.9999), ("onnx-int8", 0.98)])
def test_onnx_vectors_are_the_torch_vectors(models, torch, texts, queries, backend, floor):
    embedder = OnnxEmbedder(vector_space(MODEL, backend=backend), models)
    assert (embedder.dim, embedder.max_tokens) == (torch.dim, torch.max_tokens)
    assert embedder.token_offsets(texts) == torch.token_offsets(texts)
    for batch, as_queries in ((texts, False), (queries, True)):
        vectors = embedder.encode(batch, queries=as_queries)
        assert vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
        assert cosines(vectors, torch.encode(batch, queries=as_queries)).min() >= floor
    assert embedder.encode([], queries=True).shape == (0, torch.dim)


def test_the_export_is_reused_on_the_next_load(models, monkeypatch):
    space, int8 = vector_space(MODEL, backend="onnx"), vector_space(MODEL, backend="onnx-int8")
    OnnxEmbedder(space, models)  # each exported here or by the test above
    OnnxEmbedder(int8, models)
    graph = onnx.export_folder(space, models) / onnx.GRAPH
    written = graph.stat().st_mtime_ns

    def refuse(*args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx, "_export_float32", refuse)
    monkeypatch.setattr(onnx, "_quantise", refuse)
    OnnxEmbedder(space, models)
    OnnxEmbedder(int8, models)
    assert graph.stat().st_mtime_ns == written


def test_a_corrupt_export_is_made_again_and_encodes_right(models, torch, queries):
    space = vector_space(MODEL, backend="onnx-int8")
    OnnxEmbedder(space, models)
    graph = onnx.export_folder(space, models) / onnx.GRAPH
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])  # a copy cut short
    embedder = OnnxEmbedder(space, models)
    assert cosines(embedder.encode(queries, queries=True), torch.encode(queries, queries=True)).min() >= 0.98


def test_a_corpus_ingested_with_int8_encodes_its_own_vectors(tmp_path):
    source = tmp_path / "docs.jsonl"
    docs = list(read_source(CRANFIELD, fmt="beir", skip_bad=True).documents)[:4]
    source.write_text("".join(json.dumps({"_id": d.doc_id, "text": d.text}) + "\n" for d in docs))
    home = tmp_path / "home"
    torch_ws = Workspace.open(Settings(home=home))
    first, _ = torch_ws.ingest(source, "torch")
    again, _ = torch_ws.ingest(source, "torch-again")  # the same backend: every chunk from the cache
    int8, _ = Workspace.open(Settings(home=home, embedding_backend="onnx-int8")).ingest(source, "int8")
    assert first.chunks_encoded > 0 and again.chunks_encoded == 0
    assert int8.chunks_encoded == first.chunks_encoded
    assert torch_ws.store.registry.corpus("int8").space.backend == "onnx-int8"
