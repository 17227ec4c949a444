"""Subprocess target for the SIGKILL test of a model upgrade: move corpus ``c`` to a drifted fake model.

Usage: python -m tests.upgrade_kill_target LANCEDB_URI [N before|after]

Store calls are numbered and printed as in :mod:`tests.kill_target` (``call N views.put``); with ``N before``
(``N after``) the process SIGKILLs itself right before (after) its N-th call. A run not killed ends with
``done``.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

from storage.corpus_store import CorpusStore
from storage.vector_space import VectorSpace
from tasks.ingest.upgrade import UpgradeReport, upgrade_model
from tests.fakes import FakeEmbedder
from tests.kill_target import instrument

DIM = 32
# A known random orthogonal matrix: the drifted model's vectors are the fake model's rotated by it.
ROTATION = np.linalg.qr(np.random.default_rng(17).standard_normal((DIM, DIM)))[0].astype(np.float32)


class DriftedEmbedder(FakeEmbedder):
    """The fake model after a known linear drift: its vectors times ``matrix``, in a space of its own."""

    def __init__(self, matrix: np.ndarray = ROTATION, name: str = "fake-drifted") -> None:
        space = VectorSpace(name, "fake-2", backend="fake", query_prefix="q: ", passage_prefix="p: ")
        super().__init__(dim=matrix.shape[1], space=space)
        self.matrix = matrix

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        return super().encode(texts, queries=queries) @ self.matrix


def upgrade_corpus(store: CorpusStore, new: DriftedEmbedder | None = None) -> UpgradeReport:
    """Move corpus ``c`` to the drifted model, two documents per write batch."""
    model = new or DriftedEmbedder()
    return upgrade_model(store, "c", model.space, lambda: model, batch_docs=2)


def main() -> None:
    uri = sys.argv[1]
    kill = (int(sys.argv[2]), sys.argv[3]) if len(sys.argv) > 2 else None

    def hook(number: int, name: str, side: str) -> None:
        if side == "before":
            print(f"call {number} {name}", flush=True)
        if kill == (number, side):
            os.kill(os.getpid(), signal.SIGKILL)

    upgrade_corpus(instrument(CorpusStore(uri), hook))
    print("done", flush=True)


if __name__ == "__main__":
    main()
