"""The ``synthesize`` flow: synthetic queries for the documents that have none yet, then fresh views.

Schedule: none of its own; on demand (deployment ``synthesize``) and as the second step of ``nightly``.
Side effects: LanceDB ``synthetic_queries`` (every query with its raw output and filter decisions), the
corpus's title/query views and expanded BM25 index, the LLM response cache and ``llm_calls`` rows in the
warehouse; artifacts ``synthesize-<corpus>`` and ``synthesize-<corpus>-progress``.
Idempotency key: the query id, a hash of (document, its content, generator, prompt version, style, sample):
a rerun only generates what is missing, and every LLM answer is cached, so a retry repeats no call.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows import steps
from flows.evaluate import MethodName

GeneratorName = Literal["llm", "extractive"]
Style = Literal["question", "keywords", "claim", "title"]


@flow(name="synthesize", flow_run_name="synthesize-{corpus}-{generator}", timeout_seconds=8 * 3600)
def synthesize(
    corpus: str = "demo",
    generator: GeneratorName = "llm",
    style: Style = "question",
    per_doc: int = 1,
    sample_docs: int | None = None,
    seed: int = 0,
    temperature: float = 0.7,
    roundtrip_k: int = 20,
    roundtrip_method: MethodName = "hybrid",
    refilter: bool = False,
) -> dict[str, Any]:
    """Generate and filter synthetic queries, then rebuild multi-view representations.

    Args:
        corpus: An indexed corpus.
        generator: llm (the configured LiteLLM model; the bundled one offline), or extractive (no LLM:
            sentences of the document, biased toward lexical overlap).
        style: Kind of query the prompt asks for.
        per_doc: Queries per document.
        sample_docs: Sample this many diverse documents (k-means over embeddings); empty: all.
        seed: Seed of the document sample.
        temperature: Sampling temperature of the LLM.
        roundtrip_k: Keep a query only if its document is in its top k (0: no check).
        roundtrip_method: Retrieval used for the round-trip check.
        refilter: Decide again, from stored outputs, about queries already generated (no LLM call).
    """
    log = get_run_logger()
    generate = steps.generate_queries if generator == "llm" else steps.generate_queries.with_options(tags=[])
    report = generate(
        corpus,
        generator,
        style,
        per_doc,
        sample_docs,
        seed,
        temperature,
        roundtrip_k,
        roundtrip_method,
        refilter,
    )
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
        description=f"Synthetic queries of {corpus} by {report['generator']} ({style})",
    )
    return {"synthesis": report, "views": views}
