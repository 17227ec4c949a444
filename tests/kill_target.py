"""Subprocess target for the SIGKILL test: re-index a JSONL source with a slow fake model.

Usage: python -m tests.kill_target LANCEDB_URI SOURCE.jsonl DELAY_SECONDS
Prints one line per finished batch (so the parent knows the run is under way) and "done" at the end.
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
    fake = FakeEmbedder(delay=delay)
    docs = read_source(source).documents
    reindex(
        CorpusStore(uri), "c", docs, fake.spec, lambda: fake, batch_docs=2,
        progress=lambda done, total: print(f"batch {done}/{total}", flush=True),
    )
    print("done", flush=True)


if __name__ == "__main__":
    main()
