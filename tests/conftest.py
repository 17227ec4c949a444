from __future__ import annotations

import os

# Before anything imports litellm or prefect: no cost-map download, no telemetry.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import pytest

from storage.corpus_store import CorpusStore
from tests.fakes import FakeEmbedder


@pytest.fixture
def tmp_store(tmp_path) -> CorpusStore:
    return CorpusStore(str(tmp_path / "lancedb"))


@pytest.fixture
def fake() -> FakeEmbedder:
    return FakeEmbedder()
