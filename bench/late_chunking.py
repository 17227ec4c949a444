"""Dense retrieval with naive against late chunking, side by side: nDCG@10, R@100 and index time.

Usage: python bench/late_chunking.py [DATA_DIR] [--datasets cranfield,cisi,limit-small]
Ingests each collection twice into one temporary ZSR_HOME, as corpus ``<dataset>`` (``--chunking tokens``)
and ``<dataset>-late`` (``--chunking late``), registers its qrels as test set ``human`` of both, evaluates
``dense`` through `zsr eval`'s path over every judged query, and prints both rows with the late/naive
ratios. Both models are loaded before the clock starts, so index time is chunking, encoding and writing.
Chunks per document are printed too: late chunking can only differ where a document has several chunks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tasks.ingest.embed import load_embedder, vector_space
from tasks.ingest.index import ReindexReport
from tasks.settings import Chunking, Settings
from tasks.workspace import Workspace

MEASURES = ["nDCG@10", "R@100"]
CHUNKINGS: dict[Chunking, str] = {"tokens": "", "late": "-late"}  # chunking -> corpus name suffix


def index(ws: Workspace, folder: Path, corpus: str, chunking: Chunking) -> ReindexReport:
    """Ingest the BEIR ``folder`` as ``corpus`` and register its qrels as test set ``human``."""
    # Cranfield holds two records with neither title nor text (ids 471, 995): skipped, as in bench/quality.py.
    report, _ = ws.ingest(folder, corpus, fmt="beir", skip_bad=True, chunking=chunking)
    ws.testsets.register(corpus, "human", folder)
    return report


def main() -> int:
    root = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", type=Path, default=root / "data")
    parser.add_argument("--datasets", default="cranfield,cisi,limit-small")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home))
        ws = Workspace.open(settings)
        for chunking in CHUNKINGS:  # loaded once per process: the clock below counts no model load
            space = vector_space(settings.embedding_model, chunking=chunking)
            load_embedder(space, settings.device, settings.batch_size)
        print(
            f"{'dataset':12} {'chunking':8} {'nDCG@10':>8} {'R@100':>7} {'index s':>8} {'docs':>6} "
            f"{'chunks':>7}"
        )
        for dataset in args.datasets.split(","):
            rows = {}
            for chunking, suffix in CHUNKINGS.items():
                report = index(ws, args.data / dataset, dataset + suffix, chunking)
                run = ws.evaluate(dataset + suffix, "human", ["dense"], MEASURES).runs[0]
                rows[chunking] = (run.metrics["nDCG@10"], run.metrics["R@100"], report.seconds)
                print(
                    f"{dataset:12} {chunking:8} {rows[chunking][0]:8.3f} {rows[chunking][1]:7.3f} "
                    f"{report.seconds:8.1f} {report.added:6d} {report.chunks_written:7d}",
                    flush=True,
                )
            naive, late = rows["tokens"], rows["late"]
            print(
                f"{dataset:12} {'late - naive':>17} {late[0] - naive[0]:+.3f} {late[1] - naive[1]:+7.3f} "
                f"index time x{late[2] / naive[2]:.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
