"""Subprocess target for the warehouse tests: evaluate a small corpus with the fake model.

Usage: python -m tests.eval_target LANCEDB_URI WAREHOUSE_DIR METHODS [pause]
With ``pause`` it stops after scoring, just before publishing, and waits for a line on stdin, so the
parent can kill it there or let it finish.
"""

from __future__ import annotations

import sys
from pathlib import Path

from storage.corpus_store import CorpusStore
from storage.warehouse import Warehouse
from tasks.index import reindex
from tasks.runs import evaluate_methods
from tasks.search import Searcher, split_methods
from tests.fakes import FakeEmbedder, make_docs, make_testset


def main() -> None:
    uri, root, methods = sys.argv[1], Path(sys.argv[2]), split_methods(sys.argv[3])
    fake = FakeEmbedder()
    store = CorpusStore(uri)
    reindex(store, "c", make_docs(12), fake.spec, lambda: fake)
    warehouse = Warehouse(root)
    if sys.argv[4:] == ["pause"]:
        publish = warehouse.write_run

        def paused(run, data):  # write the data files, then stop before the runs row
            for table, rows in data.items():
                warehouse._write_atomic(rows, root / table / f"{run['run_id'][0]}.parquet")
            print("paused", flush=True)
            sys.stdin.readline()
            publish(run, data)

        warehouse.write_run = paused  # type: ignore[method-assign]
    results = evaluate_methods(Searcher(store, "c", lambda: fake), make_testset(), methods, warehouse)
    print(" ".join(r.run_id for r in results), flush=True)


if __name__ == "__main__":
    main()
