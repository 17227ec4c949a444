"""PromptReps with the bundled SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantised by transformers) end to end:
index a few documents, search them in each mode, and re-index without encoding anything."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.ingest.promptreps import own_words
from tests.fakes import fake_workspace

pytestmark = pytest.mark.slow


def test_bundled_smollm2_indexes_and_searches_a_few_documents(tmp_path, monkeypatch):
    with fake_workspace(tmp_path, monkeypatch) as ws:
        encoder = ws.promptreps  # ZSR_PROMPTREPS_MODEL's default: the bundled GGUF
        assert encoder.space.model == "smollm2" and encoder.hidden == 576

        first = ws.index_promptreps("c")
        assert (first.added, first.chunks_encoded) == (12, 12) and first.tokens_per_second > 0
        again = ws.index_promptreps("c")
        assert (again.added, again.chunks_encoded, again.unchanged) == (0, 0, 12)

        reps = encoder.represent(["wing flutter in a wind tunnel"], queries=True)
        assert np.isclose(np.linalg.norm(reps.dense[0]), 1.0, atol=1e-4)
        own = {t for w in own_words("wing flutter in a wind tunnel") for t in encoder.tokenizer.encode(w)}
        assert reps.sparse[0] and set(reps.sparse[0]) <= own

        for mode in ("dense", "sparse", "hybrid"):
            hits = ws.search("c", "term5 wing flow", method=f"promptreps(mode={mode})", k=5)
            assert len(hits) == 5 and len({d for d, _ in hits}) == 5
