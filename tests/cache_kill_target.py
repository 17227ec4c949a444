"""Subprocess target for the embedding-cache crash test: index a JSONL source, pausing after cache commits.

Usage: python -m tests.cache_kill_target LANCEDB_URI SOURCE.jsonl
Indexes in batches of 2 documents with the fake model. Right after each batch's vectors are committed to
the embedding cache, before that batch's views and document rows are written, it prints "cached N" and
waits for a line on stdin, so the parent can kill it where the cache holds vectors the corpus does not.
"""

from __future__ import annotations

import sys
from pathlib import Path

from storage.corpus_store import CorpusStore
from tasks.ingest.index import reindex
from tasks.ingest.sources import read_source
from tests.fakes import FakeEmbedder


def pausing(store: CorpusStore) -> CorpusStore:
    """``store``, made to report each embedding-cache commit and wait for the parent's go."""
    put = store.cache.put

    def put_then_wait(space, role, hashes, vectors) -> None:
        put(space, role, hashes, vectors)
        print(f"cached {len(hashes)}", flush=True)
        sys.stdin.readline()

    store.cache.put = put_then_wait  # type: ignore[method-assign]
    return store


def main() -> None:
    uri, source = sys.argv[1], Path(sys.argv[2])
    fake = FakeEmbedder()
    reindex(
        pausing(CorpusStore(uri)), "c", read_source(source).documents, fake.space, lambda: fake, batch_docs=2
    )
    print("done", flush=True)


if __name__ == "__main__":
    main()
