"""Query drift compensation with real models: a known linear drift of MiniLM is mapped back (cosine ~1).

Both models are the packaged MiniLM with extra ``models.Dense`` layers (identity activation, no bias), saved
to a temporary folder: the "old" one projects onto 32 orthonormal directions (a real model whose drift map
is 32 x 32, so a slice of Cranfield gives enough pairs to fit it), the "new" one then rotates by a known
random orthogonal matrix. Compensation must undo the rotation for queries it never saw.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.ingest.embed import resolve_model_path
from tasks.settings import Settings
from tasks.workspace import Workspace

pytestmark = pytest.mark.slow
DATA = Path(__file__).resolve().parents[2] / "bench" / "data" / "cranfield"
DIM = 32


def save_with_layers(base: Any, folder: Path, layers: list[np.ndarray]) -> Path:
    """``base`` followed by one linear layer per matrix (``x -> x @ m``), saved to ``folder``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    dense = [
        Dense(
            m.shape[0],
            m.shape[1],
            bias=False,
            activation_function=torch.nn.Identity(),
            init_weight=torch.tensor(m.T.copy()),  # torch's Linear computes x @ weight.T
        )
        for m in layers
    ]
    SentenceTransformer(modules=[*base, *dense], device="cpu").save(str(folder))
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    from sentence_transformers import SentenceTransformer

    rng = np.random.default_rng(7)
    projection = np.linalg.qr(rng.standard_normal((384, DIM)))[0].astype(np.float32)
    rotation = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0].astype(np.float32)
    root = tmp_path_factory.mktemp("models")
    base = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device="cpu")
    old = save_with_layers(base, root / "old", [projection])
    new = save_with_layers(base, root / "new", [projection, rotation])
    return old, new, rotation


def test_compensation_maps_a_known_rotation_of_a_real_model_back(models, tmp_path):
    old, new, rotation = models
    source = tmp_path / "slice.jsonl"
    with (DATA / "corpus.jsonl").open() as lines:
        source.write_text("".join(itertools.islice(lines, 40)))
    with (DATA / "queries.jsonl").open() as lines:
        queries = {q["_id"]: q["text"] for q in map(json.loads, itertools.islice(lines, 20))}
    ws = Workspace(Settings(home=tmp_path / "home", embedding_model=str(old)))
    ws.ingest(source, "cran")
    plain = ws.searcher("cran").search_batch(queries, "dense", k=10)

    report, _ = ws.ingest(source, "cran", model=str(new), compensate_only=True)
    assert report.upgrade is not None and not report.upgrade["switched"]
    assert report.upgrade["cosine_after"] > 0.999  # held-out views
    searcher = ws.searcher("cran")
    texts = list(queries.values())
    mapped, direct = searcher.compensated(texts), searcher.encode(texts, queries=True)
    assert np.sum(mapped * direct, axis=1).min() > 0.999  # queries the map never saw
    assert np.sum(mapped @ rotation * direct, axis=1).max() < 0.9  # and the drift was real
    compensated = searcher.search_batch(queries, "dense(compensate=true)", k=10)
    assert {q: [d for d, _ in r[:3]] for q, r in compensated.items()} == {
        q: [d for d, _ in r[:3]] for q, r in plain.items()
    }

    report, _ = ws.ingest(source, "cran", model=str(new))
    assert report.upgrade is not None and report.upgrade["switched"]
    assert ws.store.registry.corpus("cran").space.model == str(new)
    moved = ws.searcher("cran").search_batch(queries, "dense", k=10)  # a rotation keeps every cosine
    assert {q: [d for d, _ in r[:3]] for q, r in moved.items()} == {
        q: [d for d, _ in r[:3]] for q, r in plain.items()
    }
