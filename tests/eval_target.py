"""Subprocess target for the warehouse tests: evaluate a small corpus with the fake model.

Usage: python -m tests.eval_target LANCEDB_URI WAREHOUSE_DIR METHODS [kill-before|kill-after N]
Prints the run ids when done. With ``kill-before N`` (``kill-after N``) the process SIGKILLs itself inside
the real ``Warehouse.write_run``, just before (after) the rename that publishes the N-th file of a run
(counting from 1, over ``runs`` and the data tables), after printing ``kill-before PATH`` so the parent
knows exactly where it died.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from storage.corpus_store import CorpusStore
from storage.warehouse import DATA_TABLES, Warehouse
from tasks.evaluation.runs import evaluate_methods
from tasks.ingest.index import reindex
from tasks.methods.registry import split_methods
from tasks.methods.search import Searcher
from tests.fakes import FakeEmbedder, make_docs, make_testset


def kill_at_publish(warehouse: Warehouse, when: str, n: int) -> None:
    """Make the N-th rename of a run file into the warehouse the last thing this process does."""
    run_folders = {warehouse.root / t for t in ("runs", *DATA_TABLES)}
    rename = Path.replace
    published = 0

    def replace(self: Path, target: str | os.PathLike[str]) -> Path:
        nonlocal published
        if Path(target).parent not in run_folders:
            return rename(self, target)
        published += 1
        if published != n:
            return rename(self, target)
        if when == "kill-after":
            rename(self, target)
        print(when, target, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    Path.replace = replace  # type: ignore[method-assign]


def main() -> None:
    uri, root, methods = sys.argv[1], Path(sys.argv[2]), split_methods(sys.argv[3])
    fake = FakeEmbedder()
    store = CorpusStore(uri)
    reindex(store, "c", make_docs(12), fake.space, lambda: fake)
    warehouse = Warehouse(root)
    if sys.argv[4:]:
        when, n = sys.argv[4:]
        if when not in ("kill-before", "kill-after"):
            raise SystemExit(__doc__)
        kill_at_publish(warehouse, when, int(n))
    results = evaluate_methods(Searcher(store, "c", lambda: fake), make_testset(), methods, warehouse)
    print(" ".join(r.run_id for r in results), flush=True)


if __name__ == "__main__":
    main()
