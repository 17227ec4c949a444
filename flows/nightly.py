"""The ``nightly`` flow: re-index, synthesize for new documents, evaluate every test set, compare with before.

Schedule: deployment ``nightly-reindex``, cron ``0 2 * * *`` Europe/Paris (``deployments/prefect.yaml``),
concurrency limit 1 with ``CANCEL_NEW``: a run that starts while one is going is cancelled, never doubled.
Side effects: those of ``reindex``, ``synthesize`` and ``evaluate`` (subflows, each with its own artifacts),
plus the artifact ``<deployment>-<corpus>-comparison`` (paired comparison of every method with its run
of the previous nightly evaluation). Storage upkeep (``zsr gc --apply``) runs right after the re-index.
Idempotency key: per step (document content hashes, synthetic query ids, whole immutable runs), so a
nightly run retried after a failure redoes only what is missing, except evaluation, which is re-run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows import steps
from flows.evaluate import (
    DEFAULT_METHODS,
    DEFAULT_METRICS,
    MethodName,
    MetricName,
    deployment_label,
    evaluate,
)
from flows.reindex import reindex
from flows.synthesize import synthesize
from tasks.evaluation.runs import finite
from tasks.ingest.formats import SourceFormat
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
) -> dict[str, Any]:
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
    """
    log = get_run_logger()
    indexed = reindex(corpus=corpus, source=source, fmt=fmt, skip_bad=skip_bad, refresh_views=False)
    steps.collect_garbage()  # the versions this re-index left behind; recorded runs' versions stay
    synthesized = synthesize(corpus=corpus, synthesis=synthesis)
    testsets = steps.find_testsets(corpus)
    if not testsets:
        log.warning("no test set is registered for %s: nothing to evaluate (`zsr testset add`)", corpus)
    metrics = list(dict.fromkeys([*metrics, measure]))
    evaluations = [
        evaluate(corpus=corpus, testset=t, methods=methods, metrics=metrics, report=True) for t in testsets
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
    label = deployment_label()
    create_markdown_artifact(
        comparison_markdown(corpus, measure, label, rows),
        key=steps.slug(label, corpus, "comparison"),
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
    return {"index": indexed, "synthesis": synthesized, "evaluations": evaluations, "comparison": rows}


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


def _p(value: float | None) -> str:
    return "n/a" if finite(value) is None else f"{value:.3g}"
