"""The one evaluation sequence: check, plan, run each method, find the previous evaluation, report.

:func:`evaluate` is the sequence, and every front end runs it: ``zsr eval``, ``zsr demo`` and the benches
with :class:`Direct` steps (called in this process, through ``Workspace.evaluate``), the ``evaluate`` flow
with each step a Prefect task (``flows.steps.Orchestrated``, one task per method). Methods and measures
are parsed once (:func:`check`), before anything is read or loaded; each method's run is published to the
warehouse whole or not at all (:func:`run_method`); the methods of one evaluation share an ``eval_id``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from storage.warehouse import SCHEMAS, RunRecord, Warehouse
from tasks.evaluation.measures import DEFAULT_MEASURES, parse_measures, score_queries
from tasks.evaluation.provenance import (
    fallback_stats,
    fallback_warning,
    git_sha,
    id_pattern,
    method_tree,
    new_id,
    package_versions,
)
from tasks.evaluation.testsets import TestSet
from tasks.methods.base import QueryTrace
from tasks.methods.registry import Method, parse_method
from tasks.methods.search import Ranking, Searcher

log = logging.getLogger(__name__)

_CUTOFF = re.compile(r"@(\d+)$")
Progress = Callable[[str, int, int], None]  # (method, queries done, queries total)


@dataclass(frozen=True)
class RunResult(RunRecord):
    """A published run as front ends show it: its ``runs`` record, its aggregate metrics, its write time."""

    metrics: dict[str, float]
    publish_seconds: float = 0.0  # writing the run's files (``eval_seconds`` counts the scoring only)

    def warning(self, threshold: float) -> str | None:
        """The warning to show beside the scores when more than ``threshold`` of the queries fell back."""
        return fallback_warning(self.method, self.fallback_share, self.n_queries, self.llm_errors, threshold)


@dataclass(frozen=True)
class EvalRequest:
    """The methods and measures of an evaluation, parsed (ir-measures objects for the measures)."""

    methods: tuple[Method, ...]
    measures: tuple[Any, ...]


@dataclass(frozen=True)
class Plan:
    """Everything the runs of one evaluation share, fixed before the first query is searched."""

    corpus: str
    testset: TestSet
    methods: tuple[Method, ...]
    measures: tuple[Any, ...]
    depth: int
    eval_id: str
    label: str
    embedding_model: str
    vector_space: str
    versions: dict[str, int]  # LanceDB table versions of the corpus
    git_sha: str | None
    packages: str

    @property
    def measure_names(self) -> list[str]:
        """The measures as ir-measures writes them (the keys of every run's metrics)."""
        return [str(m) for m in self.measures]


@dataclass
class Evaluation:
    """What one evaluation published, and the runs of the previous one with the same label."""

    corpus: str
    testset: str
    label: str
    eval_id: str
    metrics: list[str]
    runs: list[RunResult]
    previous: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> run_id, eval_id, metrics
    report: str | None = None


def depth_for(measures: Sequence[str]) -> int:
    """How many documents to retrieve: the deepest cutoff asked for, at least 100, 1000 for uncut measures."""
    cutoffs = [_CUTOFF.search(m) for m in measures]
    if any(c is None for c in cutoffs):
        return 1000
    return max(100, *(int(c.group(1)) for c in cutoffs if c))


def finite(value: float | None) -> float | None:
    """``None`` for a missing or NaN value, so tables never show NaN."""
    return None if value is None or math.isnan(value) else value


def check(methods: Sequence[str], measures: Sequence[str] | None) -> EvalRequest:
    """Parse methods and measures, once per evaluation, so a typo fails before any work starts."""
    if not methods:
        raise ValueError("no methods given; try --methods dense,bm25,hybrid")
    parsed = tuple(parse_method(m) for m in methods)
    return EvalRequest(parsed, tuple(parse_measures(measures or DEFAULT_MEASURES)))


def plan(
    request: EvalRequest,
    engine: Searcher,
    testset: TestSet,
    *,
    depth: int | None = None,
    label: str = "",
    eval_id: str | None = None,
) -> Plan:
    """Fix what the runs share: the depth (from the measures unless given), the eval id, the provenance."""
    if not testset.queries or not testset.qrels:
        raise ValueError(f"test set {testset.name!r} of corpus {testset.corpus!r} has no judged queries")
    names = [str(m) for m in request.measures]
    return Plan(
        corpus=engine.corpus,
        testset=testset,
        methods=request.methods,
        measures=request.measures,
        depth=depth or depth_for(names),
        eval_id=eval_id or new_id(label),
        label=label,
        embedding_model=engine.info.space.model,
        vector_space=engine.info.space.key,
        versions=engine.store.versions(engine.corpus),
        git_sha=git_sha(),
        packages=json.dumps(package_versions(), sort_keys=True),
    )


def run_method(
    engine: Searcher, plan: Plan, method: Method, warehouse: Warehouse, progress: Progress | None = None
) -> RunResult:
    """Run ``method`` over the plan's judged queries, score it and publish it as one run (:func:`publish`)."""
    return publish(warehouse, score_method(engine, plan, method, progress))


@dataclass(frozen=True)
class Scored:
    """A run scored but not yet published: its record and its data tables (what a Ray worker hands back)."""

    result: RunResult
    data: dict[str, pa.Table]


def score_method(engine: Searcher, plan: Plan, method: Method, progress: Progress | None = None) -> Scored:
    """Run ``method`` over the plan's judged queries and score it; nothing is written.

    Queries are searched one at a time so each gets an honest latency, and its LLM cost and fallback are
    recorded beside it.
    """
    engine.warm_up()  # model loading must not count as the first query's latency
    queries = plan.testset.queries
    rankings: dict[str, Ranking] = {}
    latency: dict[str, float] = {}
    traces: dict[str, QueryTrace] = {}
    started = time.perf_counter()
    for done, (qid, text) in enumerate(queries.items(), start=1):
        t0 = time.perf_counter()
        rankings[qid] = engine.search_batch({qid: text}, method, plan.depth)[qid]  # the id reaches the judge
        latency[qid] = (time.perf_counter() - t0) * 1000
        traces[qid] = engine.last_trace[qid]
        if progress:
            progress(str(method), done, len(queries))
    retrieval = time.perf_counter() - started
    started = time.perf_counter()
    fallback_share, llm_errors = fallback_stats(traces.values())
    aggregate, per_query = score_queries(rankings, plan.testset.qrels, plan.measures)
    # What actually answered, judges included (an oracle judge is provenance too); null when nothing did.
    used = {t.llm for t in traces.values() if t.llm} | {
        f"judge={t.judge}" for t in traces.values() if t.judge
    }
    result = RunResult(
        run_id=new_id(method.name),
        eval_id=plan.eval_id,
        created_at=datetime.now(UTC),
        corpus=plan.corpus,
        testset=plan.testset.name,
        testset_hash=plan.testset.content_hash,
        method=str(method),
        method_name=method.name,
        params=json.dumps(method_tree(method)["params"]),
        depth=plan.depth,
        embedding_model=plan.embedding_model,
        vector_space=plan.vector_space,
        llm_model="; ".join(sorted(used)) or None,
        git_sha=plan.git_sha,
        packages=plan.packages,
        documents_version=plan.versions["documents"],
        views_version=plan.versions["views"],
        n_queries=len(queries),
        retrieval_seconds=retrieval,
        eval_seconds=time.perf_counter() - started,
        fallback_share=fallback_share,
        llm_errors=llm_errors,
        metrics=aggregate,
    )
    return Scored(result, _data(result.run_id, rankings, latency, traces, aggregate, per_query))


def publish(warehouse: Warehouse, scored: Scored) -> RunResult:
    """Publish a scored run: it lands whole or not at all (``Warehouse.write_run``)."""
    started = time.perf_counter()
    result = scored.result
    warehouse.write_run(result, scored.data)
    log.info(
        "run %s (%s): %s; %.0f%% fell back",
        result.run_id,
        result.method,
        result.metrics,
        100 * result.fallback_share,
    )
    return replace(result, publish_seconds=time.perf_counter() - started)


def previous_runs(warehouse: Warehouse, plan: Plan) -> dict[str, dict[str, Any]]:
    """``method -> {run_id, eval_id, metrics}`` of the latest earlier evaluation with the same label.

    Same corpus, same test set, and an eval id made with the same label (a deployment's name, say), so
    "the previous run of this deployment" is one query over the warehouse, with no need for the Prefect API.
    """
    rows = warehouse.query(
        """
        WITH previous AS (
            SELECT eval_id FROM runs
            WHERE corpus = $1 AND testset = $2 AND regexp_matches(eval_id, $3) AND eval_id <> $4
              AND created_at < (SELECT min(created_at) FROM runs WHERE eval_id = $4)
            ORDER BY created_at DESC, eval_id DESC LIMIT 1)
        SELECT r.method, r.run_id, r.eval_id, m.measure, m.value
        FROM runs r JOIN metrics m USING (run_id)
        WHERE r.eval_id = (SELECT eval_id FROM previous) AND r.corpus = $1 AND r.testset = $2
        ORDER BY r.created_at, r.run_id""",
        [plan.corpus, plan.testset.name, id_pattern(plan.label), plan.eval_id],
    ).to_pylist()
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = out.setdefault(
            row["method"], {"run_id": row["run_id"], "eval_id": row["eval_id"], "metrics": {}}
        )
        if entry["run_id"] == row["run_id"]:  # a method evaluated twice in one evaluation: the first run
            entry["metrics"][row["measure"]] = finite(row["value"])
    return out


class Steps(Protocol):
    """The steps of :func:`evaluate`: :class:`Direct` calls them in this process, the flow as tasks."""

    def check(self, methods: Sequence[str], measures: Sequence[str] | None) -> EvalRequest:
        """:func:`check`."""
        ...

    def open_searcher(self, corpus: str) -> Searcher:
        """A searcher over ``corpus`` (an unknown corpus fails here)."""
        ...

    def load_testset(self, corpus: str, name: str) -> TestSet:
        """The registered test set ``name`` of ``corpus``."""
        ...

    def run_method(self, engine: Searcher, plan: Plan, method: Method) -> RunResult:
        """:func:`run_method`."""
        ...

    def previous_runs(self, plan: Plan) -> dict[str, dict[str, Any]]:
        """:func:`previous_runs`."""
        ...

    def write_report(self, run_id: str, measure: str) -> str:
        """The HTML report of the evaluation ``run_id`` belongs to; returns its path."""
        ...


@dataclass
class Direct:
    """The steps called in this process, one after another, over the given warehouse and loaders."""

    warehouse: Warehouse
    searcher: Callable[[str], Searcher]
    testsets: Callable[[str, str], TestSet] | None = None  # without: evaluate takes TestSet objects only
    report: Callable[[str, str], Path] | None = None  # without: no reports
    progress: Progress | None = None

    def check(self, methods: Sequence[str], measures: Sequence[str] | None) -> EvalRequest:
        """:func:`check`."""
        return check(methods, measures)

    def open_searcher(self, corpus: str) -> Searcher:
        """A searcher over ``corpus``."""
        return self.searcher(corpus)

    def load_testset(self, corpus: str, name: str) -> TestSet:
        """The registered test set ``name`` of ``corpus``."""
        if self.testsets is None:
            raise LookupError(f"no test set registry to load {corpus}/{name} from; pass the TestSet itself")
        return self.testsets(corpus, name)

    def run_method(self, engine: Searcher, plan: Plan, method: Method) -> RunResult:
        """:func:`run_method`, into this warehouse."""
        return run_method(engine, plan, method, self.warehouse, self.progress)

    def previous_runs(self, plan: Plan) -> dict[str, dict[str, Any]]:
        """:func:`previous_runs`, from this warehouse."""
        return previous_runs(self.warehouse, plan)

    def write_report(self, run_id: str, measure: str) -> str:
        """The HTML report, by the given writer."""
        if self.report is None:
            raise ValueError("these evaluation steps write no reports")
        return str(self.report(run_id, measure))


def evaluate(
    steps: Steps,
    corpus: str,
    testset: str | TestSet,
    methods: Sequence[str],
    measures: Sequence[str] | None = None,
    *,
    depth: int | None = None,
    label: str = "",
    eval_id: str | None = None,
    compare: bool = False,
    report: bool = False,
) -> Evaluation:
    """Score each method on the test set into the warehouse: the evaluation sequence of every front end.

    Args:
        steps: How each step runs (:class:`Direct`, or the flow's Prefect tasks).
        corpus: An indexed corpus.
        testset: A test set registered for the corpus, or a :class:`TestSet` built in code (a subset).
        methods: Method strings, one run each.
        measures: ir-measures names (default: ``DEFAULT_MEASURES``); the first one heads the report.
        depth: Documents retrieved per query; default: from the measures (at least 100).
        label: Carried in the eval id; :func:`previous_runs` finds earlier evaluations by it.
        eval_id: Use this id instead of a new one (runs of several test sets in one evaluation).
        compare: Also find the previous evaluation with the same label (``Evaluation.previous``).
        report: Also write the HTML report (``Evaluation.report``).
    """
    engine, planned = prepare(
        steps, corpus, testset, methods, measures, depth=depth, label=label, eval_id=eval_id
    )
    runs = [steps.run_method(engine, planned, method) for method in planned.methods]
    return conclude(steps, planned, runs, compare=compare, report=report)


def prepare(
    steps: Steps,
    corpus: str,
    testset: str | TestSet,
    methods: Sequence[str],
    measures: Sequence[str] | None = None,
    *,
    depth: int | None = None,
    label: str = "",
    eval_id: str | None = None,
) -> tuple[Searcher, Plan]:
    """The first steps of :func:`evaluate` (its arguments): check, open the searcher, load, plan."""
    request = steps.check(methods, measures)  # typos fail before anything is read or loaded
    engine = steps.open_searcher(corpus)
    test = testset if isinstance(testset, TestSet) else steps.load_testset(corpus, testset)
    planned = plan(request, engine, test, depth=depth, label=label, eval_id=eval_id)
    log.info(
        "evaluation %s: %s on %s/%s (%d queries)",
        planned.eval_id,
        [str(m) for m in planned.methods],
        planned.corpus,
        test.name,
        len(test.queries),
    )
    return engine, planned


def conclude(
    steps: Steps, planned: Plan, runs: list[RunResult], *, compare: bool = False, report: bool = False
) -> Evaluation:
    """The last steps of :func:`evaluate`, once every run is published: the previous runs, the report."""
    result = Evaluation(
        planned.corpus, planned.testset.name, planned.label, planned.eval_id, planned.measure_names, runs
    )
    if compare:
        result.previous = steps.previous_runs(planned)
    if report:
        result.report = steps.write_report(runs[0].run_id, planned.measure_names[0])
    return result


def evaluate_methods(
    searcher: Searcher,
    testset: TestSet,
    methods: Sequence[str],
    warehouse: Warehouse,
    *,
    measures: Sequence[str] | None = None,
    depth: int | None = None,
    eval_id: str | None = None,
    progress: Progress | None = None,
) -> list[RunResult]:
    """The runs of :func:`evaluate` over a searcher and a test set in hand (simulations, agreement)."""
    steps = Direct(warehouse, lambda corpus: searcher, progress=progress)
    return evaluate(steps, searcher.corpus, testset, methods, measures, depth=depth, eval_id=eval_id).runs


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
