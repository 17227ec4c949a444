"""Deterministic stand-ins for the embedding model, for tests of logic (the real model is tested apart)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from storage.models import ModelManifest
from storage.types import Document
from storage.vector_space import VectorSpace

WORD = re.compile(r"\w+")


class FakeEmbedder:
    """Hashed bag of words: texts sharing words get similar vectors, so dense search behaves plausibly.

    Counts every text it encodes, so tests can assert what was (not) re-encoded.
    """

    def __init__(
        self,
        dim: int = 32,
        max_tokens: int = 16,
        delay: float = 0.0,
        name: str = "fake-bow",
        space: VectorSpace | None = None,
    ) -> None:
        # ``space``: stand in for the model of that space (a stubbed ``load_embedder`` is asked for one)
        self.space = space or VectorSpace(
            name, "fake", backend="fake", query_prefix="q: ", passage_prefix="p: "
        )
        self.dim = dim
        self.max_tokens = max_tokens
        self.delay = delay
        self.encoded: list[str] = []
        self.as_queries: list[str] = []  # texts encoded as queries (with the query prefix, for a real model)

    def token_offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        return [[m.span() for m in WORD.finditer(t)] for t in texts]

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        if self.delay:
            time.sleep(self.delay)
        self.encoded += texts
        if queries:
            self.as_queries += texts
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            for word in WORD.findall(text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        out[:, 0] += 1e-3  # no all-zero rows
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def make_docs(n: int, words_per_doc: int = 8, prefix: str = "d") -> list[Document]:
    """``n`` distinct documents with a few shared and a few unique words each."""
    vocab = ["wing", "flow", "heat", "shock", "boundary", "layer", "mach", "pressure", "lift", "drag"]
    docs = []
    for i in range(n):
        words = [vocab[(i * 3 + j) % len(vocab)] for j in range(words_per_doc)] + [f"term{i}"]
        docs.append(Document(f"{prefix}{i}", f"title {i}", " ".join(words), {"n": i}, f"mem:{i}"))
    return docs


def make_testset(corpus: str = "c", name: str = "t"):
    """Queries over :func:`make_docs` documents: ``q{i}`` asks for ``term{i}``, judged relevant in d{i}."""
    from tasks.evaluation.testsets import TestSet

    queries = {f"q{i}": f"term{i} wing" for i in range(6)}
    qrels = {f"q{i}": {f"d{i}": 2, f"d{(i + 1) % 12}": 1} for i in range(6)}
    return TestSet(corpus, name, queries, qrels, "hash", "memory", "2026-01-01T00:00:00+00:00", "human")


def write_beir(testset: Any, folder: Path) -> Path:
    """``testset`` (queries and graded qrels) as a BEIR folder, the layout users register."""
    (folder / "qrels").mkdir(parents=True)
    lines = [json.dumps({"_id": q, "text": t}) for q, t in testset.queries.items()]
    (folder / "queries.jsonl").write_text("\n".join(lines) + "\n")
    grades = [f"{q}\t{d}\t{g}" for q, docs in testset.qrels.items() for d, g in docs.items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(grades) + "\n")
    return folder


@contextmanager
def fake_workspace(tmp_path: Path, monkeypatch: Any, corpora: Sequence[str] = ("c",)) -> Iterator[Any]:
    """A workspace in a fresh ZSR_HOME whose model is the fake embedder: each of ``corpora`` holds twelve
    :func:`make_docs` documents and test set ``t`` (:func:`make_testset`)."""
    import tasks.workspace
    from tasks.ingest.index import reindex
    from tests.conftest import zsr_home_at

    monkeypatch.setattr(tasks.workspace, "load_embedder", lambda space, *args: FakeEmbedder(space=space))
    with zsr_home_at(tmp_path / "home"):
        ws = tasks.workspace.Workspace.open()
        fake = FakeEmbedder()
        beir = write_beir(make_testset(), tmp_path / "beir")
        for corpus in corpora:
            reindex(ws.store, corpus, make_docs(12), fake.space, lambda: fake)
            ws.testsets.register(corpus, "t", beir)
        yield ws


def model_manifest(version: str, created_at: str, corpus: str = "c") -> ModelManifest:
    """A published adapted model's manifest with made-up training figures (catalogue tests)."""
    return ModelManifest(
        corpus=corpus,
        version=version,
        base_model="base",
        base_revision="r",
        query_prefix="",
        passage_prefix="",
        loss="mnrl",
        data_hash="h",
        train_queries=3,
        dev_queries=1,
        batch_size=2,
        hard_negatives=1,
        steps=4,
        max_steps=4,
        seconds=1.0,
        stopped="max-steps",
        dev={"base": {"nDCG@10": 0.5}, "adapted": {"nDCG@10": 0.6}},
        created_at=created_at,
    )
