"""The ``synthesize`` command: synthetic queries for a corpus, then fresh multi-view indexes."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import CorpusOpt, JsonOpt, app, emit_json, out, query_progress, show, user_errors


@app.command()
def synthesize(
    corpus: CorpusOpt,
    style: Annotated[str, typer.Option(help="question, keywords, claim or title.")] = "question",
    per_doc: Annotated[int, typer.Option(min=1, help="Queries per document.")] = 1,
    docs: Annotated[
        int | None, typer.Option(min=1, help="Sample this many diverse documents (k-means); default: all.")
    ] = None,
    generator: Annotated[
        str, typer.Option(help="llm, or extractive (no LLM: sentences from the document).")
    ] = "llm",
    temperature: Annotated[float, typer.Option(min=0, help="Sampling temperature of the LLM.")] = 0.7,
    examples: Annotated[
        Path | None,
        typer.Option(help='JSONL of few-shot examples: {"passage": ..., "query": ...} (up to 8).'),
    ] = None,
    roundtrip_k: Annotated[
        int, typer.Option(min=0, help="Keep a query only if its document is in its top K (0: no check).")
    ] = 20,
    roundtrip_method: Annotated[
        str, typer.Option(help="Retrieval used for the round-trip check.")
    ] = "hybrid",
    seed: Annotated[int, typer.Option(help="Seed of the document sample.")] = 0,
    refilter: Annotated[
        bool, typer.Option(help="Re-run the filters over queries already generated.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write synthetic queries for a corpus, filter them, and refresh its multi-view and expanded indexes."""
    from tasks.ingest.views import build_views
    from tasks.workspace import open_store, prepare_synthesis, searcher

    with user_errors():
        run = prepare_synthesis(
            corpus,
            generator=generator,
            style=style,
            per_doc=per_doc,
            sample_docs=docs,
            seed=seed,
            temperature=temperature,
            examples=examples,
            roundtrip_k=roundtrip_k,
            roundtrip_method=roundtrip_method,
            refilter=refilter,
        )
        with query_progress(not as_json) as progress:
            report = run((lambda done, total: progress("generating", done, total)) if progress else None)
        views = build_views(open_store(), corpus, searcher(corpus).embedder_factory)
    if as_json:
        emit_json({"synthesis": asdict(report), "views": asdict(views)})
        return
    out.print(
        f"[bold]{corpus}[/]: {report.generated} queries generated ({report.already_done} already done) "
        f"from {report.documents} documents by {report.generator}; {report.kept} kept"
    )
    if report.rejected:
        show(["rejected because", "queries"], sorted(report.rejected.items()))
    out.print(
        f"LLM: {report.llm_calls} calls, {report.cache_hits} from cache, {report.tokens_in} tokens in, "
        f"{report.tokens_out} out. Views: {views.title_views} title, {views.query_views} query "
        f"({views.added} added, {views.deleted} removed); {views.expanded_documents} documents expanded"
    )
