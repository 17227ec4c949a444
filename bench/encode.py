"""Encoding backends side by side in one run: throughput, agreement with torch, and retrieval quality.

Usage: python bench/encode.py [DATA_DIR] [--rounds N] [--chunks N] [--datasets NAME ...]  (bench/data)
1. Throughput: each backend (``ZSR_EMBEDDING_BACKEND``) encodes Cranfield's chunk texts (the first N),
   the backends alternated over N rounds (min of each), in chunks/s and as a speed-up over torch; the
   first load of an ONNX backend exports the model into a temporary home, and its time is printed too.
2. Agreement: cosine of each backend's vectors of the same chunks (and of Cranfield's queries) to torch's.
3. Quality: Cranfield and CISI (or --datasets) ingested with each backend (a temporary home per backend, as
   bench/quality.py does) and evaluated dense: nDCG@10 and R@100.
The rule of issue 14: int8 becomes the default only if it loses <= 0.005 nDCG@10 on both collections;
the verdict is printed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import get_args

import numpy as np
from quality import load

from tasks.evaluation.measures import load_queries
from tasks.ingest.chunking import chunk_documents
from tasks.ingest.embed import Embedder, vector_space
from tasks.ingest.sources import read_source
from tasks.settings import EmbeddingBackend, Settings
from tasks.workspace import Workspace, embedder_factory

BACKENDS: tuple[EmbeddingBackend, ...] = get_args(EmbeddingBackend)
TORCH = BACKENDS[0]
MAX_LOSS = 0.005  # nDCG@10 int8 may lose on each collection and still become the default
DATASETS = ("cranfield", "cisi")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=None, help="the first N chunks only")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), help="collections for quality")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = {b: Settings(home=Path(tmp) / b, embedding_backend=b) for b in BACKENDS}
        embedders: dict[EmbeddingBackend, Embedder] = {}
        for backend, s in settings.items():
            start = time.perf_counter()
            embedders[backend] = embedder_factory(vector_space(s.embedding_model, backend=backend), s)()
            print(f"{backend:22} first load (export included) {time.perf_counter() - start:6.1f} s")
        folder = args.data / "cranfield"
        docs = read_source(folder, fmt="beir", skip_bad=True).documents
        chunks = chunk_documents(docs, embedders[TORCH], Settings().chunk_overlap)
        texts = [c.text for c in chunks][: args.chunks]
        queries = list(load_queries(folder / "queries.jsonl").values())

        seconds: dict[str, list[float]] = {b: [] for b in BACKENDS}
        vectors: dict[str, np.ndarray] = {}
        for _ in range(args.rounds):
            for backend, embedder in embedders.items():
                start = time.perf_counter()
                vectors[backend] = embedder.encode(texts, queries=False)
                seconds[backend].append(time.perf_counter() - start)
        asked = {b: e.encode(queries, queries=True) for b, e in embedders.items()}

        print(f"\nCranfield: {len(texts)} of {len(chunks)} chunks, {len(queries)} queries")
        print(f"throughput: min of {args.rounds} rounds, backends alternated")
        header = ("backend", "chunks/s", "speed-up", "cos min", "cos mean", "query min")
        print("{:22} {:>9} {:>9} {:>8} {:>9} {:>9}".format(*header))
        for backend in BACKENDS:
            rate = len(texts) / min(seconds[backend])
            chunk_cos = (vectors[backend] * vectors[TORCH]).sum(axis=1)
            query_cos = (asked[backend] * asked[TORCH]).sum(axis=1)
            print(
                f"{backend:22} {rate:9.1f} {min(seconds[TORCH]) / min(seconds[backend]):8.2f}x "
                f"{chunk_cos.min():8.4f} {chunk_cos.mean():9.4f} {query_cos.min():9.4f}"
            )

        ndcg: dict[tuple[str, str], float] = {}
        print(f"\n{'dataset':10} {'backend':22} {'nDCG@10':>8} {'R@100':>7}")
        for dataset in args.datasets:
            for backend, s in settings.items():
                ws = Workspace.open(s)
                load(ws, args.data, dataset)
                (run,) = ws.evaluate(dataset, "human", ["dense"], ["nDCG@10", "R@100"]).runs
                ndcg[dataset, backend] = run.metrics["nDCG@10"]
                print(f"{dataset:10} {backend:22} {run.metrics['nDCG@10']:8.3f} {run.metrics['R@100']:7.3f}")
    losses = {d: ndcg[d, TORCH] - ndcg[d, "onnx-int8"] for d in args.datasets}
    qualifies = all(loss <= MAX_LOSS for loss in losses.values())
    shown = ", ".join(f"{d} {loss:+.4f}" for d, loss in losses.items())
    print(f"\nint8 nDCG@10 loss vs torch: {shown} (rule: <= {MAX_LOSS} on each of {', '.join(DATASETS)})")
    print(f"int8 {'qualifies' if qualifies else 'does not qualify'} as the default backend on these")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
