from __future__ import annotations

import os

# Before anything imports litellm or prefect: no cost-map download, no telemetry.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from storage.corpus_store import CorpusStore
from tasks.settings import get_settings
from tests.fakes import FakeEmbedder

UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI (``CI=true``, set by ``.ci/run``) a skipped test fails: a missing browser, server or model
    must turn the run red, not leave one SKIPPED line in a green run. Locally, skips stay skips."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if UNDER_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which must run every test: {reason}"


@contextmanager
def zsr_home_at(path: Path) -> Iterator[Path]:
    """``ZSR_HOME`` set to ``path`` inside, the cached settings dropped on the way in and out."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZSR_HOME", str(path))
        get_settings.cache_clear()
        yield path
    get_settings.cache_clear()


@pytest.fixture
def tmp_store(tmp_path) -> CorpusStore:
    return CorpusStore(str(tmp_path / "lancedb"))


@pytest.fixture
def fake() -> FakeEmbedder:
    return FakeEmbedder()
