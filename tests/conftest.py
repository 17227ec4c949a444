from __future__ import annotations

import pytest

from storage.corpus_store import CorpusStore
from tests.fakes import FakeEmbedder


@pytest.fixture
def tmp_store(tmp_path) -> CorpusStore:
    return CorpusStore(str(tmp_path / "lancedb"))


@pytest.fixture
def fake() -> FakeEmbedder:
    return FakeEmbedder()
