"""Issue 16's seed methods beside dense, bm25 and hybrid, in one run: quality, index time and size, latency.

Usage: python bench/seeds.py [DATA_DIR] [--datasets limit-small,cranfield,cisi] [--queries Q] [--docs N]
           [--json OUT.json]
Per collection, in one temporary ZSR_HOME: ingests it (MiniLM, naive chunks; the whitening fit is part of
this ingest), ingests it again as ``<dataset>-late`` with late chunking, builds its PromptReps index with
ZSR_PROMPTREPS_MODEL (default: the bundled SmolLM2-135M-Instruct), registers its qrels as test set ``human``
of both corpora, and evaluates every judged query through `zsr eval`'s path:

- bm25, dense, hybrid (score fusion, the default);
- dense(whiten=true) and dense(whiten=true, dims=128);
- dense on the late-chunked corpus;
- promptreps(mode=dense), promptreps(mode=sparse), promptreps(mode=hybrid) (alpha 0.5).

Prints nDCG@10, R@100 and R@2, the index each row searches (its build time and its tables' bytes on
disk), and the mean query latency (the run's retrieval seconds over its queries, query encoding
included: PromptReps reads each query through the LM), and PromptReps' tokens/s while indexing. Figures
are deterministic; times depend on the machine's load, so only those measured in the same run compare.
With ``--queries Q`` / ``--docs N`` each collection is cut to a sub-collection first (:func:`cut`): its first
Q judged queries, and every document judged for them plus the first other documents of the corpus, N in all;
every method then runs on that same sub-collection. The embedding models are loaded before any clock
starts. ``--json`` also writes every row to a file,
after each collection, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tasks.ingest.embed import load_embedder, vector_space
from tasks.settings import Settings
from tasks.workspace import Workspace

DATASETS = ("limit-small", "cranfield", "cisi")
MEASURES = ["nDCG@10", "R@100", "R@2"]
BASE = ["bm25", "dense", "hybrid"]
WHITENED = ["dense(whiten=true)", "dense(whiten=true, dims=128)"]
PROMPTREPS = ["promptreps(mode=dense)", "promptreps(mode=sparse)", "promptreps(mode=hybrid)"]


def table_bytes(home: Path, tables: list[str]) -> int:
    """Bytes on disk of LanceDB tables (every version kept: a fresh home has no other)."""
    return sum(
        f.stat().st_size for t in tables for f in (home / "lancedb" / f"{t}.lance").rglob("*") if f.is_file()
    )


def tables(home: Path, prefix: str, part: str) -> list[str]:
    """Names of the tables of ``home`` that start with ``prefix`` and contain ``part``."""
    names = (p.name.removesuffix(".lance") for p in (home / "lancedb").glob("*.lance"))
    return sorted(n for n in names if n.startswith(prefix) and part in n)


def cut(folder: Path, out: Path, queries: int, docs: int) -> Path:
    """A BEIR copy of ``folder``: its first ``queries`` judged queries and ``docs`` documents (0: all).

    The documents are every one judged for the kept queries, then the corpus's others in file order.
    """
    lines = (folder / "qrels" / "test.tsv").read_text().splitlines()
    qrels = [line.split("\t") for line in lines[1:]]
    judged = list(dict.fromkeys(q for q, _, _ in qrels))
    kept = set(judged[:queries] if queries else judged)
    rows = [r for r in qrels if r[0] in kept]
    wanted = {d for _, d, _ in rows}
    corpus = (folder / "corpus.jsonl").read_text().splitlines()
    ids = [json.loads(line)["_id"] for line in corpus]
    room = max(docs - len(wanted), 0) if docs else len(ids)
    wanted |= set([i for i in ids if i not in wanted][:room])
    (out / "qrels").mkdir(parents=True)
    (out / "corpus.jsonl").write_text(
        "".join(f"{c}\n" for c, i in zip(corpus, ids, strict=True) if i in wanted)
    )
    asked = (folder / "queries.jsonl").read_text().splitlines()
    (out / "queries.jsonl").write_text("".join(f"{q}\n" for q in asked if json.loads(q)["_id"] in kept))
    (out / "qrels" / "test.tsv").write_text("\n".join([lines[0], *("\t".join(r) for r in rows)]) + "\n")
    return out


def measure(ws: Workspace, home: Path, folder: Path, dataset: str) -> list[dict[str, Any]]:
    """Index the BEIR ``folder`` three ways as ``dataset`` and evaluate every method; one row per method."""
    started = time.perf_counter()
    report, _ = ws.ingest(folder, dataset, fmt="beir", skip_bad=True)  # Cranfield: 2 empty records skipped
    base_seconds = time.perf_counter() - started
    started = time.perf_counter()
    late, _ = ws.ingest(folder, f"{dataset}-late", fmt="beir", skip_bad=True, chunking="late")
    late_seconds = time.perf_counter() - started
    reps = ws.index_promptreps(dataset)
    testset, _ = ws.testsets.register(dataset, "human", folder)
    ws.testsets.register(f"{dataset}-late", "human", folder)
    key = ws.promptreps.space.key
    sizes = {
        "base": table_bytes(home, tables(home, f"{dataset}__documents", ""))
        + table_bytes(home, tables(home, f"{dataset}__views", ""))
        - table_bytes(home, tables(home, f"{dataset}__views", key)),
        "whitening": table_bytes(home, tables(home, f"{dataset}__whitening", "")),
        "late": table_bytes(home, tables(home, f"{dataset}-late__views", "")),
        "promptreps": table_bytes(home, tables(home, f"{dataset}__views", key)),
    }
    index = {
        "base": (base_seconds, sizes["base"]),
        "whitening": (base_seconds, sizes["base"] + sizes["whitening"]),
        "late": (late_seconds, sizes["late"]),
        "promptreps": (reps.seconds, sizes["promptreps"]),
    }
    print(
        f"{dataset}: {report.added} documents, {report.chunks_written} chunks; "
        f"{len(testset.queries)} queries; "
        f"late chunks {late.chunks_written}; PromptReps {reps.chunks_encoded} chunks, {reps.tokens} tokens "
        f"in {reps.encode_seconds:.0f} s = {reps.tokens_per_second:.0f} tokens/s",
        flush=True,
    )
    runs = [
        *((m, "base", dataset) for m in BASE),
        *((m, "whitening", dataset) for m in WHITENED),
        ("dense", "late", f"{dataset}-late"),
        *((m, "promptreps", dataset) for m in PROMPTREPS),
    ]
    rows = []
    for method, built, corpus in runs:
        [run] = ws.evaluate(corpus, "human", [method], MEASURES).runs
        seconds, size = index[built]
        rows.append(
            {
                "dataset": dataset,
                "method": f"{method} [late]" if built == "late" else method,
                **{m: run.metrics[m] for m in MEASURES},
                "index": built,
                "index_seconds": seconds,
                "index_bytes": size,
                "latency_ms": 1000 * run.retrieval_seconds / max(run.n_queries, 1),
                "tokens_per_second": reps.tokens_per_second if built == "promptreps" else None,
            }
        )
        row = rows[-1]
        print(
            f"  {row['method']:34} {row['nDCG@10']:.3f} {row['R@100']:.3f} {row['R@2']:.3f}  "
            f"index {built} {seconds:7.1f} s {size / 2**20:7.1f} MiB  {row['latency_ms']:8.1f} ms/query",
            flush=True,
        )
    return rows


def main() -> int:
    root = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", type=Path, default=root / "data")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--queries", type=int, default=0, help="judged queries kept per collection (0: all)")
    parser.add_argument("--docs", type=int, default=0, help="documents kept per collection (0: all)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    datasets = args.datasets.split(",")
    if not set(datasets) <= set(DATASETS):
        print(f"choose --datasets among {', '.join(DATASETS)}")
        return 1
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        settings = Settings(home=home)
        ws = Workspace.open(settings)
        for chunking in ("tokens", "late"):  # loaded once per process: the clocks below count no model load
            load_embedder(
                vector_space(settings.embedding_model, chunking=chunking),
                settings.device,
                settings.batch_size,
            )
        _ = ws.promptreps
        for dataset in datasets:
            folder = args.data / dataset
            if args.queries or args.docs:
                folder = cut(folder, home / "data" / dataset, args.queries, args.docs)
            rows += measure(ws, home, folder, dataset)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
