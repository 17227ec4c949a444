"""Reproduce the reference figures of ../shared/data with zsr's own ingest and search.

Usage: python bench/quality.py [DATA_DIR]   (default: ../shared/data beside the project)
Prints nDCG@10 and R@100 per dataset and method beside the reference, and exits 1 if any lands more than
0.01 below it. Indexes into a temporary ZSR_HOME, so it measures a fresh ingest.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from storage.settings import Settings
from tasks.api import ingest, searcher
from tasks.evaluate import evaluate, load_qrels, load_queries

# ../shared/data/README.md: BM25 = the LanceDB FTS row, dense = all-MiniLM-L6-v2, hybrid = RRF k=60 top 1000.
REFERENCE = {
    ("cranfield", "bm25"): (0.375, 0.746),
    ("cranfield", "dense"): (0.382, 0.772),
    ("cranfield", "hybrid"): (0.418, 0.790),
    ("cisi", "bm25"): (0.395, 0.449),
    ("cisi", "dense"): (0.419, 0.472),
    ("cisi", "hybrid"): (0.441, 0.513),
}
TOLERANCE = 0.01


def main() -> int:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "data"
    failed = False
    print(f"{'dataset':10} {'method':7} {'nDCG@10':>8} {'ref':>6} {'R@100':>7} {'ref':>6}  verdict")
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home))
        for dataset in ("cranfield", "cisi"):
            folder = data / dataset
            # Cranfield holds two records with neither title nor text (ids 471, 995): skipped and reported.
            _, read = ingest(folder, dataset, fmt="beir", skip_bad=True, settings=settings)
            for problem in read.skipped:
                print(f"skipped {problem}")
            qrels = load_qrels(folder / "qrels" / "test.tsv")
            queries = {q: t for q, t in load_queries(folder / "queries.jsonl").items() if q in qrels}
            engine = searcher(dataset, settings)
            for method in ("bm25", "dense", "hybrid"):
                got = evaluate(engine.search_batch(queries, method, k=100), qrels, ("nDCG@10", "R@100"))
                ref = REFERENCE[(dataset, method)]
                ok = got["nDCG@10"] >= ref[0] - TOLERANCE and got["R@100"] >= ref[1] - TOLERANCE
                failed |= not ok
                print(
                    f"{dataset:10} {method:7} {got['nDCG@10']:8.3f} {ref[0]:6.3f} "
                    f"{got['R@100']:7.3f} {ref[1]:6.3f}"
                    f"  {'ok' if ok else 'BELOW REFERENCE'}"
                )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
