"""The ``synthesize`` flow: synthetic queries for the documents that have none yet, then fresh views.

Schedule: none of its own; on demand (deployment ``synthesize``) and as the second step of ``nightly``.
Side effects: LanceDB ``synthetic_queries`` (every query with its raw output and filter decisions), the
corpus's title/query views and expanded BM25 index, the LLM response cache and ``llm_calls`` rows in the
warehouse; artifacts ``synthesize-<corpus>`` and ``synthesize-<corpus>-progress``.
Idempotency key: the query id, a hash of (document, its content, generator, prompt version, style, sample):
a rerun only generates what is missing, and every LLM answer is cached, so a retry repeats no call.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from flows import steps
from tasks.synthetic.config import SynthesisConfig

DEFAULT_SYNTHESIS = SynthesisConfig()


def _run_name() -> str:
    synthesis = SynthesisConfig.model_validate(flow_run.parameters.get("synthesis", {}))
    return f"synthesize-{flow_run.parameters['corpus']}-{synthesis.generator}"


@flow(name="synthesize", flow_run_name=_run_name, timeout_seconds=8 * 3600)
def synthesize(corpus: str = "demo", synthesis: SynthesisConfig = DEFAULT_SYNTHESIS) -> dict[str, Any]:
    """Generate and filter synthetic queries, then rebuild multi-view representations.

    Args:
        corpus: An indexed corpus.
        synthesis: Generator, prompt style, document sample, filters (as `zsr synthesize` takes them).
    """
    log = get_run_logger()
    llm = synthesis.generator == "llm"
    generate = steps.generate_queries if llm else steps.generate_queries.with_options(tags=[])
    report = generate(corpus, synthesis)
    log.info(
        "%s: %d queries generated (%d already done) from %d documents by %s; %d kept",
        corpus,
        report["generated"],
        report["already_done"],
        report["documents"],
        report["generator"],
        report["kept"],
    )
    views = steps.refresh_views(corpus)
    rows = [
        {"what": what, "count": report[what]}
        for what in ("documents", "generated", "already_done", "kept", "llm_calls", "cache_hits")
    ]
    rows += [{"what": f"rejected: {reason}", "count": n} for reason, n in sorted(report["rejected"].items())]
    rows += [{"what": f"{kind} views", "count": views[f"{kind}_views"]} for kind in ("title", "query")]
    create_table_artifact(
        rows,
        key=steps.slug("synthesize", corpus),
        description=f"Synthetic queries of {corpus} by {report['generator']} ({synthesis.style})",
    )
    return {"synthesis": report, "views": views}
