"""Quantized dense search (ZSR_QUANTIZATION, ZSR_RESCORE): memory, latency and quality against float32.

Usage: python bench/quantize.py [DATA_DIR] [--rounds N]   (default DATA_DIR: bench/data, bundled)
Ingests Cranfield and CISI once each into a temporary ZSR_HOME (bench/quality.py's `load`), then, for each
representation below, on the same index: the bytes of the searched representation held in memory (and its
ratio to float32), the seconds to build it from the table, the p50 latency of vector search alone (query
vectors encoded beforehand, top 10 documents, one query a call, over every judged query, N rounds), and
nDCG@10 and R@100 through `zsr eval`'s path with the loss against float32. The float vectors' bytes in the
views table on disk are printed per collection: with quantization they stay there, read back only for the
candidates rescored. Exits 1 if the best-rescored binary and int8 rows lose more than 0.005 nDCG@10 on
either collection, or if binary's representation is not at least 32x smaller than float32.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from quality import load
from query_methods import MEASURES

from storage.matrix import QuantizedMatrix, ViewMatrix
from storage.quantized import Quantization
from storage.views import views_table
from tasks.evaluation.testsets import TestSet
from tasks.settings import Settings
from tasks.workspace import Workspace

# (label, quantization): float32 first, the reference every loss is measured against.
SETTINGS = [
    ("float32", Quantization()),
    ("int8 x1", Quantization("int8", rescore=1)),
    ("int8 x4", Quantization("int8", rescore=4)),
    ("binary x1", Quantization("binary", rescore=1)),
    ("binary x4", Quantization("binary", rescore=4)),
    ("binary x10", Quantization("binary", rescore=10)),
]
CHECKED = ("int8 x4", "binary x10")  # the rows held to the loss target
LOSS_TARGET = 0.005  # nDCG@10
BINARY_RATIO = 32


def main() -> int:
    root = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", type=Path, default=root / "data")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as home:
        ws = Workspace.open(Settings(home=Path(home)))
        for dataset in ("cranfield", "cisi"):
            failed |= measure(ws, load(ws, args.data, dataset), args.rounds)
    return 1 if failed else 0


def measure(ws: Workspace, testset: TestSet, rounds: int) -> bool:
    """Print one collection's table; whether a target was missed."""
    searcher = ws.searcher(testset.corpus)
    search = ws.store.search
    name = views_table(testset.corpus, searcher.info.space)
    rows = ws.store.lance.count(name)
    dim = search.views.table(testset.corpus, searcher.info.space).schema.field("vector").type.list_size
    table_dir = Path(ws.settings.lancedb) / f"{name}.lance"
    on_disk = sum(f.stat().st_size for f in table_dir.rglob("*") if f.is_file())
    vectors = searcher.encode(list(testset.queries.values()), queries=True)
    print(f"\n{testset.corpus}: {len(testset.queries)} queries, {rows} views x {dim} dims")
    print(
        f"float32 vectors on disk: {rows * dim * 4:,} B (the views table, every column and version: "
        f"{on_disk:,} B)"
    )
    print(
        f"{'representation':14} {'held B':>10} {'vs f32':>7} {'build s':>8} {'p50 ms':>7} "
        f"{'nDCG@10':>8} {'loss':>7} {'R@100':>7} {'loss':>7}"
    )
    reference: tuple[float, float] | None = None
    failed = False
    for label, quantization in SETTINGS:
        search.quantization = quantization
        start = time.perf_counter()
        held = search.matrices.get(name, quantization)
        build = time.perf_counter() - start
        assert isinstance(held, ViewMatrix | QuantizedMatrix)  # no vector index below the ANN threshold
        size = held.vectors.nbytes if isinstance(held, ViewMatrix) else held.nbytes
        latencies = []
        for _ in range(rounds):
            for vector in vectors:
                start = time.perf_counter()
                searcher.search_vectors(vector[None], 10)
                latencies.append(time.perf_counter() - start)
        (run,) = ws.evaluate(testset.corpus, testset.name, ["dense"], MEASURES, label=label).runs
        got = (run.metrics["nDCG@10"], run.metrics["R@100"])
        reference = reference or got
        loss = (reference[0] - got[0], reference[1] - got[1])
        ratio = rows * dim * 4 / size
        missed = (label in CHECKED and loss[0] > LOSS_TARGET) or (
            label.startswith("binary") and ratio < BINARY_RATIO
        )
        failed |= missed
        print(
            f"{label:14} {size:10,} {ratio:6.1f}x {build:8.3f} {np.median(latencies) * 1e3:7.2f} "
            f"{got[0]:8.3f} {loss[0]:+7.3f} {got[1]:7.3f} {loss[1]:+7.3f}{'  TARGET MISSED' * missed}"
        )
        search.matrices.forget(name)  # each representation alone in memory
    return failed


if __name__ == "__main__":
    sys.exit(main())
