"""Deployment entrypoints for tests/integration/test_prefect_postgres.py: zsr's real flows, with two changes.

The embedding model is the fake one (tests/fakes.py), so a flow run costs no model load; and each flow run
stops at a gate just before it loads its test set, so the test decides what happens while runs are in
progress. At the gate a run writes ``<gates>/<flow run id>.waiting`` and waits for
``<gates>/<flow run id>.open`` (``<gates>`` is ``$ZSR_TEST_GATES``), failing after :data:`PATIENCE` s so that
a test gone wrong leaves no run waiting forever.

It lives in tests/integration, not tests/: Prefect puts an entrypoint's folder first on ``sys.path``, and
tests/ holds a ``flows`` package of its own that would hide zsr's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import flows.steps
import tasks.workspace
from flows.evaluate import evaluate
from flows.nightly import nightly
from storage.vector_space import VectorSpace
from tasks.evaluation.testsets import TestSet
from tests.fakes import FakeEmbedder

PATIENCE = 240.0
__all__ = ["evaluate", "nightly"]


def _fake_model(space: VectorSpace, *args: object) -> FakeEmbedder:
    return FakeEmbedder(space=space)


def wait_at_gate() -> None:
    """Say this run is at the gate, then wait until the test opens it."""
    gates, run = Path(os.environ["ZSR_TEST_GATES"]), os.environ["PREFECT__FLOW_RUN_ID"]
    (gates / f"{run}.waiting").touch()
    deadline = time.monotonic() + PATIENCE
    while not (gates / f"{run}.open").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate of flow run {run} not opened within {PATIENCE:.0f} s")
        time.sleep(0.2)


_load_testset = flows.steps.Orchestrated.load_testset


def _gated_load_testset(self: flows.steps.Orchestrated, corpus: str, name: str) -> TestSet:
    wait_at_gate()
    return _load_testset(self, corpus, name)


tasks.workspace.load_embedder = _fake_model  # type: ignore[assignment]
flows.steps.Orchestrated.load_testset = _gated_load_testset  # type: ignore[method-assign]
