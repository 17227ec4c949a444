"""The ``synthesize`` command: synthetic queries for a corpus, then fresh multi-view indexes.

Its options are the fields of :class:`~tasks.synthetic.config.SynthesisConfig`, with the model's defaults
and descriptions; the model validates them (no check here).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.common import (
    CorpusOpt,
    JsonOpt,
    app,
    emit_json,
    out,
    query_progress,
    show,
    user_errors,
    workspace,
)
from tasks.synthetic.config import SynthesisConfig

DEFAULTS = SynthesisConfig()


def option(field: str, *names: str) -> Any:
    """A typer option for a field of :class:`SynthesisConfig`, described as the model describes it."""
    return typer.Option(*names, help=SynthesisConfig.model_fields[field].description)


@app.command()
def synthesize(
    corpus: CorpusOpt,
    style: Annotated[str, option("style")] = DEFAULTS.style,
    per_doc: Annotated[int, option("per_doc")] = DEFAULTS.per_doc,
    docs: Annotated[int | None, option("sample_docs", "--docs")] = DEFAULTS.sample_docs,
    generator: Annotated[str, option("generator")] = DEFAULTS.generator,
    temperature: Annotated[float, option("temperature")] = DEFAULTS.temperature,
    examples: Annotated[Path | None, option("examples")] = DEFAULTS.examples,
    roundtrip_k: Annotated[int, option("roundtrip_k")] = DEFAULTS.roundtrip_k,
    roundtrip_method: Annotated[str, option("roundtrip_method")] = DEFAULTS.roundtrip_method,
    seed: Annotated[int, option("seed")] = DEFAULTS.seed,
    refilter: Annotated[bool, option("refilter")] = DEFAULTS.refilter,
    as_json: JsonOpt = False,
) -> None:
    """Write synthetic queries for a corpus, filter them, and refresh its multi-view and expanded indexes."""
    ws = workspace()
    with user_errors():
        config = SynthesisConfig.of(
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
        run = ws.prepare_synthesis(corpus, config)
        with query_progress(not as_json) as progress:
            report = run((lambda done, total: progress("generating", done, total)) if progress else None)
        views = ws.refresh_views(corpus)
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
