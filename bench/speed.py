"""Ingest overhead, re-index cost and query latency, measured side by side in one run.

Usage: python bench/speed.py [DATA_DIR] [--rounds N] [--queries N] [--vectors N]
1. Pipeline overhead: full ``zsr`` ingest of Cranfield (read, validate, chunk, hash, embed, cache, write, BM25
   index) against raw ``SentenceTransformer.encode`` of exactly the texts the pipeline embeds, same loaded
   model, alternated over N rounds (min of each side).
2. Re-index of the unchanged corpus against the full ingest.
3. Vector search alone at ~``--vectors`` chunks (default 10k): ``Searcher.search_vectors`` (top 10 documents)
   against NumPy exact search (top 10 rows) over the same in-memory matrix, alternated query by query. The
   corpus is Cranfield's documents and views copied until it holds that many chunks, each copy's vectors
   jittered (real all-MiniLM-L6-v2 vectors, Gaussian noise ``SIGMA`` a dimension, renormalised); the
   queries are Cranfield's, encoded once.
4. Per-query latency (p50/p95), one query a call, warm, top 10: dense (query encoding included) on the copied
   corpus and on Cranfield; bm25, hybrid and each query-time method that needs no LLM on Cranfield, with its
   overhead over its first stage (prf over dense, rm3 over bm25, multiview over dense; multiview's query
   views are empty, as no synthetic queries were generated). d2q, HyDE, ReDE-RF and rerank need an LLM (or
   an expanded index an LLM wrote) and are left out.
5. bm25 over a batch of queries (``search_batch``), in threads against one at a time.
6. A cold one-shot ``zsr search`` (a fresh process: imports, model load, one query), wall time.
Exits 1 when a target is missed: overhead <= 15%, unchanged re-index <= 2%, vector search <= 2x NumPy.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import tasks.methods.search
from storage.corpus_store import CorpusStore
from storage.documents import documents_table
from storage.lance import arrow_to_vectors, vectors_to_arrow
from storage.matrix import ViewMatrix
from storage.views import views_table
from tasks.evaluation.measures import load_queries
from tasks.ingest.chunking import chunk_documents
from tasks.ingest.embed import SentenceTransformerEmbedder, vector_space
from tasks.ingest.sources import read_source
from tasks.methods.search import Searcher
from tasks.settings import Settings
from tasks.workspace import Workspace, embedder_factory

K = 10
# Jitter a dimension: a unit MiniLM vector has ~1/sqrt(384) = 0.051 a dimension, so a copy lands at cosine
# ~0.75 from its source, about as far as a chunk's nearest other real chunk: copies are not near-duplicates.
SIGMA = 0.044
# (method, the first stage its overhead is measured against)
METHODS = [
    ("dense", None),
    ("bm25", None),
    ("hybrid", None),
    ("prf", "dense"),
    ("rm3", "bm25"),
    ("multiview", "dense"),
]


def ingest_overhead(folder: Path, home: Path, rounds: int) -> tuple[Workspace, list[str]]:
    """Sections 1 and 2: the pipeline against raw encode, and the unchanged re-index; the last workspace."""
    base = Settings()
    embedder = embedder_factory(vector_space(base.embedding_model), base)()  # load once, shared by both sides
    assert isinstance(embedder, SentenceTransformerEmbedder)  # the raw side calls its model directly
    docs = list(read_source(folder, fmt="beir", skip_bad=True).documents)
    texts = [c.text for c in chunk_documents(docs, embedder, base.chunk_overlap)]
    raw, full, again = [], [], []
    for r in range(rounds):
        start = time.perf_counter()
        embedder.model.encode(texts, batch_size=base.batch_size, normalize_embeddings=True)
        raw.append(time.perf_counter() - start)
        ws = Workspace.open(Settings(home=home / f"round{r}"))
        start = time.perf_counter()
        ws.ingest(folder, "cranfield", fmt="beir", skip_bad=True)
        full.append(time.perf_counter() - start)
        start = time.perf_counter()
        report, _ = ws.ingest(folder, "cranfield", fmt="beir", skip_bad=True)
        again.append(time.perf_counter() - start)
        assert report.unchanged == len(docs) and report.chunks_encoded == 0
    print(f"documents {len(docs)}, chunks {len(texts)}, rounds {rounds}")
    print(f"raw encode            {min(raw):7.2f} s  ({len(texts) / min(raw):.1f} chunks/s)")
    print(f"full ingest           {min(full):7.2f} s  ({len(docs) / min(full):.1f} docs/s)")
    overhead, reindex = min(full) / min(raw) - 1, min(again) / min(full)
    print(f"pipeline overhead     {overhead:+7.1%}   (target <= +15%)")
    print(f"unchanged re-index    {min(again):7.3f} s = {reindex:.2%} of the full ingest (target <= 2%)")
    targets = (("overhead", overhead <= 0.15), ("re-index", reindex <= 0.02))
    return ws, [name for name, ok in targets if not ok]


def jittered_copy(store: CorpusStore, source: str, name: str, vectors: int) -> int:
    """Corpus ``name``: ``source``'s documents and views copied until it has ``vectors`` chunks or more.

    Copy ``c`` suffixes every id with ``~c``; copy 0 keeps the real vectors, later ones are jittered. Returns
    the number of views.
    """
    info = store.registry.corpus(source)
    docs = store.documents.table(source).to_arrow()
    views = store.views.table(source, info.space).to_arrow()
    rng = np.random.default_rng(14)
    doc_copies, view_copies = [], []
    for c in range(math.ceil(vectors / views.num_rows)):
        doc_copies.append(with_column(docs, "doc_id", suffixed(docs["doc_id"], c)))
        copy = arrow_to_vectors(views["vector"])
        if c:
            copy = copy + SIGMA * rng.standard_normal(copy.shape, np.float32)
            copy /= np.linalg.norm(copy, axis=1, keepdims=True)
        copied = with_column(views, "vector", vectors_to_arrow(copy))
        for column in ("doc_id", "view_id"):
            copied = with_column(copied, column, suffixed(views[column], c))
        view_copies.append(copied)
    store.lance.db.create_table(documents_table(name), pa.concat_tables(doc_copies))
    store.lance.db.create_table(views_table(name, info.space), pa.concat_tables(view_copies))
    store.documents.rebuild_fts(name)
    store.registry.register(replace(info, name=name))
    return sum(t.num_rows for t in view_copies)


def suffixed(ids: pa.ChunkedArray, copy: int) -> pa.ChunkedArray:
    return pc.binary_join_element_wise(ids, pa.scalar(f"~{copy}"), "")


def with_column(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def percentiles(times: list[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def timed(call: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    call(*args)
    return (time.perf_counter() - start) * 1000


def vector_search(engine: Searcher, queries: list[str]) -> bool:
    """Section 3; whether vector search stays within 2x of NumPy exact."""
    vectors = engine.encode(queries, queries=True)
    matrix = engine.store.search.matrices.get(views_table(engine.corpus, engine.info.space))
    assert isinstance(matrix, ViewMatrix), "the copied corpus is searched exactly, from memory, in float32"

    def numpy_exact(q: np.ndarray) -> np.ndarray:
        scores = matrix.vectors @ q
        top = np.argpartition(scores, -K)[-K:]
        return top[np.argsort(-scores[top])]

    sides = {"ours": lambda q: engine.search_vectors(q[None, :], K), "numpy": numpy_exact}
    times: dict[str, list[float]] = {side: [] for side in sides}
    # Side by side in blocks, twice in turn: alternating query by query would let the threads one side's BLAS
    # leaves spinning slow the next call of the other.
    for _ in range(2):
        for side, search in sides.items():
            search(vectors[0])
            times[side] += [timed(search, q) for q in vectors]
    ours, numpy = times["ours"], times["numpy"]
    ratio = percentiles(ours)[0] / percentiles(numpy)[0]
    rows, dim = matrix.vectors.shape
    print(f"vector search alone, {rows} x {dim}, top {K}, {len(queries)} queries      p50 ms   p95 ms")
    print("  NumPy exact (matrix @ q, argpartition)       {:7.3f}  {:7.3f}".format(*percentiles(numpy)))
    print("  Searcher.search_vectors                      {:7.3f}  {:7.3f}".format(*percentiles(ours)))
    print(f"  ratio to NumPy (p50)                         {ratio:7.2f}x  (target <= 2x)")
    return ratio <= 2


def method_latency(engines: dict[str, Searcher], queries: list[str]) -> None:
    """Section 4: p50/p95 per method, one query a call, and each method's overhead over its first stage."""
    p50: dict[str, float] = {}
    print(f"per query, top {K}, {len(queries)} queries       p50 ms   p95 ms   over its first stage (p50)")
    for label, engine in engines.items():
        for method, first in METHODS if label == "cranfield" else METHODS[:1]:
            engine.search(queries[0], method, K)  # warm: model, tables, caches
            times = [timed(engine.search, q, method, K) for q in queries]
            p50[method], p95 = percentiles(times)
            over = f"+{p50[method] - p50[first]:.1f} ms over {first}" if first else ""
            print(f"  {method:10} {label:22} {p50[method]:7.1f}  {p95:7.1f}   {over}")


def bm25_batch(engine: Searcher, queries: list[str]) -> None:
    """Section 5: ``search_batch`` of every query by bm25, in threads against one at a time."""
    batch = {str(i): q for i, q in enumerate(queries)}
    threads = tasks.methods.search.BM25_THREADS
    took: dict[int, float] = {}
    for n in (1, threads, 1, threads):  # twice each, alternated; the faster of each
        tasks.methods.search.BM25_THREADS = n
        took[n] = min(took.get(n, math.inf), timed(engine.search_batch, batch, "bm25", K))
    tasks.methods.search.BM25_THREADS = threads
    print(
        f"bm25 search_batch of {len(batch)} queries: one at a time {took[1] / len(batch):.2f} ms a query, "
        f"{threads} threads {took[threads] / len(batch):.2f} ms a query ({took[1] / took[threads]:.2f}x)"
    )


def cold_search(home: Path, query: str, runs: int = 3) -> None:
    """Section 6: ``zsr search`` in a fresh process (imports, model load, one query), wall time."""
    env = {**os.environ, "ZSR_HOME": str(home)}
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "flows.cli", "search", query, "--corpus", "cranfield", "-m", "dense"],
            env=env,
            check=True,
            capture_output=True,
        )
        walls.append(time.perf_counter() - start)
    median, least = np.median(walls), min(walls)
    print(f"cold one-shot `zsr search -m dense`: {median:.2f} s wall (median of {runs}; min {least:.2f} s)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--queries", type=int, default=None, help="the first N of Cranfield's queries")
    parser.add_argument("--vectors", type=int, default=10_000, help="chunks of the copied corpus")
    args = parser.parse_args()
    folder = args.data / "cranfield"
    queries = list(load_queries(folder / "queries.jsonl").values())[: args.queries]
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at the start")
    with tempfile.TemporaryDirectory() as tmp:
        ws, missed = ingest_overhead(folder, Path(tmp), args.rounds)
        views = jittered_copy(ws.store, "cranfield", "copied", args.vectors)
        print(f"copied corpus: {views} chunks (Cranfield's, jittered copies, sigma {SIGMA} a dimension)")
        copied = ws.searcher("copied")
        if not vector_search(copied, queries):
            missed.append("vector search")
        method_latency({"copied": copied, "cranfield": ws.searcher("cranfield")}, queries)
        bm25_batch(ws.searcher("cranfield"), queries)
        cold_search(ws.settings.home_dir, queries[0])
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if missed:
        print(f"TARGET MISSED: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
