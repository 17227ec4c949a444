"""Peak memory of the ingest path against corpus size: streamed (as zsr ingests) and held whole (as it did).

Usage: python bench/ingest_memory.py [--docs 25000 100000] [--modes stream held] [--batch-docs 256] [--heap]

For each size a synthetic JSONL source is generated (documents of ~1 KB: a title and text of words drawn
with their frequencies from the Cranfield and CISI corpora in bench/data), then ingested into a fresh store
in a subprocess of its own per (mode, size), so each peak RSS (``ru_maxrss``) is that run's alone:
``read_source`` (the check pass) and ``reindex`` (plan pass, then write batches of ``--batch-docs``).
``stream`` passes ``read_source``'s documents, re-read from disk per pass; ``held`` passes them as one
list, the whole source in memory as before issue 14, item 5, for the same pipeline otherwise.

The embedder is a cheap stand-in (a vector seeded by a hash of each chunk's text, 384 dimensions like
all-MiniLM-L6-v2, chunks cut at 256 word tokens): the question is the pipeline's memory, not the model's
speed, and encoding 250k documents with the real model would take this 2-core machine hours. The model's
own memory is constant in the corpus size. No ANN index is built (``ann_min_rows`` above every size):
that is LanceDB's index training, not reading and writing the source.

Printed per run: the RSS after imports (``base``), the peak before the BM25 index build (reading,
planning, chunking, embedding, writing), and the peak of the whole run, which includes LanceDB's BM25
build; then, per mode, how the peaks grow per 100k documents between the smallest and largest size, next
to the source's own size per 100k. Streaming still grows: by the ids it keeps (a set per pass) and by
LanceDB, whose merge-inserts into the views and embedding-cache tables cost more as the tables grow (the
same in both modes). ``--heap`` also traces the Python heap's peak (tracemalloc): the pipeline's own
objects apart from that native memory. Exits 1 unless streaming's pipeline peak (the heap's, with
``--heap``) grows by at least half the source's size per 100k documents less than holding the source does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

import tasks.workspace
from tasks.ingest.sources import SourceReport, read_source
from tasks.settings import Settings
from tasks.workspace import Workspace

DATA = Path(__file__).resolve().parent / "data"
DIM, MAX_TOKENS = 384, 256
TOKEN = re.compile(r"\w+|[^\w\s]")
SAVING_TARGET = 0.5  # streaming must save at least this share of the source's size, per 100k documents


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, nargs="+", default=[25_000, 100_000])
    parser.add_argument("--modes", nargs="+", choices=["stream", "held"], default=["stream", "held"])
    parser.add_argument("--batch-docs", type=int, default=256)
    parser.add_argument("--heap", action="store_true", help="measure the Python heap (tracemalloc) instead")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "SOURCE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], Path(args.child[1]), args.batch_docs, args.heap)

    sizes = sorted(args.docs)
    runs: dict[tuple[str, int], dict[str, float]] = {}
    source_mb: dict[int, float] = {}
    measure = "heap_mb" if args.heap else "pipeline_mb"
    print(
        f"{'mode':6} {'docs':>8} {'source MB':>10} {'base MB':>8} {'pipeline MB':>12} {'all MB':>8} {'s':>7}"
        + (f" {'heap MB':>8}" if args.heap else "")
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            source = Path(tmp) / f"docs-{n}.jsonl"
            generate(source, n)
            source_mb[n] = source.stat().st_size / 2**20
            for mode in args.modes:
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    mode,
                    str(source),
                    "--batch-docs",
                    str(args.batch_docs),
                    *(["--heap"] if args.heap else []),
                ]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                run = runs[mode, n] = json.loads(out.splitlines()[-1])
                print(
                    f"{mode:6} {n:8d} {source_mb[n]:10.1f} {run['base_mb']:8.1f} {run['pipeline_mb']:12.1f} "
                    f"{run['peak_mb']:8.1f} {run['seconds']:7.1f}"
                    + (f" {run['heap_mb']:8.1f}" if args.heap else "")
                )
            source.unlink()
    if len(sizes) < 2:
        return 0
    small, large = sizes[0], sizes[-1]
    per_100k = 100_000 / (large - small)
    source_growth = (source_mb[large] - source_mb[small]) * per_100k
    print(f"\ngrowth per 100k documents ({small} -> {large}); the source itself: {source_growth:.1f} MB")
    growth = {}
    for mode in args.modes:
        growth[mode] = (runs[mode, large]["pipeline_mb"] - runs[mode, small]["pipeline_mb"]) * per_100k
        peak = (runs[mode, large]["peak_mb"] - runs[mode, small]["peak_mb"]) * per_100k
        share = growth[mode] / source_growth
        print(
            f"{mode:6} pipeline peak {growth[mode]:+7.1f} MB ({share:.0%} of the source), "
            f"whole run incl. BM25 build {peak:+7.1f} MB"
        )
        if args.heap:
            heap = (runs[mode, large]["heap_mb"] - runs[mode, small]["heap_mb"]) * per_100k
            print(f"{mode:6} Python heap peak {heap:+7.1f} MB ({heap / source_growth:.0%} of the source)")
    if "held" not in growth or "stream" not in growth:
        return 0
    saved = (runs["held", large][measure] - runs["held", small][measure]) * per_100k
    saved -= (runs["stream", large][measure] - runs["stream", small][measure]) * per_100k
    what = "Python heap" if args.heap else "pipeline RSS"
    print(
        f"streaming saves {saved:.1f} MB of {what} per 100k documents "
        f"({saved / source_growth:.0%} of the source)"
    )
    if saved < SAVING_TARGET * source_growth:
        print(f"TARGET MISSED: streaming saves less than {SAVING_TARGET:.0%} of the source's size")
        return 1
    return 0


def generate(path: Path, n: int, seed: int = 14) -> None:
    """Write ``n`` documents of ~1 KB of real words (drawn by corpus frequency) to ``path``, one at a time."""
    counts: Counter[str] = Counter()
    for corpus in ("cranfield", "cisi"):
        with (DATA / corpus / "corpus.jsonl").open() as lines:
            for line in lines:
                record = json.loads(line)
                counts.update(re.findall(r"[a-z]+", f"{record['title']} {record['text']}".lower()))
    words, weights = list(counts), list(counts.values())
    rng = random.Random(seed)
    with path.open("w") as out:
        for i in range(n):
            title = " ".join(rng.choices(words, weights, k=rng.randint(5, 12)))
            text = " ".join(rng.choices(words, weights, k=150))  # ~1 KB: these words average ~5.5 bytes
            out.write(json.dumps({"_id": f"doc{i:07d}", "title": title, "text": text}) + "\n")


class CheapEmbedder:
    """A stand-in embedder costing microseconds a chunk: a unit vector seeded by a hash of the text."""

    dim, max_tokens = DIM, MAX_TOKENS

    def __init__(self, space: Any) -> None:
        self.space = space

    def token_offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        return [[m.span() for m in TOKEN.finditer(t)] for t in texts]

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        seeds = [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest()) for t in texts]
        out = np.stack([np.random.default_rng(s).standard_normal(DIM, np.float32) for s in seeds])
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def child(mode: str, source: Path, batch_docs: int, heap: bool) -> int:
    """Ingest ``source`` with ``zsr``'s own ingest into a fresh home; print this process's RSS as JSON.

    With ``heap``, the Python heap's peak too (tracemalloc, whose own records inflate RSS a little): what
    the pipeline's objects take, apart from LanceDB's and Arrow's native memory.
    """
    tasks.workspace.load_embedder = lambda space, *args: CheapEmbedder(space)  # type: ignore[assignment]
    if mode == "held":
        tasks.workspace.read_source = read_held  # type: ignore[assignment]
    base = _peak_mb()
    writes_done: list[float] = []

    def progress(done: int, total: int) -> None:
        if done == total:  # the last batch is written; the BM25 index build comes next
            writes_done.append(_peak_mb())

    if heap:
        tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), write_batch_size=batch_docs, ann_min_rows=10**12)
        start = time.perf_counter()
        report, read = Workspace.open(settings).ingest(source, "bench", fmt="jsonl", progress=progress)
        seconds = time.perf_counter() - start
        assert report.added == len(read.documents), report
    figures = {"base_mb": base, "pipeline_mb": writes_done[0], "peak_mb": _peak_mb(), "seconds": seconds}
    if heap:
        figures["heap_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    print(json.dumps(figures))
    return 0


def read_held(*args: Any, **kwargs: Any) -> SourceReport:
    """``read_source`` as it was before streaming: every document in one list, held through the ingest."""
    read = read_source(*args, **kwargs)
    return replace(read, documents=list(read.documents))  # type: ignore[arg-type]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


if __name__ == "__main__":
    sys.exit(main())
