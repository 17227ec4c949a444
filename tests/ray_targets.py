"""What the Ray tests ship to the workers; kept apart so that a worker imports little to unpickle them."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.fakes import FakeEmbedder


class MarkingEmbedder(FakeEmbedder):
    """The fake model, slowed down, leaving a file named after its process for each call it encodes."""

    def __init__(self, marks: Path) -> None:
        super().__init__(delay=0.3)
        self.marks = marks

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        (self.marks / f"{os.getpid()}-{time.time_ns()}").touch()
        return super().encode(texts, queries=queries)


def fake_searcher(settings: Any, corpus: str, wait: Path | None = None) -> Any:
    """A worker's searcher over the fake model; with ``wait``, it marks its node there and waits first."""
    import ray

    import tasks.workspace

    tasks.workspace.load_embedder = lambda space, *args: FakeEmbedder(space=space)  # type: ignore[assignment]
    if wait is not None:
        (wait / ray.get_runtime_context().get_node_id()).touch()
        time.sleep(2)  # long enough to kill its node meanwhile
    return tasks.workspace.Workspace(settings).searcher(corpus)
