"""Subprocess target for the SIGKILL test: re-index a JSONL source, killing itself at a chosen store call.

Usage: python -m tests.kill_target LANCEDB_URI SOURCE.jsonl [N before|after]

Every top-level call of a public method of the store or of one of its parts (``store.views.put``, ...) is
numbered from 1 and printed as it starts (``call N views.put``); with ``N before`` (``N after``) the process
SIGKILLs itself right before (right after) its N-th call. A run that is not killed ends with ``done``. Which
calls write is not listed here: the test learns it from an instrumented run (:func:`instrument` with a hook
that compares table versions).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from storage.corpus_store import CorpusStore
from tasks.ingest.index import ReindexReport, reindex
from tasks.ingest.sources import read_source
from tests.fakes import FakeEmbedder

Hook = Callable[[int, str, str], None]  # (call number, "part.method", "before" | "after")
PARTS = ("registry", "documents", "views", "synthetic", "cache", "search", "drifts")


def instrument(store: CorpusStore, hook: Hook) -> CorpusStore:
    """Run ``hook`` around each top-level call of a public store method (nested calls are part of it)."""
    state = {"depth": 0, "calls": 0}

    def wrap(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            if state["depth"]:
                return method(*args, **kwargs)
            state["calls"] += 1
            number = state["calls"]
            hook(number, name, "before")
            state["depth"] += 1
            try:
                result = method(*args, **kwargs)
            finally:
                state["depth"] -= 1
            hook(number, name, "after")
            return result

        return call

    targets: list[tuple[str, Any]] = [("", store), *((f"{part}.", getattr(store, part)) for part in PARTS)]
    for prefix, target in targets:
        for name in dir(type(target)):
            if not name.startswith("_") and callable(getattr(type(target), name)):
                setattr(target, name, wrap(prefix + name, getattr(target, name)))
    return store


def reindex_source(store: CorpusStore, source: Path) -> ReindexReport:
    """Re-index ``source`` as corpus ``c`` with the fake model, two documents per write batch."""
    fake = FakeEmbedder()
    return reindex(store, "c", read_source(source).documents, fake.space, lambda: fake, batch_docs=2)


def main() -> None:
    uri, source = sys.argv[1], Path(sys.argv[2])
    kill = (int(sys.argv[3]), sys.argv[4]) if len(sys.argv) > 3 else None

    def hook(number: int, name: str, side: str) -> None:
        if side == "before":
            print(f"call {number} {name}", flush=True)
        if kill == (number, side):
            os.kill(os.getpid(), signal.SIGKILL)

    reindex_source(instrument(CorpusStore(uri), hook), source)
    print("done", flush=True)


if __name__ == "__main__":
    main()
