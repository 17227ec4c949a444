"""The ``nightly`` flow: re-index, synthesize for new documents, evaluate every test set, compare with before.

Schedule: deployment ``nightly-reindex``, cron ``0 2 * * *`` Europe/Paris (``deployments/prefect.yaml``),
concurrency limit 1 with ``CANCEL_NEW``: a run that starts while one is going is cancelled, never doubled.
Side effects: those of ``reindex``, ``synthesize`` and ``evaluate`` (subflows, each with its own artifacts;
with ``ZSR_RAY_ADDRESS`` set, the test sets' evaluations are one task fanned out on the Ray cluster, with
the same artifacts),
plus the artifact ``<deployment>-<corpus>-comparison`` (paired comparison of every method with its run
of the previous nightly evaluation). Storage upkeep (``zsr gc --apply``) runs right after the re-index.
With ``adapt`` (off by default) the corpus's model is fine-tuned on its synthetic queries after synthesis,
a new version under ``$ZSR_HOME/models/<corpus>/`` (``zsr adapt``; a rerun resumes or finds it).
A significant drop (``tasks/evaluation/alerts.py``; thresholds
``ZSR_REGRESSION_P`` and ``ZSR_REGRESSION_MIN_DROP``) also emits the event ``zsr.evaluation.regressed``
(resource ``zsr.corpus.<corpus>``) and ends the run in the failed state ``Regressed``, artifact written.
Idempotency key: per step (document content hashes, synthetic query ids, whole immutable runs), so a
nightly run retried after a failure redoes only what is missing, except evaluation, which is re-run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.states import Failed, State

from flows import steps
from flows.evaluate import (
    DEFAULT_METHODS,
    DEFAULT_METRICS,
    MethodName,
    MetricName,
    deployment_label,
    evaluate,
    record,
)
from flows.reindex import reindex
from flows.synthesize import synthesize
from tasks.evaluation import alerts
from tasks.evaluation.runs import finite
from tasks.ingest.formats import SourceFormat
from tasks.settings import get_settings
from tasks.synthetic.config import SynthesisConfig

NIGHTLY_SYNTHESIS = SynthesisConfig(generator="extractive")  # no LLM, cheap: queries for new documents


def _run_name() -> str:
    started = flow_run.scheduled_start_time
    return f"nightly-{flow_run.parameters['corpus']}-{started:%Y-%m-%d}"


@flow(name="nightly", flow_run_name=_run_name, timeout_seconds=12 * 3600)
def nightly(
    corpus: str = "demo",
    source: str = "demo/cranfield",
    fmt: SourceFormat | None = None,
    skip_bad: bool = False,
    synthesis: SynthesisConfig = NIGHTLY_SYNTHESIS,
    methods: list[MethodName] = DEFAULT_METHODS,
    metrics: list[MetricName] = DEFAULT_METRICS,
    measure: MetricName = "nDCG@10",
    promptreps: bool = False,
    adapt: bool = False,
    adapt_max_minutes: float = 60.0,
    model: str | None = None,
    lattice: bool = False,
) -> dict[str, Any] | State[Any]:
    """Keep one corpus fresh and measured: re-index, synthesize, evaluate, compare with the previous night.

    Args:
        corpus: Corpus name.
        source: Where the corpus is read from (relative to the zsr checkout).
        fmt: Source format; detected when empty.
        skip_bad: Skip bad records and report them instead of failing.
        synthesis: How queries are written for new documents (default: extractive, no LLM).
        methods: Methods evaluated on every registered test set.
        metrics: Measures of each evaluation.
        measure: Per-query measure of the comparison with the previous nightly run.
        promptreps: Also bring the corpus's PromptReps index up to date after re-indexing.
        adapt: Fine-tune the corpus's model on its synthetic queries after synthesis (``zsr adapt``); the
            corpus keeps searching with its own model until it is re-indexed with the new version.
        adapt_max_minutes: Training minutes at most for ``adapt``.
        model: Move the corpus to this model (name, path or a version of its adapted models) without
            downtime during the re-index; empty (the default): keep its model.
        lattice: Refresh the LATTICE tree (LLM summaries of the paths over changed documents) before
            evaluating; off by default, as a first build summarises every node.

    Returns:
        What each step did and the comparison rows; the same in the data of a failed state named
        ``Regressed`` when a method dropped significantly on ``measure`` (after the comparison artifact).
    """
    log = get_run_logger()
    settings = get_settings()
    indexed = reindex(
        corpus=corpus,
        source=source,
        fmt=fmt,
        skip_bad=skip_bad,
        refresh_views=False,
        promptreps=promptreps,
        model=model,
    )
    steps.collect_garbage()  # the versions this re-index left behind; recorded runs' versions stay
    synthesized = synthesize(corpus=corpus, synthesis=synthesis)
    adapted = steps.adapt_model(corpus, adapt_max_minutes) if adapt else None
    tree = steps.refresh_lattice(corpus) if lattice else None
    testsets = steps.find_testsets(corpus)
    if not testsets:
        log.warning("no test set is registered for %s: nothing to evaluate (`zsr testset add`)", corpus)
    metrics = list(dict.fromkeys([*metrics, measure]))
    label = deployment_label()
    if settings.ray_address and testsets:  # every (test set, method) side by side on the cluster
        evaluations = steps.evaluate_on_ray(corpus, testsets, list(methods), metrics, None, label, True)
        for evaluation in evaluations:
            record(evaluation, label)
    else:
        evaluations = [
            evaluate(corpus=corpus, testset=t, methods=methods, metrics=metrics, report=True)
            for t in testsets
        ]
    rows: list[dict[str, Any]] = []
    for evaluation in evaluations:
        for run in evaluation.runs:
            before = evaluation.previous.get(run.method)
            if before is None:
                rows.append({"testset": evaluation.testset, "method": run.method, "run": run.run_id})
                continue
            comparison = steps.compare_runs(before["run_id"], run.run_id, measure)
            rows.append(
                {
                    "testset": evaluation.testset,
                    "method": run.method,
                    "run": run.run_id,
                    "previous": before["run_id"],
                    "before": comparison.mean_a,
                    "after": comparison.mean_b,
                    "wins": comparison.wins,
                    "ties": comparison.ties,
                    "losses": comparison.losses,
                    "t_test_p": comparison.t_test_p,
                    "wilcoxon_p": comparison.wilcoxon_p,
                }
            )
    regressed = alerts.find_regressions(rows, measure, settings.regression_p, settings.regression_min_drop)
    key = steps.slug(label, corpus, "comparison")
    create_markdown_artifact(
        comparison_markdown(corpus, measure, label, rows)
        + regressions_markdown(regressed, settings.regression_p, settings.regression_min_drop),
        key=key,
        description=f"Nightly {corpus}: {measure} against the previous {label} run",
    )
    changed = sum(indexed["index"][k] for k in ("added", "changed", "deleted"))
    log.info(
        "nightly %s: %d documents changed, %d queries generated, %d test sets evaluated",
        corpus,
        changed,
        synthesized["synthesis"]["generated"],
        len(evaluations),
    )
    result = {
        "index": indexed,
        "synthesis": synthesized,
        "adapted": adapted,
        "lattice": tree,
        "evaluations": evaluations,
        "comparison": rows,
    }
    if regressed:
        return alert(corpus, measure, label, key, regressed, result)
    return result


def alert(
    corpus: str,
    measure: str,
    label: str,
    key: str,
    regressed: list[alerts.Regression],
    result: dict[str, Any],
) -> State[Any]:
    """Log and emit the regressions, and end the run as ``Regressed``: a failed state holding ``result``.

    A returned state, not a raised error: Prefect takes a state the flow returns as the run's final state
    as it is (name, message, data), where an exception always ends as ``Failed`` with the result lost.
    The event is what ``zsr serve``'s automation reacts to (``flows/cli/alerts.py``).
    """
    settings = get_settings()
    message = alerts.summary(corpus, regressed)
    get_run_logger().error("%s (comparison artifact %s)", message, key)
    emit_event(
        event=alerts.REGRESSED_EVENT,
        resource={
            "prefect.resource.id": alerts.corpus_resource(corpus),
            "prefect.resource.name": corpus,
            "zsr.deployment": label,
            "zsr.measure": measure,
        },
        payload={
            "summary": message,
            "artifact_key": key,
            "p_max": settings.regression_p,
            "min_drop": settings.regression_min_drop,
            "regressions": [r.as_dict() for r in regressed],
        },
    )
    return Failed(name=alerts.REGRESSED_STATE, message=message, data=result)


def comparison_markdown(corpus: str, measure: str, label: str, rows: list[dict[str, Any]]) -> str:
    """A markdown table of each method against its previous nightly run (``n/a``, never NaN)."""
    lines = [f"## {corpus}: {measure} against the previous {label} run", ""]
    if not rows:
        return "\n".join([*lines, "No test set is registered for this corpus: nothing was evaluated."])
    lines += [
        "| test set | method | before | after | Δ | wins / ties / losses | t-test p | Wilcoxon p | run |",
        "|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        if "previous" not in r:
            lines.append(f"| {r['testset']} | {r['method']} | | | new | | | | `{r['run']}` |")
            continue
        lines.append(
            f"| {r['testset']} | {r['method']} | {r['before']:.4f} | {r['after']:.4f} | "
            f"{r['after'] - r['before']:+.4f} | {r['wins']} / {r['ties']} / {r['losses']} | "
            f"{_p(r['t_test_p'])} | {_p(r['wilcoxon_p'])} | `{r['run']}` |"
        )
    return "\n".join(lines)


def regressions_markdown(regressed: list[alerts.Regression], p_max: float, min_drop: float) -> str:
    """The lines under the table naming each regression (empty when there is none)."""
    if not regressed:
        return ""
    rule = f"paired t-test p < {p_max:g} and a drop of at least {min_drop:g}"
    return "\n".join(["", "", f"**Regressed** ({rule}):", "", *(f"- {r.line()}" for r in regressed)])


def _p(value: float | None) -> str:
    return "n/a" if finite(value) is None else f"{value:.3g}"
