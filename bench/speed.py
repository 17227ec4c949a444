"""Ingest overhead, re-index cost and query latency on Cranfield, measured side by side in one run.

Usage: python bench/speed.py [DATA_DIR] [--rounds N]
1. Pipeline overhead: full ``zsr`` ingest (read, validate, chunk, hash, embed, cache, write, BM25 index)
   against raw ``SentenceTransformer.encode`` of exactly the texts the pipeline embeds, same loaded model,
   alternated over N rounds (min of each side).
2. Re-index of the unchanged corpus against the full ingest.
3. Per-query latency (p50/p95) of dense, bm25 and hybrid over Cranfield's 225 queries, one query a call.
Exits 1 when a ratio target (overhead <= 15%, unchanged re-index <= 2%) is missed; latencies are printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tasks.evaluation.measures import load_queries
from tasks.ingest.chunking import chunk_documents
from tasks.ingest.embed import SentenceTransformerEmbedder, vector_space
from tasks.ingest.sources import read_source
from tasks.settings import Settings
from tasks.workspace import Workspace, embedder_factory


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    folder = args.data / "cranfield"
    base = Settings()
    embedder = embedder_factory(vector_space(base.embedding_model), base)()  # load once, shared by both sides
    assert isinstance(embedder, SentenceTransformerEmbedder)  # the raw side calls its model directly
    docs = list(read_source(folder, fmt="beir", skip_bad=True).documents)
    texts = [c.text for c in chunk_documents(docs, embedder, base.chunk_overlap)]

    raw, full, again = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            start = time.perf_counter()
            embedder.model.encode(texts, batch_size=base.batch_size, normalize_embeddings=True)
            raw.append(time.perf_counter() - start)
            ws = Workspace.open(Settings(home=Path(tmp) / f"round{r}"))
            start = time.perf_counter()
            ws.ingest(folder, "cranfield", fmt="beir", skip_bad=True)
            full.append(time.perf_counter() - start)
            start = time.perf_counter()
            report, _ = ws.ingest(folder, "cranfield", fmt="beir", skip_bad=True)
            again.append(time.perf_counter() - start)
            assert report.unchanged == len(docs) and report.chunks_encoded == 0
        print(f"documents {len(docs)}, chunks {len(texts)}, rounds {args.rounds}")
        print(f"raw encode            {min(raw):7.2f} s  ({len(texts) / min(raw):.1f} chunks/s)")
        print(f"full ingest           {min(full):7.2f} s  ({len(docs) / min(full):.1f} docs/s)")
        overhead, reindex = min(full) / min(raw) - 1, min(again) / min(full)
        missed = [
            name for name, ok in (("overhead", overhead <= 0.15), ("re-index", reindex <= 0.02)) if not ok
        ]
        print(f"pipeline overhead     {overhead:+7.1%}   (target <= +15%)")
        print(f"unchanged re-index    {min(again):7.3f} s = {reindex:.2%} of the full ingest (target <= 2%)")

        engine = ws.searcher("cranfield")
        queries = list(load_queries(folder / "queries.jsonl").values())
        engine.search(queries[0], "dense")  # warm caches and the query encoder
        print("method   p50 ms   p95 ms")
        for method in ("dense", "bm25", "hybrid"):
            times = []
            for query in queries:
                start = time.perf_counter()
                engine.search(query, method, k=10)
                times.append((time.perf_counter() - start) * 1000)
            print(f"{method:7} {np.percentile(times, 50):7.1f}  {np.percentile(times, 95):7.1f}")
    if missed:
        print(f"TARGET MISSED: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
