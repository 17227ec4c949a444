"""Subprocess target for the SIGKILL test: re-index a JSONL source with a slow fake model.

Usage: python -m tests.kill_target LANCEDB_URI SOURCE.jsonl DELAY_SECONDS [step]
Prints one line per finished batch and "done" at the end. In ``step`` mode it waits for a line on stdin
after each batch, so the parent knows exactly how far the run got when it kills it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from storage.corpus_store import CorpusStore
from tasks.index import reindex
from tasks.sources import read_source
from tests.fakes import FakeEmbedder


def main() -> None:
    uri, source, delay = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    step = sys.argv[4:] == ["step"]
    fake = FakeEmbedder(delay=delay)

    def progress(done: int, total: int) -> None:
        print(f"batch {done}/{total}", flush=True)
        if step:
            sys.stdin.readline()

    reindex(
        CorpusStore(uri),
        "c",
        read_source(source).documents,
        fake.spec,
        lambda: fake,
        batch_docs=2,
        progress=progress,
    )
    print("done", flush=True)


if __name__ == "__main__":
    main()
