"""The ``reindex`` flow: bring a corpus in line with its source, then refresh its multi-view representations.

Schedule: none of its own; it runs on demand and as the first step of ``nightly`` (deployment
``nightly-reindex``, see ``deployments/prefect.yaml``).
Side effects: LanceDB tables of the corpus (documents, views, embedding cache, BM25 and expanded indexes);
artifacts ``reindex-<corpus>`` (what changed) and ``reindex-<corpus>-progress``.
Idempotency key: each document's content hash. An unchanged source loads no model and writes nothing,
and a run killed midway and started again ends with the tables of an uninterrupted run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows import steps
from tasks.ingest.formats import SourceFormat
from tasks.settings import Chunking


@flow(name="reindex", flow_run_name="reindex-{corpus}", timeout_seconds=6 * 3600, log_prints=False)
def reindex(
    corpus: str = "demo",
    source: str = "demo/cranfield",
    fmt: SourceFormat | None = None,
    skip_bad: bool = False,
    keep_deleted: bool = False,
    chunking: Chunking | None = None,
    refresh_views: bool = True,
    promptreps: bool = False,
    model: str | None = None,
) -> dict[str, Any]:
    """Re-index ``corpus`` from ``source``: only new and changed documents are embedded.

    Args:
        corpus: Corpus name (letters, digits, '-', '_').
        source: BEIR folder, .jsonl/.csv/.parquet file or folder of documents; relative paths are read
            from the deployment's working directory (the zsr checkout).
        fmt: Source format; detected when empty.
        skip_bad: Skip bad records and report them instead of failing.
        keep_deleted: Keep documents that are gone from the source.
        chunking: How chunk vectors of a new corpus are made: tokens (each chunk alone) or late (pooled from
            one pass over the whole document); empty: ZSR_CHUNKING. A corpus keeps its own.
        refresh_views: Also rebuild title and query views and the expanded BM25 index.
        promptreps: Also bring the corpus's PromptReps index up to date (ZSR_PROMPTREPS_MODEL; slow: an LM
            reads every new or changed chunk).
        model: Move the corpus to this model (name, path or adapted version) without downtime: its vectors
            are built beside the old ones and switched to when complete; empty: keep the corpus's model.
    """
    log = get_run_logger()
    report = steps.index_source(source, corpus, fmt, skip_bad, keep_deleted, chunking, model)
    log.info(
        "%s: %d added, %d changed, %d deleted, %d unchanged; %d chunks encoded, %d from cache",
        corpus,
        report["added"],
        report["changed"],
        report["deleted"],
        report["unchanged"],
        report["chunks_encoded"],
        report["chunks_cached"],
    )
    moved = report["upgrade"]
    if moved:
        log.info(
            "%s: model %s, drift map cosine %.3f; %s",
            corpus,
            moved["model"],
            moved["cosine_after"],
            f"switched to space {moved['new_space']}" if moved["switched"] else "not switched",
        )
    for problem in report["skipped"]:
        log.warning("skipped %s", problem)
    views = steps.refresh_views(corpus) if refresh_views else None
    if views:
        log.info("views of %s: %d added, %d removed", corpus, views["added"], views["deleted"])
    reps = steps.index_promptreps(corpus) if promptreps else None
    if reps:
        log.info(
            "PromptReps of %s: %d documents represented, %d deleted", corpus, reps["added"], reps["deleted"]
        )
    rows = [
        {"what": what, "count": report[what]}
        for what in ("added", "changed", "deleted", "unchanged", "kept_deleted", "chunks_encoded")
    ]
    rows += [{"what": "skipped records", "count": len(report["skipped"])}]
    rows += [{"what": f"{table} version", "count": v} for table, v in report["versions"].items()]
    if views:
        rows += [{"what": f"views {k}", "count": views[k]} for k in ("added", "deleted", "encoded")]
    create_table_artifact(
        rows,
        key=steps.slug("reindex", corpus),
        description=f"Re-index of {corpus} from {source} ({report['seconds']:.1f} s)",
    )
    return {"index": report, "views": views, "promptreps": reps}
