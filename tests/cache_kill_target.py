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


class PausingStore(CorpusStore):
    """A store that reports each embedding-cache commit and waits for the parent's go."""

    def cache_vectors(self, model_key, dim, hashes, vectors) -> None:
        super().cache_vectors(model_key, dim, hashes, vectors)
        print(f"cached {len(hashes)}", flush=True)
        sys.stdin.readline()


def main() -> None:
    uri, source = sys.argv[1], Path(sys.argv[2])
    fake = FakeEmbedder()
    reindex(PausingStore(uri), "c", read_source(source).documents, fake.spec, lambda: fake, batch_docs=2)
    print("done", flush=True)


if __name__ == "__main__":
    main()
