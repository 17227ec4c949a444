"""The one module of Prefect tasks: thin wrappers over ``tasks`` that add retries, timeouts and caching.

Every wrapper calls one function of the library and adds only orchestration:

- Retries with our own jitter (``RETRY_DELAYS`` spread by ``JITTER``), and only for errors a retry can
  fix: bad input (``ValueError``, ``LookupError``, a missing file) fails at once with its message.
- A timeout on every task, so a hung model or object store cannot hold a worker slot forever.
- ``INPUTS + TASK_SOURCE`` caching only where the inputs pin the answer: parsing methods and measures,
  and reports and comparisons of runs, which are immutable once published. Writes (indexing, generation,
  evaluation) never cache: their effect is the point, and their own idempotency keys (content hashes,
  query ids) make retries safe.
- The tag ``llm`` on tasks that call the LLM (generation with the LLM, evaluation of a method that
  :func:`~tasks.methods.registry.calls_llm`); ``zsr serve`` gives the tag a concurrency limit.
- Progress artifacts for long work (indexing, generation, evaluation), updated every 10 percent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import Task, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from storage.warehouse import Warehouse
from tasks.evaluation.compare import Comparison
from tasks.evaluation.runs import RunResult
from tasks.evaluation.testsets import TestSet
from tasks.methods.registry import calls_llm
from tasks.methods.search import Searcher
from tasks.settings import get_settings

LLM_TAG = "llm"
RETRY_DELAYS = [2, 10, 30]
JITTER = 0.5  # each delay becomes up to 1.5 times itself, so retries of parallel runs spread out
_PERMANENT = (ValueError, LookupError, FileNotFoundError, NotADirectoryError, PermissionError)
_LABEL_RE = "^[0-9]{{8}}-[0-9]{{6}}-{label}-[0-9a-f]{{6}}$"


def transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry unless the failure is bad input, which a retry only repeats (and delays the message)."""
    error = state.data if isinstance(state.data, BaseException) else None
    return not isinstance(error, _PERMANENT)


def slug(*parts: str) -> str:
    """A kebab-case name for artifact keys: lowercase letters, digits and single dashes."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


def finite(value: float | None) -> float | None:
    """``None`` for a missing or NaN value, so artifact tables never show NaN."""
    return None if value is None or math.isnan(value) else value


class ProgressArtifact:
    """A progress artifact under ``key``, updated when progress moves by ``step`` percent or finishes."""

    def __init__(self, key: str, description: str, step: float = 10.0) -> None:
        created = create_progress_artifact(progress=0.0, key=key, description=description)
        assert isinstance(created, UUID)  # the sync API, as tasks here are sync
        self.id = created
        self.step, self.shown = step, 0.0

    def __call__(self, done: int, total: int) -> None:
        """Record ``done`` of ``total`` units."""
        percent = 100.0 * done / total if total else 100.0
        if percent - self.shown >= self.step or (percent >= 100.0 > self.shown):
            update_progress_artifact(self.id, progress=percent)
            self.shown = percent


def _retrying(**options: Any) -> dict[str, Any]:
    return {
        "retry_delay_seconds": RETRY_DELAYS,
        "retry_jitter_factor": JITTER,
        "retry_condition_fn": transient,
        **options,
    }


# -- indexing ----------------------------------------------------------------------------------------------
@task(**_retrying(retries=2, timeout_seconds=4 * 3600, cache_policy=NO_CACHE))
def index_source(
    source: str, corpus: str, fmt: str | None, skip_bad: bool, keep_deleted: bool
) -> dict[str, Any]:
    """Re-index ``corpus`` from ``source``; only new and changed documents are embedded (idempotent)."""
    from tasks.workspace import ingest

    progress = ProgressArtifact(slug("reindex", corpus, "progress"), f"Documents of {corpus} indexed")
    report, read = ingest(
        Path(source).expanduser(),
        corpus,
        fmt=fmt,  # type: ignore[arg-type]
        skip_bad=skip_bad,
        keep_deleted=keep_deleted,
        progress=progress,
    )
    progress(1, 1)
    return {**asdict(report), "skipped": [str(p) for p in read.skipped]}


@task(**_retrying(retries=2, timeout_seconds=2 * 3600, cache_policy=NO_CACHE))
def refresh_views(corpus: str) -> dict[str, Any]:
    """Bring title and query views and the expanded BM25 index in line with the corpus (idempotent)."""
    from tasks.ingest.views import build_views
    from tasks.workspace import open_store, searcher

    return asdict(build_views(open_store(), corpus, searcher(corpus).embedder_factory))


# -- synthetic queries -------------------------------------------------------------------------------------
@task(**_retrying(retries=2, timeout_seconds=6 * 3600, cache_policy=NO_CACHE, tags=[LLM_TAG]))
def generate_queries(
    corpus: str,
    generator: str,
    style: str,
    per_doc: int,
    sample_docs: int | None,
    seed: int,
    temperature: float,
    roundtrip_k: int,
    roundtrip_method: str,
    refilter: bool,
) -> dict[str, Any]:
    """Write and filter synthetic queries for the documents that have none yet (resumable, cached LLM).

    A retry generates only what is missing: query ids are content-derived and every LLM answer is cached.
    Tagged ``llm``, so one concurrency limit bounds the LLM load of all flows (the ``synthesize`` flow
    drops the tag for the extractive generator, which calls no LLM).
    """
    from tasks.workspace import prepare_synthesis

    run = prepare_synthesis(
        corpus,
        generator=generator,
        style=style,
        per_doc=per_doc,
        sample_docs=sample_docs,
        seed=seed,
        temperature=temperature,
        roundtrip_k=roundtrip_k,
        roundtrip_method=roundtrip_method,
        refilter=refilter,
    )
    progress = ProgressArtifact(slug("synthesize", corpus, "progress"), f"Queries generated for {corpus}")
    report = run(progress)
    progress(1, 1)
    return asdict(report)


# -- evaluation --------------------------------------------------------------------------------------------
@task(**_retrying(retries=2, timeout_seconds=600, cache_policy=NO_CACHE))
def open_searcher(corpus: str) -> Searcher:
    """A searcher over ``corpus`` (fails at once if it was never indexed); the model loads on first use."""
    from tasks.workspace import searcher

    return searcher(corpus)


@task(**_retrying(retries=2, timeout_seconds=120, cache_policy=NO_CACHE))
def find_testsets(corpus: str) -> list[str]:
    """Names of the test sets registered for ``corpus``."""
    from tasks.evaluation.testsets import list_testsets

    return [t["name"] for t in list_testsets(get_settings().testsets_dir, corpus)]


@task(**_retrying(retries=2, timeout_seconds=120, cache_policy=NO_CACHE))
def load_testset(corpus: str, testset: str) -> TestSet:
    """The registered test set, checked against its content hash (not cached: it can be re-registered)."""
    from tasks.evaluation.testsets import load

    return load(get_settings().testsets_dir, corpus, testset)


@task(**_retrying(retries=0, timeout_seconds=60, cache_policy=INPUTS + TASK_SOURCE))
def check_methods(methods: Sequence[str], metrics: Sequence[str]) -> None:
    """Parse every method and measure before any retrieval starts (pure, so cached by its inputs)."""
    from tasks.evaluation.runs import prepare

    prepare(methods, metrics)


@task(**_retrying(retries=2, timeout_seconds=3 * 3600, cache_policy=NO_CACHE))
def evaluate_method(
    engine: Searcher,
    testset: TestSet,
    method: str,
    metrics: Sequence[str],
    depth: int | None,
    eval_id: str,
    progress_key: str,
) -> RunResult:
    """Score one method and publish its run; a retry publishes a new, whole run (never half of one)."""
    from tasks.evaluation.runs import evaluate_methods

    progress = ProgressArtifact(progress_key, f"Queries of {testset.corpus}/{testset.name} run by {method}")
    (result,) = evaluate_methods(
        engine,
        testset,
        [method],
        Warehouse(get_settings().warehouse_dir),
        measures=metrics,
        depth=depth,
        eval_id=eval_id,
        progress=lambda _method, done, total: progress(done, total),
    )
    return result


def evaluation_task(method: str) -> Task[..., RunResult]:
    """:func:`evaluate_method`, tagged ``llm`` for a method that calls the LLM (so the limit applies)."""
    return evaluate_method.with_options(tags=[LLM_TAG]) if calls_llm(method) else evaluate_method


@task(**_retrying(retries=2, timeout_seconds=120, cache_policy=NO_CACHE))
def previous_runs(corpus: str, testset: str, label: str, eval_id: str) -> dict[str, dict[str, Any]]:
    """``method -> {run_id, eval_id, metrics}`` of the latest earlier evaluation with the same label.

    The label (the deployment's name) is part of every eval id, so "the previous run of this deployment"
    is one query over the warehouse, with no need for the Prefect API. Not cached: new runs land all the time.
    """
    rows = (
        Warehouse(get_settings().warehouse_dir)
        .query(
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
            [corpus, testset, _LABEL_RE.format(label=re.escape(slug(label))), eval_id],
        )
        .to_pylist()
    )
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = out.setdefault(
            row["method"], {"run_id": row["run_id"], "eval_id": row["eval_id"], "metrics": {}}
        )
        if entry["run_id"] == row["run_id"]:  # a method evaluated twice in one evaluation: the first run
            entry["metrics"][row["measure"]] = finite(row["value"])
    return out


@task(**_retrying(retries=1, timeout_seconds=600, cache_policy=INPUTS + TASK_SOURCE))
def write_report(run_id: str, measure: str) -> str:
    """The HTML report of the evaluation of ``run_id`` (cached: a published evaluation never changes)."""
    from tasks.workspace import write_eval_report

    return str(write_eval_report(run_id, measure))


@task(**_retrying(retries=1, timeout_seconds=300, cache_policy=INPUTS + TASK_SOURCE))
def compare_runs(run_a: str, run_b: str, measure: str) -> Comparison:
    """Paired comparison of two published runs (cached: both runs are immutable)."""
    from tasks.evaluation.compare import compare_runs as compare

    return compare(Warehouse(get_settings().warehouse_dir), run_a, run_b, measure, top=3)


def new_eval_id(label: str) -> str:
    """An evaluation id carrying ``label`` (the deployment), which :func:`previous_runs` matches on."""
    from tasks.evaluation.runs import new_id

    return new_id(slug(label))
