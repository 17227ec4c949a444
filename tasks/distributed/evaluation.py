"""Evaluation fanned out on Ray: every (test set, method) of an evaluation is one Ray task.

Workers search and score (:func:`~tasks.evaluation.runs.score_method`) and hand the scored run back; the
driver publishes it, so the warehouse keeps one writer. Nothing is published before every task of the
call has come back: a task whose node leaves is run again on another node (up to ``RETRIES`` times), and
if it still fails, the call raises with no run of it in the warehouse. So a node that leaves midway never
leaves part of an evaluation visible. Plans (eval id, table versions, provenance) are made on the driver
exactly as :func:`~tasks.evaluation.runs.evaluate` makes them, and the evaluations end the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from tasks.distributed.cluster import connect
from tasks.evaluation.runs import Direct, Evaluation, Plan, Scored, conclude, prepare, publish, score_method
from tasks.evaluation.testsets import TestSet
from tasks.methods.registry import Method
from tasks.methods.search import Searcher

log = logging.getLogger(__name__)

RETRIES = 3  # per task, on a worker or node that dies; an exception the method raises is not retried


def _score(open_searcher: Callable[[str], Searcher], plan: Plan, method: Method) -> Scored:
    """One method of one plan, searched and scored on a worker (a Ray task)."""
    return score_method(open_searcher(plan.corpus), plan, method)


def evaluate_on_ray(
    address: str,
    steps: Direct,
    open_searcher: Callable[[str], Searcher],
    corpus: str,
    testsets: Sequence[str | TestSet],
    methods: Sequence[str],
    measures: Sequence[str] | None = None,
    *,
    depth: int | None = None,
    label: str = "",
    compare: bool = False,
    report: bool = False,
) -> list[Evaluation]:
    """One evaluation per test set, their methods scored side by side on the cluster at ``address``.

    Args:
        address: The Ray cluster (``ZSR_RAY_ADDRESS``).
        steps: The driver's steps: plans, publishing into ``steps.warehouse``, previous runs, reports;
            ``steps.progress`` hears of each run as it comes back.
        open_searcher: Builds a searcher over a corpus on a worker; pickled to the workers, so it holds
            settings, never an open store.
        corpus: An indexed corpus.
        testsets: One evaluation each: registered names, or :class:`TestSet` objects.
        methods: Method strings, one run per test set each.
        measures: ir-measures names (default: ``DEFAULT_MEASURES``).
        depth: Documents retrieved per query; default: from the measures.
        label: Carried in the eval ids (see :func:`~tasks.evaluation.runs.previous_runs`).
        compare: Also find each test set's previous evaluation with the same label.
        report: Also write each evaluation's HTML report.
    """
    ray = connect(address)
    plans = [prepare(steps, corpus, t, methods, measures, depth=depth, label=label)[1] for t in testsets]
    score = ray.remote(num_cpus=1, max_retries=RETRIES)(_score).options(scheduling_strategy="SPREAD")
    shipped = ray.put(open_searcher)
    pending: dict[Any, tuple[int, int]] = {}
    for i, planned in enumerate(plans):
        for j, method in enumerate(planned.methods):
            pending[score.remote(shipped, planned, method)] = (i, j)
    scored: dict[tuple[int, int], Scored] = {}
    waiting = list(pending)
    while waiting:  # as each run comes back, for progress; none is published yet
        done, waiting = ray.wait(waiting, num_returns=1)
        run = ray.get(done[0])
        scored[pending[done[0]]] = run
        if steps.progress:
            queries = run.result.n_queries
            steps.progress(run.result.method, queries, queries)
    log.info("%d runs scored on Ray at %s; publishing", len(scored), address)
    return [
        conclude(
            steps,
            planned,
            [publish(steps.warehouse, scored[i, j]) for j in range(len(planned.methods))],
            compare=compare,
            report=report,
        )
        for i, planned in enumerate(plans)
    ]
