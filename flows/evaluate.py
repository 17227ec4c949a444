"""The ``evaluate`` flow: score retrieval methods on a registered test set, with deltas against last time.

The work is the evaluation sequence ``zsr eval`` runs (``tasks.evaluation.runs.evaluate``), each of its
steps a task of ``flows.steps`` (one per method); the flow adds the artifacts. With ``ZSR_RAY_ADDRESS`` set,
the methods are scored side by side on the Ray cluster instead, in one task (``steps.evaluate_on_ray``),
and published by the flow's process once all are back.
Schedule: none of its own; on demand from the Prefect UI (deployment ``evaluate``) and as the third step of
``nightly``.
Side effects: one immutable run per method in the results warehouse (runs, metrics, per-query metrics,
latencies, rankings), the HTML report under ``warehouse/reports/<eval_id>/``; artifacts
``<deployment>-<corpus>-<testset>-results`` (table with deltas), ``-summary`` (markdown linking the report)
and ``evaluate-<corpus>-<testset>-progress``.
Idempotency key: none needed. Every run gets a new id and lands whole or not at all, so a retried or
crashed evaluation leaves only complete runs. The eval id carries the deployment's name (``adhoc``
outside a deployment), which is how "the previous run of the same deployment" is found in the warehouse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows import steps
from tasks.evaluation import runs
from tasks.evaluation.measures import DEFAULT_MEASURES
from tasks.evaluation.runs import Evaluation, finite
from tasks.methods.registry import REGISTRY
from tasks.settings import get_settings
from tasks.workspace import Workspace

if TYPE_CHECKING:
    MethodName = str
    MetricName = str
else:  # the form's choices: every registered method (at its defaults), the default measures
    MethodName = Literal[tuple(REGISTRY)]
    MetricName = Literal[DEFAULT_MEASURES]
DEFAULT_METHODS: list[MethodName] = ["dense", "bm25", "hybrid"]
DEFAULT_METRICS: list[MetricName] = list(DEFAULT_MEASURES)


def deployment_label() -> str:
    """The name of the deployment this flow runs under (also for subflows), or ``adhoc``."""
    from prefect.runtime import deployment

    return deployment.name or "adhoc"


@flow(name="evaluate", flow_run_name="evaluate-{corpus}-{testset}", timeout_seconds=4 * 3600)
def evaluate(
    corpus: str = "demo",
    testset: str = "human",
    methods: list[MethodName] = DEFAULT_METHODS,
    metrics: list[MetricName] = DEFAULT_METRICS,
    depth: int | None = None,
    report: bool = True,
) -> Evaluation:
    """Score each method on the test set; every number lands in the warehouse, deltas in an artifact.

    Args:
        corpus: An indexed corpus.
        testset: A test set registered for the corpus (`zsr testset list`).
        methods: Retrieval methods, one run each (any method string works from `zsr eval`).
        metrics: ir-measures names (any measure works from `zsr eval`); the first one heads the report.
        depth: Documents retrieved per query; empty: from the measures (at least 100).
        report: Also write the HTML report and link it from the summary artifact.
    """
    methods = list(dict.fromkeys(methods))
    measures: list[str] = list(dict.fromkeys(metrics))
    if not methods or not measures:
        raise ValueError("choose at least one method and one metric")
    label = deployment_label()
    with Workspace.open().lease(corpus, testset):  # `zsr rm` refuses them while the flow runs
        if get_settings().ray_address:  # the methods side by side on the cluster, published here
            [result] = steps.evaluate_on_ray(corpus, [testset], methods, measures, depth, label, report)
        else:
            result = runs.evaluate(
                steps.ORCHESTRATED,
                corpus,
                testset,
                methods,
                measures,
                depth=depth,
                label=label,
                compare=True,
                report=report,
            )
    record(result, label)
    return result


def record(result: Evaluation, label: str) -> None:
    """Log the scores and write the evaluation's artifacts: results table with deltas, summary."""
    log = get_run_logger()
    corpus, testset = result.corpus, result.testset
    threshold = get_settings().fallback_warn_share
    for run in result.runs:
        log.info("run %s (%s): %s", run.run_id, run.method, _numbers(run.metrics))
        if warning := run.warning(threshold):
            log.warning("%s", warning)
    if result.previous:
        log.info("previous %s evaluation: %s", label, next(iter(result.previous.values()))["eval_id"])
    n_queries = result.runs[0].n_queries
    create_table_artifact(
        results_table(result),
        key=steps.slug(label, corpus, testset, "results"),
        description=f"{corpus} / {testset}: {n_queries} queries; deltas against the previous "
        f"{label} evaluation",
    )
    create_markdown_artifact(
        summary(result, n_queries),
        key=steps.slug(label, corpus, testset, "summary"),
        description=f"Evaluation {result.eval_id}",
    )


def results_table(result: Evaluation) -> list[dict[str, Any]]:
    """One row per method: each metric and its delta against the previous evaluation (never NaN).

    Beside them, the share of queries that fell back and the LLM errors, and a warning when more than
    ``ZSR_FALLBACK_WARN_SHARE`` fell back: the metric is then largely the fallback's.
    """
    threshold = get_settings().fallback_warn_share
    rows = []
    for run in result.runs:
        before = result.previous.get(run.method, {})
        row: dict[str, Any] = {"method": run.method}
        for measure in result.metrics:
            value = finite(run.metrics.get(measure))
            row[measure] = "n/a" if value is None else round(value, 4)
            row[f"Δ {measure}"] = _delta(value, before.get("metrics", {}).get(measure))
        row |= {
            "fallback": f"{run.fallback_share:.0%}",
            "LLM errors": run.llm_errors,
            "warning": run.warning(threshold) or "",
            "queries": run.n_queries,
            "retrieval s": round(run.retrieval_seconds, 2),
            "run": run.run_id,
            "previous run": before.get("run_id", "none"),
        }
        rows.append(row)
    return rows


def summary(result: Evaluation, n_queries: int) -> str:
    """The markdown summary: scores with deltas, the best method, the report link and a SQL hint."""
    head = result.metrics[0]
    previous = {p["eval_id"] for p in result.previous.values()}
    lines = [
        f"## {result.corpus} / {result.testset}: {len(result.runs)} methods, {n_queries} queries",
        "",
        f"Evaluation `{result.eval_id}` ({result.label}); "
        + (
            f"deltas against the previous {result.label} evaluation `{min(previous)}`."
            if previous
            else f"first {result.label} evaluation of this test set: no deltas yet."
        ),
        "",
        "| method | " + " | ".join(f"{m} | Δ" for m in result.metrics) + " | fell back |",
        "|---|" + "---:|---:|" * len(result.metrics) + "---:|",
    ]
    rows = results_table(result)
    for row in rows:
        cells = " | ".join(f"{_fmt(row[m])} | {row[f'Δ {m}']}" for m in result.metrics)
        lines.append(f"| {row['method']} | {cells} | {row['fallback']} |")
    lines += [f"\n> **Warning**: {row['warning']}" for row in rows if row["warning"]]
    scored = [r for r in result.runs if finite(r.metrics.get(head)) is not None]
    if scored:
        best = max(scored, key=lambda r: r.metrics[head])
        lines += ["", f"Best {head}: **{best.method}** ({best.metrics[head]:.4f})."]
    if result.report:
        lines += [
            "",
            f"HTML report (tables, charts, hardest queries): [report.html](file://{result.report}), "
            f"at `{result.report}`.",
        ]
    sql = f"SELECT * FROM runs WHERE eval_id = '{result.eval_id}'"
    lines += ["", f'Every number is in the warehouse: `zsr sql "{sql}"`']
    return "\n".join(lines)


def _delta(value: float | None, before: float | None) -> str:
    if value is None or before is None:
        return "new"
    return f"{value - before:+.4f}"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _numbers(metrics: dict[str, float]) -> str:
    return ", ".join(f"{m} {v:.4f}" for m, v in metrics.items())
