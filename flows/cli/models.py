"""The ``adapt`` and ``models`` commands: fine-tune a corpus's embedding model, list the adapted versions.

``zsr adapt`` trains on the corpus's kept synthetic queries (``zsr synthesize`` writes them) and publishes
the model under ``$ZSR_HOME/models/<corpus>/<version>`` (see ``Workspace.adapt``); the corpus keeps
searching with its own model until it is re-indexed with the new one. ``zsr models`` lists the versions.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from flows.cli.common import JsonOpt, app, emit_json, listing, out, query_progress, user_errors, workspace


@app.command()
def adapt(
    corpus: Annotated[str, typer.Argument(help="Corpus whose model is fine-tuned.")],
    from_synthetic: Annotated[
        bool, typer.Option("--from-synthetic", help="Train on the corpus's kept synthetic queries.")
    ] = False,
    loss: Annotated[
        str, typer.Option(help="mnrl (in-batch and hard negatives) or listwise (ListNet on judge grades).")
    ] = "mnrl",
    max_steps: Annotated[int, typer.Option(help="Optimiser steps at most (across resumed runs).")] = 200,
    max_minutes: Annotated[
        float | None, typer.Option(help="Training minutes at most (across resumed runs).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per step (and in-batch negatives).")] = 32,
    hard_negatives: Annotated[
        int, typer.Option(help="Passages mined per query from the corpus's dense search.")
    ] = 1,
    judge: Annotated[
        str | None,
        typer.Option(help="llm or none: grades mined passages (listwise: needed; default llm there)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a corpus's embedding model on its synthetic queries; a killed run resumes when rerun."""
    from tasks.adapt.examples import AdaptConfig

    with user_errors():
        if not from_synthetic:
            raise ValueError("zsr adapt trains on the corpus's synthetic queries: pass --from-synthetic")
        chosen = judge or ("llm" if loss == "listwise" else "none")
        if chosen not in ("llm", "none"):
            raise ValueError(f"unknown judge {chosen!r}; the CLI offers llm or none")
        config = AdaptConfig(
            loss=loss,  # type: ignore[arg-type]  # AdaptConfig refuses an unknown loss by name
            max_steps=max_steps,
            max_minutes=max_minutes,
            batch_size=batch_size,
            hard_negatives=hard_negatives,
        )
        with query_progress(not as_json) as progress:
            report = workspace().adapt(
                corpus,
                config,
                judge="llm" if chosen == "llm" else None,
                progress=(lambda done, total: progress("training", done, total)) if progress else None,
            )
    if as_json:
        emit_json(asdict(report))
        return
    m = report.manifest
    if report.reused:
        out.print(f"[bold]{corpus}[/]: version {m.version} was trained before with these data and options")
    else:
        resumed = f", resumed from step {report.resumed_from}" if report.resumed_from else ""
        out.print(
            f"[bold]{corpus}[/]: version {m.version} ({m.loss}), {m.steps} steps in {m.seconds:.0f} s "
            f"({m.stopped}{resumed}) on {m.train_queries} queries"
        )
    out.print(f"dev ({m.dev_queries} held-out synthetic queries): {_dev(m.dev)}")
    out.print(f"saved in {report.path}")


@app.command()
def models(
    corpus: Annotated[str | None, typer.Argument(help="Only this corpus's versions.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the adapted models (``zsr adapt``), oldest first: loss, steps, dev figures."""
    with user_errors():
        rows = workspace().models(corpus)
    shown = [{**row, "dev_figures": _dev(row["dev"])} for row in rows]
    columns = {
        "corpus": "corpus",
        "version": "version",
        "loss": "loss",
        "steps": "steps",
        "queries": "train_queries",
        "dev nDCG@10 base -> adapted": "dev_figures",
        "created": "created_at",
    }
    empty = "no adapted models yet; `zsr adapt` trains one"
    listing(rows if as_json else shown, columns, as_json, empty, spare=("queries", "created"))


def _dev(dev: dict[str, dict[str, float]]) -> str:
    """``base -> adapted`` nDCG@10, or a note when there were no dev queries."""
    base, adapted = dev.get("base", {}), dev.get("adapted", {})
    if "nDCG@10" not in base:
        return "none held out"
    return f"{base['nDCG@10']:.3f} -> {adapted.get('nDCG@10', float('nan')):.3f}"
