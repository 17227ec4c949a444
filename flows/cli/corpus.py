"""Corpus commands: ``ingest``, ``search``, ``corpora``, ``lattice``, ``methods`` and ``demo``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from flows.cli.common import (
    CorpusOpt,
    JsonOpt,
    app,
    emit_json,
    err,
    index_progress,
    listing,
    out,
    query_progress,
    results_json,
    show,
    show_results,
    user_errors,
    warn,
    workspace,
)
from tasks.ingest.formats import SourceFormat
from tasks.settings import Chunking

if TYPE_CHECKING:
    from tasks.workspace import Hit

DEMO_DATA = Path(__file__).resolve().parents[2] / "demo" / "cranfield"


@app.command()
def ingest(
    source: Annotated[
        Path, typer.Argument(help="BEIR folder, .jsonl/.csv/.parquet file, or a folder of files.")
    ],
    corpus: CorpusOpt,
    fmt: Annotated[
        SourceFormat | None,
        typer.Option("--format", help="beir, jsonl, csv, parquet or folder (default: detected)."),
    ] = None,
    id_field: Annotated[str | None, typer.Option(help="Field holding the document id.")] = None,
    title_field: Annotated[str | None, typer.Option(help="Field holding the title.")] = None,
    text_field: Annotated[str | None, typer.Option(help="Field holding the text.")] = None,
    delimiter: Annotated[str, typer.Option(help="CSV field delimiter, e.g. ';' or '|' (default ',').")] = ",",
    model: Annotated[
        str | None,
        typer.Option(
            help="sentence-transformers model (name, path, or a version of the corpus's adapted models) for "
            "a new corpus (default: ZSR_EMBEDDING_MODEL); for an indexed corpus, move it to this model "
            "without downtime: its vectors are built beside the old ones, then switched to at once."
        ),
    ] = None,
    compensate_only: Annotated[
        bool,
        typer.Option(
            help="With --model on an indexed corpus: learn the query drift map into the old model's space "
            "and stop; search with 'dense(compensate=true)' until an upgrade without it completes."
        ),
    ] = False,
    chunking: Annotated[
        Chunking | None,
        typer.Option(
            help="tokens (each chunk encoded alone) or late (chunks pooled from one pass over the whole "
            "document), for a new corpus (default: ZSR_CHUNKING, tokens); a corpus keeps its own."
        ),
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option(help="Skip bad records and report them instead of failing.")
    ] = False,
    keep_deleted: Annotated[bool, typer.Option(help="Keep documents that are gone from the source.")] = False,
    promptreps: Annotated[
        bool, typer.Option(help="Also build the PromptReps index (as `zsr promptreps index`).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index SOURCE as a corpus; re-running it re-embeds only new and changed documents."""
    from tasks.ingest.sources import FieldMap

    with user_errors(), index_progress(not as_json) as progress:
        fields = FieldMap(id=id_field, title=title_field, text=text_field)
        report, read = workspace().ingest(
            source,
            corpus,
            fmt=fmt,
            fields=fields,
            skip_bad=skip_bad,
            keep_deleted=keep_deleted,
            model=model,
            chunking=chunking,
            progress=progress,
            delimiter="\t" if delimiter == "\\t" else delimiter,  # as the hint prints it: '\t'
            compensate_only=compensate_only,
        )
    skipped = [asdict(p) for p in read.skipped]
    reps = _index_promptreps(corpus, as_json) if promptreps else None
    if as_json:
        emit_json({**asdict(report), "skipped": skipped} | ({"promptreps": reps} if reps else {}))
        return
    out.print(
        f"[bold]{corpus}[/]: {report.added} added, {report.changed} changed, {report.deleted} deleted, "
        f"{report.unchanged} unchanged"
        + (f", {report.repaired} repaired" if report.repaired else "")
        + (f", {report.kept_deleted} kept though gone from the source" if report.kept_deleted else "")
        + (f", {report.kept_skipped} kept as indexed (bad record skipped)" if report.kept_skipped else "")
    )
    out.print(
        f"chunks: {report.chunks_written} written ({report.chunks_encoded} encoded, "
        f"{report.chunks_cached} from cache); "
        f"table versions: documents {report.versions['documents']}, views {report.versions['views']}; "
        f"{report.seconds:.1f}s"
    )
    if report.upgrade:
        out.print(upgrade_line(report.upgrade))
    for problem in read.skipped:
        err.print(f"[yellow]skipped[/] {problem}", highlight=False)
    if report.kept_unverified:
        unknown = read.skipped_without_id
        records = "skipped record has" if unknown == 1 else "skipped records have"
        err.print(
            f"[yellow]not deleted[/] {report.kept_unverified} documents missing from the source were kept: "
            f"{unknown} {records} no readable id and may be any of them; fix the bad records to let ingest "
            "delete what is gone",
            highlight=False,
        )


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="The query text.")],
    corpus: CorpusOpt,
    method: Annotated[
        str, typer.Option("--method", "-m", help="dense, bm25, hybrid or e.g. 'hybrid(fusion=rrf)'.")
    ] = "hybrid",
    k: Annotated[int, typer.Option("-k", min=1, help="How many documents.")] = 10,
    where: Annotated[
        str | None,
        typer.Option(help="Keep documents whose metadata matches, e.g. \"year >= 1990 AND lang = 'en'\"."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a corpus and show the top K documents (and a warning when the method fell back)."""
    with user_errors():
        found = workspace().find(corpus, query, method, k, where=where)
    warn(found.warning)
    rows = [{**asdict(hit), "text": hit.text[:200]} for hit in found.hits]
    if as_json:
        hits = [
            {k: v for k, v in row.items() if k != "highlights"} for row in rows
        ]  # the snippet as plain text
        asked = {"corpus": corpus, "method": method, "query": query, "where": where, "hits": hits}
        emit_json(
            {**asked, "fallback": found.fallback, "llm_errors": found.llm_errors, "warning": found.warning}
        )
        return
    show(
        ["rank", "doc_id", "score", "document"],
        [[h.rank, h.doc_id, h.score, hit_text(h)] for h in found.hits],
    )


def upgrade_line(moved: dict[str, Any]) -> str:
    """What a move to another model did (``tasks.ingest.upgrade.UpgradeReport`` as a dict)."""
    fit = (
        f"drift map ({moved['method']}, {moved['pairs']} pairs{', reused' if moved['fit_reused'] else ''}): "
        f"held-out cosine {moved['cosine_before']:.3f} -> {moved['cosine_after']:.3f}"
    )
    if not moved["switched"]:
        return (
            f"model {moved['model']}: {fit}; the corpus still searches space {moved['old_space']}, "
            "use 'dense(compensate=true)' for the new model"
        )
    return (
        f"model {moved['model']}: {fit}; {moved['rebuilt']} documents embedded, {moved['resumed']} done "
        f"before; switched from space {moved['old_space']} to {moved['new_space']}"
    )


def hit_text(hit: Hit) -> Text:
    """The title in bold over the snippet, its query terms in bold (the title alone without a snippet)."""
    text = Text(hit.title or "", style="bold")
    if hit.snippet:
        snippet = Text(hit.snippet)
        for start, end in hit.highlights:
            snippet.stylize("bold yellow", start, end)
        text.append("\n" if hit.title else "").append_text(snippet)
    elif not hit.title:
        text.append(hit.text[:80])
    return text


@app.command()
def corpora(as_json: JsonOpt = False) -> None:
    """List indexed corpora: documents, chunks, model, table versions, and whether a first ingest stopped."""
    with user_errors():
        rows = workspace().corpora()
    columns = {"corpus": "name", "documents": "documents_rows", "chunks": "views_rows", "model": "model"}
    columns |= {
        "documents version": "documents_version",
        "views version": "views_version",
        "updated": "updated_at",
        "incomplete (re-run the ingest)": "incomplete",
    }
    spare = ("documents version", "views version")  # left out on a narrow terminal; in --json
    listing(rows, columns, as_json, "no corpora yet: run `zsr ingest SOURCE --corpus NAME`", spare)


@app.command()
def lattice(
    corpus: Annotated[str, typer.Argument(help="The corpus whose LATTICE tree is built or refreshed.")],
    branching: Annotated[int, typer.Option(min=2, help="Children per node, at most (a new tree's).")] = 10,
    llm: Annotated[
        bool, typer.Option("--llm/--no-llm", help="Node summaries by the LLM, or extractive (free).")
    ] = True,
    rebuild: Annotated[
        bool, typer.Option(help="Cluster anew; the LLM cache answers unchanged nodes.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build or refresh the semantic tree the lattice method walks; only changed paths are re-summarised."""
    with user_errors():
        report = workspace().build_lattice(corpus, branching=branching, llm=llm, rebuild=rebuild)
    if as_json:
        emit_json(asdict(report))
        return
    out.print(
        f"{corpus}: {'built' if report.rebuilt else 'refreshed'} a tree of {report.nodes} nodes over "
        f"{report.documents} documents ({report.added} added, {report.deleted} deleted); "
        f"{report.summarised} summaries written, {report.kept} kept, {report.failed} failed",
        highlight=False,
    )


@app.command()
def methods(as_json: JsonOpt = False) -> None:
    """List retrieval methods and their parameters."""
    from tasks.methods.registry import REGISTRY

    rows: list[dict[str, Any]] = [
        {
            "method": name,
            "description": entry.summary.replace("``", ""),  # docstring markup
            "params": {
                p: {"default": f.default, "description": f.description}
                for p, f in entry.params.model_fields.items()
            },
        }
        for name, entry in REGISTRY.items()
    ]
    if as_json:
        emit_json(rows)
        return
    show(
        ["method", "parameters", "what it does"],
        [
            [
                r["method"],
                # None: chosen at run time from another parameter (hybrid's weights follow its fusion)
                ", ".join(
                    f"{p}={'auto' if v['default'] is None else v['default']}" for p, v in r["params"].items()
                )
                or "-",
                r["description"],
            ]
            for r in rows
        ],
    )


@app.command()
def demo(
    data: Annotated[Path, typer.Option(help="A BEIR folder with queries and qrels.")] = DEMO_DATA,
    corpus: Annotated[str, typer.Option(help="Corpus name to index the demo as.")] = "demo",
    as_json: JsonOpt = False,
) -> None:
    """The main job on the bundled demo data: index, register the qrels, evaluate, report."""
    ws = workspace()
    with user_errors():
        with index_progress(not as_json) as progress:
            indexed, _ = ws.ingest(data, corpus, fmt="beir", progress=progress)
        ws.testsets.register(corpus, "human", data, fmt="beir", replace=True)
        with query_progress(not as_json) as progress:
            evaluation = ws.evaluate(
                corpus, "human", ["dense", "bm25", "hybrid"], report=True, progress=progress
            )
        results, page = evaluation.runs, evaluation.report
    if as_json:
        emit_json({"index": asdict(indexed), "runs": results_json(results), "report": str(page)})
        return
    out.print(
        f"indexed [bold]{corpus}[/]: {indexed.added} added, {indexed.changed} changed, "
        f"{indexed.unchanged} unchanged"
    )
    show_results(corpus, "human", results)
    out.print(f'report: {page}\nquery the results: zsr sql "SELECT * FROM leaderboard"', soft_wrap=True)


promptreps_app = typer.Typer(help="PromptReps: a causal LM's prompted dense and sparse representations.")
app.add_typer(promptreps_app, name="promptreps")


@promptreps_app.command("index")
def promptreps_index(
    corpus: Annotated[str, typer.Argument(help="Corpus name.")], as_json: JsonOpt = False
) -> None:
    """Build or update CORPUS's PromptReps index with ZSR_PROMPTREPS_MODEL: only new and changed documents."""
    reps = _index_promptreps(corpus, as_json)
    if as_json:
        emit_json(reps)


def _index_promptreps(corpus: str, as_json: bool) -> dict[str, Any]:
    """Run the PromptReps index of ``corpus``; print its report unless ``as_json``, and return it."""
    with user_errors(), index_progress(not as_json) as progress:
        report = workspace().index_promptreps(corpus, progress=progress)
    reps = {**asdict(report), "tokens_per_second": report.tokens_per_second}
    if not as_json:
        out.print(
            f"[bold]{corpus}[/] PromptReps ({report.model}): {report.added} documents represented, "
            f"{report.deleted} deleted, {report.unchanged} unchanged; chunks {report.chunks_encoded} "
            f"encoded, {report.chunks_cached} from cache; {report.tokens_per_second:.0f} tokens/s; "
            f"{report.seconds:.1f}s"
        )
    return reps
