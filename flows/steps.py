"""The one module of Prefect tasks: thin wrappers over the workspace that add retries, timeouts and caching.

Every wrapper calls one method of :class:`~tasks.workspace.Workspace` (or one function of the evaluation
sequence) and adds only orchestration:

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

:data:`ORCHESTRATED` gives the evaluation sequence (``tasks.evaluation.runs.evaluate``) these tasks as its
steps, so the ``evaluate`` flow runs the sequence ``zsr eval`` runs, one task per method.
"""

from __future__ import annotations

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

from tasks.adapt.examples import AdaptConfig
from tasks.evaluation.compare import Comparison
from tasks.evaluation.runs import EvalRequest, Evaluation, Plan, RunResult, check
from tasks.evaluation.testsets import TestSet
from tasks.methods.registry import Method, calls_llm
from tasks.methods.search import Searcher
from tasks.settings import Chunking
from tasks.synthetic.config import SynthesisConfig
from tasks.workspace import Workspace

LLM_TAG = "llm"
RETRY_DELAYS = [2, 10, 30]
JITTER = 0.5  # each delay becomes up to 1.5 times itself, so retries of parallel runs spread out
_PERMANENT = (ValueError, LookupError, FileNotFoundError, NotADirectoryError, PermissionError)


def transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry unless the failure is bad input, which a retry only repeats (and delays the message)."""
    error = state.data if isinstance(state.data, BaseException) else None
    return not isinstance(error, _PERMANENT)


def slug(*parts: str) -> str:
    """A kebab-case name for artifact keys: lowercase letters, digits and single dashes."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


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
    source: str,
    corpus: str,
    fmt: str | None,
    skip_bad: bool,
    keep_deleted: bool,
    chunking: Chunking | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Re-index ``corpus`` from ``source``; only new and changed documents are embedded (idempotent).

    ``model`` other than the corpus's moves it to that model without downtime (resumable).
    """
    progress = ProgressArtifact(slug("reindex", corpus, "progress"), f"Documents of {corpus} indexed")
    report, read = Workspace.open().ingest(
        Path(source).expanduser(),
        corpus,
        fmt=fmt,  # type: ignore[arg-type]
        skip_bad=skip_bad,
        keep_deleted=keep_deleted,
        chunking=chunking,
        model=model,
        progress=progress,
    )
    progress(1, 1)
    return {**asdict(report), "skipped": [str(p) for p in read.skipped]}


@task(**_retrying(retries=2, timeout_seconds=6 * 3600, cache_policy=NO_CACHE))
def index_promptreps(corpus: str) -> dict[str, Any]:
    """Bring the corpus's PromptReps index in line with its chunks (idempotent; cached per chunk text)."""
    progress = ProgressArtifact(slug("promptreps", corpus, "progress"), f"Documents of {corpus} represented")
    report = Workspace.open().index_promptreps(corpus, progress=progress)
    return {**asdict(report), "tokens_per_second": report.tokens_per_second}


@task(**_retrying(retries=2, timeout_seconds=2 * 3600, cache_policy=NO_CACHE))
def refresh_views(corpus: str) -> dict[str, Any]:
    """Bring title and query views and the expanded BM25 index in line with the corpus (idempotent)."""
    return asdict(Workspace.open().refresh_views(corpus))


@task(**_retrying(retries=2, timeout_seconds=6 * 3600, cache_policy=NO_CACHE, tags=[LLM_TAG]))
def refresh_lattice(corpus: str) -> dict[str, Any]:
    """Refresh the corpus's LATTICE tree: the LLM re-summarises only the paths over changed documents."""
    return asdict(Workspace.open().build_lattice(corpus))


@task(**_retrying(retries=1, timeout_seconds=3600, cache_policy=NO_CACHE))
def collect_garbage() -> dict[str, Any]:
    """Storage upkeep (``zsr gc --apply``): compact, and delete table versions no recorded run points at."""
    report = Workspace.open().gc(apply=True)
    return {**asdict(report), "unreproducible": report.unreproducible, "reclaimed": report.bytes_reclaimed}


# -- synthetic queries -------------------------------------------------------------------------------------
@task(**_retrying(retries=2, timeout_seconds=6 * 3600, cache_policy=NO_CACHE, tags=[LLM_TAG]))
def generate_queries(corpus: str, synthesis: SynthesisConfig) -> dict[str, Any]:
    """Write and filter synthetic queries for the documents that have none yet (resumable, cached LLM).

    A retry generates only what is missing: query ids are content-derived and every LLM answer is cached.
    Tagged ``llm``, so one concurrency limit bounds the LLM load of all flows (the ``synthesize`` flow
    drops the tag for the extractive generator, which calls no LLM).
    """
    run = Workspace.open().prepare_synthesis(corpus, synthesis)
    progress = ProgressArtifact(slug("synthesize", corpus, "progress"), f"Queries generated for {corpus}")
    report = run(progress)
    progress(1, 1)
    return asdict(report)


# -- adapted models ----------------------------------------------------------------------------------------
@task(**_retrying(retries=1, timeout_seconds=12 * 3600, cache_policy=NO_CACHE))
def adapt_model(corpus: str, max_minutes: float) -> dict[str, Any]:
    """Fine-tune ``corpus``'s model on its synthetic queries (``zsr adapt --from-synthetic``, mnrl, no judge).

    A retry resumes from the last checkpoint, and the same data and options again find the published
    version: the version name is content-derived.
    """
    progress = ProgressArtifact(slug("adapt", corpus, "progress"), f"Training steps of {corpus}'s model")
    report = Workspace.open().adapt(corpus, AdaptConfig(max_minutes=max_minutes), progress=progress)
    progress(1, 1)
    return asdict(report)


# -- evaluation --------------------------------------------------------------------------------------------
@task(**_retrying(retries=0, timeout_seconds=60, cache_policy=INPUTS + TASK_SOURCE))
def check_methods(methods: Sequence[str], metrics: Sequence[str] | None) -> EvalRequest:
    """Parse every method and measure before any retrieval starts (pure, so cached by its inputs)."""
    return check(methods, metrics)


@task(**_retrying(retries=2, timeout_seconds=600, cache_policy=NO_CACHE))
def open_searcher(corpus: str) -> Searcher:
    """A searcher over ``corpus`` (fails at once if it was never indexed); the model loads on first use."""
    return Workspace.open().searcher(corpus)


@task(**_retrying(retries=2, timeout_seconds=120, cache_policy=NO_CACHE))
def find_testsets(corpus: str) -> list[str]:
    """Names of the test sets registered for ``corpus``."""
    return Workspace.open().testsets.names(corpus)


@task(**_retrying(retries=2, timeout_seconds=120, cache_policy=NO_CACHE))
def load_testset(corpus: str, testset: str) -> TestSet:
    """The registered test set, checked against its content hash (not cached: it can be re-registered)."""
    return Workspace.open().testsets.load(corpus, testset)


@task(**_retrying(retries=2, timeout_seconds=3 * 3600, cache_policy=NO_CACHE))
def evaluate_method(engine: Searcher, plan: Plan, method: Method, progress_key: str) -> RunResult:
    """Score one method and publish its run; a retry publishes a new, whole run (never half of one)."""
    testset = plan.testset
    progress = ProgressArtifact(progress_key, f"Queries of {testset.corpus}/{testset.name} run by {method}")
    return Workspace.open().run_method(engine, plan, method, progress)


def evaluation_task(method: str | Method) -> Task[..., RunResult]:
    """:func:`evaluate_method`, tagged ``llm`` for a method that calls the LLM (so the limit applies)."""
    return evaluate_method.with_options(tags=[LLM_TAG]) if calls_llm(method) else evaluate_method


@task(**_retrying(retries=2, timeout_seconds=120, cache_policy=NO_CACHE))
def previous_runs(plan: Plan) -> dict[str, dict[str, Any]]:
    """``method -> {run_id, eval_id, metrics}`` of the latest earlier evaluation with the plan's label.

    The label (the deployment's name) is part of every eval id, so "the previous run of this deployment"
    is found in the warehouse, with no need for the Prefect API. Not cached: new runs land all the time.
    """
    return Workspace.open().previous_runs(plan)


@task(**_retrying(retries=1, timeout_seconds=600, cache_policy=INPUTS + TASK_SOURCE))
def write_report(run_id: str, measure: str) -> str:
    """The HTML report of the evaluation of ``run_id`` (cached: a published evaluation never changes)."""
    return str(Workspace.open().report(run_id, measure))


@task(**_retrying(retries=1, timeout_seconds=300, cache_policy=INPUTS + TASK_SOURCE))
def compare_runs(run_a: str, run_b: str, measure: str) -> Comparison:
    """Paired comparison of two published runs (cached: both runs are immutable)."""
    return Workspace.open().compare(run_a, run_b, measure, top=3)


@task(**_retrying(retries=1, timeout_seconds=4 * 3600, cache_policy=NO_CACHE))
def evaluate_on_ray(
    corpus: str,
    testsets: list[str],
    methods: list[str],
    measures: list[str],
    depth: int | None,
    label: str,
    report: bool,
) -> list[Evaluation]:
    """Every (test set, method) a Ray task, published here once all are back (``tasks.distributed``).

    Not tagged ``llm``: the cluster's own limit (``ZSR_LLM_CONCURRENCY`` slots) bounds each LLM call.
    A retry scores every run again: none of the failed attempt was published.
    """
    return Workspace.open().evaluate_on_ray(
        corpus, testsets, methods, measures, depth=depth, label=label, compare=True, report=report
    )


class Orchestrated:
    """The steps of ``tasks.evaluation.runs.evaluate`` as the tasks above, one task run per method."""

    def check(self, methods: Sequence[str], measures: Sequence[str] | None) -> EvalRequest:
        """:func:`check_methods`."""
        return check_methods(methods, measures)

    def open_searcher(self, corpus: str) -> Searcher:
        """:func:`open_searcher`."""
        return open_searcher(corpus)

    def load_testset(self, corpus: str, name: str) -> TestSet:
        """:func:`load_testset`."""
        return load_testset(corpus, name)

    def run_method(self, engine: Searcher, plan: Plan, method: Method) -> RunResult:
        """:func:`evaluate_method`, tagged ``llm`` where the method calls it; one progress artifact."""
        key = slug("evaluate", plan.corpus, plan.testset.name, "progress")
        return evaluation_task(method)(engine, plan, method, key)

    def previous_runs(self, plan: Plan) -> dict[str, dict[str, Any]]:
        """:func:`previous_runs`."""
        return previous_runs(plan)

    def write_report(self, run_id: str, measure: str) -> str:
        """:func:`write_report`."""
        return write_report(run_id, measure)


ORCHESTRATED = Orchestrated()
