"""Evaluation runs: score methods on a test set and publish every number to the warehouse.

Each method gets one run (its own ``run_id``); the methods of one ``zsr eval`` share an ``eval_id``. All
inputs are validated before any retrieval starts, and a run becomes visible in the warehouse only once all
of its rows are stored (see ``storage.warehouse``).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pyarrow as pa

from storage.warehouse import SCHEMAS, Warehouse
from tasks.evaluation.measures import DEFAULT_MEASURES, parse_measures, score_queries
from tasks.evaluation.testsets import TestSet
from tasks.methods.base import QueryTrace
from tasks.methods.registry import Method, parse_method
from tasks.methods.search import Ranking, Searcher

log = logging.getLogger(__name__)

PACKAGES = ("zsr", "lancedb", "sentence-transformers", "torch", "ir-measures", "duckdb", "litellm", "prefect")
_CUTOFF = re.compile(r"@(\d+)$")


@dataclass
class RunResult:
    """One published run, with how much of it the method's fallback answered (every front end shows it)."""

    run_id: str
    method: str
    metrics: dict[str, float]
    n_queries: int
    retrieval_seconds: float
    eval_seconds: float
    fallback_share: float = 0.0  # share of queries that fell back (an LLM that failed, a judge that refused)
    llm_errors: int = 0  # LLM answers that failed or could not be used, over all queries

    def warning(self, threshold: float) -> str | None:
        """The warning to show beside the scores when more than ``threshold`` of the queries fell back."""
        return fallback_warning(self.method, self.fallback_share, self.n_queries, self.llm_errors, threshold)


def fallback_stats(traces: Iterable[QueryTrace]) -> tuple[float, int]:
    """``(share of queries that fell back, LLM errors)`` over the queries' traces."""
    traces = list(traces)
    fell = sum(t.fallback is not None for t in traces)
    return (fell / len(traces) if traces else 0.0), sum(t.llm_errors for t in traces)


def fallback_warning(
    method: str, share: float, n_queries: int, llm_errors: int, threshold: float, reason: str | None = None
) -> str | None:
    """A line saying that ``method``'s scores are largely its fallback's; ``None`` at or below ``threshold``.

    A method whose LLM calls all fail still scores (its fallback's ranking), so the number alone misleads.
    """
    if share <= threshold:
        return None
    if n_queries == 1:
        return f"{method}: the query fell back ({reason or 'see its trace'}); {llm_errors} LLM errors"
    fell = round(share * n_queries)
    return f"{method}: {fell} of {n_queries} queries ({share:.0%}) fell back; {llm_errors} LLM errors"


def new_id(label: str = "") -> str:
    """A sortable, readable, unique id: UTC time, an optional label, random suffix."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    label = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    return "-".join(filter(None, (stamp, label, secrets.token_hex(3))))


def depth_for(measures: Sequence[str]) -> int:
    """How many documents to retrieve: the deepest cutoff asked for, at least 100, 1000 for uncut measures."""
    cutoffs = [_CUTOFF.search(m) for m in measures]
    if any(c is None for c in cutoffs):
        return 1000
    return max(100, *(int(c.group(1)) for c in cutoffs if c))


def git_sha() -> str | None:
    """The commit of the zsr checkout, when zsr runs from one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def prepare(methods: Sequence[str], measures: Sequence[str] | None) -> tuple[list[Method], list[str]]:
    """Parse methods and measures up front, so a typo fails before any work starts."""
    if not methods:
        raise ValueError("no methods given; try --methods dense,bm25,hybrid")
    parsed = [parse_method(m) for m in methods]
    measures = list(measures or DEFAULT_MEASURES)
    parse_measures(measures)
    return parsed, measures


def evaluate_methods(
    searcher: Searcher,
    testset: TestSet,
    methods: Sequence[str],
    warehouse: Warehouse,
    *,
    measures: Sequence[str] | None = None,
    depth: int | None = None,
    eval_id: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[RunResult]:
    """Run each method over the test set's judged queries, score it and publish it as a run.

    Queries are searched one at a time so each gets an honest latency, and its LLM cost and fallback are
    recorded beside it. ``progress`` is called with (method, queries done, queries total).
    """
    parsed, measures = prepare(methods, measures)
    if not testset.queries or not testset.qrels:
        raise ValueError(f"test set {testset.name!r} of corpus {testset.corpus!r} has no judged queries")
    depth = depth or depth_for(measures)
    eval_id = eval_id or new_id()
    versions = searcher.store.versions(searcher.corpus)
    common = {
        "eval_id": eval_id,
        "corpus": searcher.corpus,
        "testset": testset.name,
        "testset_hash": testset.content_hash,
        "depth": depth,
        "embedding_model": searcher.info.model,
        "git_sha": git_sha(),
        "packages": json.dumps(package_versions(), sort_keys=True),
        "documents_version": versions["documents"],
        "views_version": versions["views"],
    }
    searcher.warm_up()  # model loading must not count as the first query's latency
    results = []
    for method in parsed:
        rankings: dict[str, Ranking] = {}
        latency: dict[str, float] = {}
        traces: dict[str, QueryTrace] = {}
        started = time.perf_counter()
        for done, (qid, text) in enumerate(testset.queries.items(), start=1):
            t0 = time.perf_counter()
            rankings[qid] = searcher.search_batch({qid: text}, method, depth)[qid]  # the id reaches the judge
            latency[qid] = (time.perf_counter() - t0) * 1000
            traces[qid] = searcher.last_trace[qid]
            if progress:
                progress(str(method), done, len(testset.queries))
        retrieval = time.perf_counter() - started
        started = time.perf_counter()
        fallback_share, llm_errors = fallback_stats(traces.values())
        aggregate, per_query = score_queries(rankings, testset.qrels, measures)
        run_id = new_id(method.name)
        # What actually answered, judges included (an oracle judge is provenance too); null when nothing did.
        used = {t.llm for t in traces.values() if t.llm} | {
            f"judge={t.judge}" for t in traces.values() if t.judge
        }
        result = RunResult(
            run_id,
            str(method),
            aggregate,
            len(testset.queries),
            retrieval,
            time.perf_counter() - started,
            fallback_share,
            llm_errors,
        )
        warehouse.write_run(
            _run_row(result, method, {**common, "llm_model": "; ".join(sorted(used)) or None}),
            _data(run_id, rankings, latency, traces, aggregate, per_query),
        )
        result.eval_seconds = time.perf_counter() - started  # unlike the runs row, counts the write too
        results.append(result)
        log.info("run %s (%s): %s; %.0f%% fell back", run_id, method, aggregate, 100 * fallback_share)
    return results


def _run_row(result: RunResult, method: Method, common: dict) -> pa.Table:
    row = {
        **common,
        "run_id": result.run_id,
        "created_at": datetime.now(UTC),
        "method": str(method),
        "method_name": method.name,
        "params": method.params.model_dump_json(),
        "n_queries": result.n_queries,
        "retrieval_seconds": result.retrieval_seconds,
        "eval_seconds": result.eval_seconds,
        "fallback_share": result.fallback_share,
        "llm_errors": result.llm_errors,
    }
    return pa.Table.from_pylist([row], SCHEMAS["runs"])


def _data(
    run_id: str,
    rankings: dict[str, Ranking],
    latency: dict[str, float],
    traces: dict[str, QueryTrace],
    aggregate: dict[str, float],
    per_query: list[tuple[str, str, float]],
) -> dict[str, pa.Table]:
    ranked = [
        (qid, doc_id, r, score) for qid, hits in rankings.items() for r, (doc_id, score) in enumerate(hits, 1)
    ]
    qids, docs, ranks, scores = (
        (list(col) for col in zip(*ranked, strict=True)) if ranked else ([], [], [], [])
    )
    return {
        "metrics": pa.table(
            {
                "run_id": [run_id] * len(aggregate),
                "measure": list(aggregate),
                "value": list(aggregate.values()),
            }
        ),
        "query_metrics": pa.table(
            {
                "run_id": [run_id] * len(per_query),
                "query_id": [q for q, _, _ in per_query],
                "measure": [m for _, m, _ in per_query],
                "value": [v for _, _, v in per_query],
            }
        ),
        "queries": pa.Table.from_pylist(
            [
                {"run_id": run_id, "query_id": qid, "latency_ms": ms, **traces[qid].counts()}
                for qid, ms in latency.items()
            ],
            SCHEMAS["queries"],
        ),
        "rankings": pa.table(
            {"run_id": [run_id] * len(qids), "query_id": qids, "doc_id": docs, "rank": ranks, "score": scores}
        ),
    }
