"""Encoding on Ray actors next to encoding in this process, in one run: throughput and overhead.

Usage: python bench/scale.py ADDRESS [--chunks N] [--rounds N] [--batch N]   (ADDRESS: a running Ray cluster,
e.g. 127.0.0.1:6379 after `ray start --head --num-cpus=1` and `ray start --address=... --num-cpus=1`)
Cranfield's chunk texts (the first N) are encoded in write batches of ``--batch`` chunks, as an ingest
hands them to its embedder, by: the model in this process pinned to one torch thread; a pool of one Ray
actor; a pool of two (one per node, each pinned to one thread by Ray's one CPU per actor). Paths alternate
over the rounds (min of each). Printed: chunks/s, the ratio of each to the local path, and the lowest
cosine of each path's vectors to the local ones. On a machine with as many cores as actors, two actors
can at best double one; on two shared cores the cluster's processes compete with the actors.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tasks.distributed.pool import PooledEmbedder
from tasks.ingest.chunking import chunk_documents
from tasks.ingest.embed import Embedder, vector_space
from tasks.ingest.sources import read_source
from tasks.settings import Settings
from tasks.workspace import embedder_factory


def timed(embedder: Embedder, batches: list[list[str]]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    vectors = np.concatenate([embedder.encode(b, queries=False) for b in batches])
    return time.perf_counter() - start, vectors


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent / "data" / "cranfield")
    parser.add_argument("--chunks", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = Settings()
    load: Callable[[], Embedder] = embedder_factory(vector_space(settings.embedding_model), settings)
    paths: dict[str, Embedder] = {"local, 1 thread": load()}
    start = time.perf_counter()
    pool = PooledEmbedder(args.address, load, 2)
    print(f"ray pool of 2 actors started, models loaded, in {time.perf_counter() - start:5.1f} s")
    one = copy.copy(pool)  # the first actor alone: a third one would wait for a CPU of the two
    one.actors = pool.actors[:1]
    paths["ray, 1 actor"], paths["ray, 2 actors"] = one, pool
    docs = read_source(args.data, fmt="beir", skip_bad=True).documents
    texts = [c.text for c in chunk_documents(docs, paths["local, 1 thread"], settings.chunk_overlap)]
    texts = texts[: args.chunks]
    batches = [texts[i : i + args.batch] for i in range(0, len(texts), args.batch)]
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, embedder in paths.items():
            spent, vectors[name] = timed(embedder, batches)
            seconds[name].append(spent)
    local = min(seconds["local, 1 thread"])
    print(f"{len(texts)} chunks in batches of {args.batch}, min of {args.rounds} rounds")
    for name, rounds in seconds.items():
        best = min(rounds)
        cosine = (vectors[name] * vectors["local, 1 thread"]).sum(axis=1).min()
        rate = len(texts) / best
        print(f"{name:16} {rate:7.1f} chunks/s  {local / best:5.2f}x local  min cosine {cosine:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
