"""Quantized dense search (ZSR_QUANTIZATION, ZSR_RESCORE): memory, latency and quality against float32.

Usage: python bench/quantize.py [DATA_DIR] [--rounds N]   (default DATA_DIR: bench/data, bundled)
Ingests Cranfield and CISI once each into a temporary ZSR_HOME (bench/quality.py's `load`), then, for each
representation below, on the same index: the bytes of the searched representation held in memory (and its
ratio to float32), the seconds to build it from the table, the p50 latency of vector search alone (query
vectors encoded beforehand, top 10 documents, one query a call, over every judged query, N rounds), and
nDCG@10 and R@100 through `zsr eval`'s path with the loss against float32. The float vectors' bytes in the
views table on disk (Lance stores them uncompressed) are printed per collection: with quantization they
stay there, read back only for the candidates rescored. Exits 1 if the rows in CHECKED lose more than 0.005
nDCG@10 on either collection, or if binary's representation is not at least 32x smaller than float32.
Every row of a collection searches the same index, each setting from a workspace of its own.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np
from quality import load
from query_methods import MEASURES

from tasks.evaluation.testsets import TestSet
from tasks.settings import Settings
from tasks.workspace import Workspace

# (label, ZSR_QUANTIZATION, ZSR_RESCORE): float32 first, the reference every loss is measured against.
SETTINGS: list[tuple[str, Literal["none", "int8", "binary"], int]] = [
    ("float32", "none", 1),
    ("int8 x1", "int8", 1),
    ("int8 x4", "int8", 4),
    ("binary x1", "binary", 1),
    ("binary x4", "binary", 4),
    ("binary x10", "binary", 10),
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
        testsets = [
            load(Workspace.open(Settings(home=Path(home))), args.data, d) for d in ("cranfield", "cisi")
        ]
        for testset in testsets:
            failed |= measure(Path(home), testset, args.rounds)
    return 1 if failed else 0


def measure(home: Path, testset: TestSet, rounds: int) -> bool:
    """Print one collection's table; whether a target was missed."""
    vectors: np.ndarray | None = None
    reference: tuple[float, float] | None = None
    failed = False
    for label, kind, rescore in SETTINGS:
        # A workspace per setting, over the same index: each holds its own representation alone.
        ws = Workspace.open(Settings(home=home, quantization=kind, rescore=rescore))
        searcher = ws.searcher(testset.corpus)
        if vectors is None:
            vectors = searcher.encode(list(testset.queries.values()), queries=True)
        start = time.perf_counter()
        held, on_disk = ws.dense_memory(testset.corpus)
        build = time.perf_counter() - start
        if reference is None:
            print(
                f"\n{testset.corpus}: {len(testset.queries)} queries; float32 vectors on disk: {on_disk:,} B"
            )
            print(
                f"{'representation':14} {'held B':>10} {'vs f32':>7} {'build s':>8} {'p50 ms':>7} "
                f"{'nDCG@10':>8} {'loss':>7} {'R@100':>7} {'loss':>7}"
            )
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
        ratio = on_disk / held
        missed = (label in CHECKED and loss[0] > LOSS_TARGET) or (kind == "binary" and ratio < BINARY_RATIO)
        failed |= missed
        print(
            f"{label:14} {held:10,} {ratio:6.1f}x {build:8.3f} {np.median(latencies) * 1e3:7.2f} "
            f"{got[0]:8.3f} {loss[0]:+7.3f} {got[1]:7.3f} {loss[1]:+7.3f}{'  TARGET MISSED' * missed}"
        )
    return failed


if __name__ == "__main__":
    sys.exit(main())
