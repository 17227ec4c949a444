"""The ``zsr`` command line. Every command works without a Prefect server; ``--json`` is for scripts."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(
    help="zsr: zero-shot retrieval. Index a corpus into LanceDB, search it, measure methods without labels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

DEMO_DATA = Path(__file__).resolve().parents[1] / "demo" / "cranfield"
CorpusOpt = Annotated[str, typer.Option("--corpus", "-c", help="Corpus name (letters, digits, '-', '_').")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """Configure logging for every command."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn errors a user can act on into one clear message and exit status 2 (no traceback)."""
    from storage.corpus_store import UnknownCorpusError
    from storage.types import BadInputError

    try:
        yield
    except (BadInputError, UnknownCorpusError, ValueError, FileNotFoundError) as error:
        err.print(f"[bold red]error:[/] {error}", markup=True, highlight=False)
        raise typer.Exit(2) from None


def emit_json(value: Any) -> None:
    """Machine-readable output on stdout."""
    print(json.dumps(value, indent=2, default=str))


@contextmanager
def index_progress(enabled: bool) -> Iterator[Any]:
    """A progress bar on stderr, shown once there is something to embed."""
    if not enabled:
        yield None
        return
    columns = (TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("embedding", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@app.command()
def ingest(
    source: Annotated[
        Path, typer.Argument(help="BEIR folder, .jsonl/.csv/.parquet file, or a folder of files.")
    ],
    corpus: CorpusOpt,
    fmt: Annotated[
        str | None, typer.Option("--format", help="beir, jsonl, csv, parquet or folder (default: detected).")
    ] = None,
    id_field: Annotated[str | None, typer.Option(help="Field holding the document id.")] = None,
    title_field: Annotated[str | None, typer.Option(help="Field holding the title.")] = None,
    text_field: Annotated[str | None, typer.Option(help="Field holding the text.")] = None,
    model: Annotated[
        str | None,
        typer.Option(help="sentence-transformers model for a new corpus (default: ZSR_EMBEDDING_MODEL)."),
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option(help="Skip bad records and report them instead of failing.")
    ] = False,
    keep_deleted: Annotated[bool, typer.Option(help="Keep documents that are gone from the source.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index SOURCE as a corpus; re-running it re-embeds only new and changed documents."""
    from tasks.api import ingest as run_ingest
    from tasks.sources import FieldMap

    with user_errors(), index_progress(not as_json) as progress:
        fields = FieldMap(id=id_field, title=title_field, text=text_field)
        report, read = run_ingest(
            source,
            corpus,
            fmt=fmt,
            fields=fields,
            skip_bad=skip_bad,
            keep_deleted=keep_deleted,  # type: ignore[arg-type]
            model=model,
            progress=progress,
        )
    skipped = [asdict(p) for p in read.skipped]
    if as_json:
        emit_json({**asdict(report), "skipped": skipped})
        return
    out.print(
        f"[bold]{corpus}[/]: {report.added} added, {report.changed} changed, {report.deleted} deleted, "
        f"{report.unchanged} unchanged"
        + (f", {report.kept_deleted} kept though gone from the source" if report.kept_deleted else "")
    )
    out.print(
        f"chunks: {report.chunks_written} written ({report.chunks_encoded} encoded, "
        f"{report.chunks_cached} from cache); "
        f"table versions: documents {report.versions['documents']}, views {report.versions['views']}; "
        f"{report.seconds:.1f}s"
    )
    for problem in read.skipped:
        err.print(f"[yellow]skipped[/] {problem}", highlight=False)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="The query text.")],
    corpus: CorpusOpt,
    method: Annotated[
        str, typer.Option("--method", "-m", help="dense, bm25, hybrid or e.g. 'hybrid(fusion=score)'.")
    ] = "hybrid",
    k: Annotated[int, typer.Option("-k", min=1, help="How many documents.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Search a corpus and show the top K documents."""
    from tasks.api import searcher

    with user_errors():
        engine = searcher(corpus)
        hits = engine.search(query, method, k)
        docs = {
            d["doc_id"]: d
            for d in engine.store.fetch_documents(corpus, [h[0] for h in hits], ["doc_id", "title", "text"])
        }
    rows = [
        {
            "rank": i,
            "doc_id": doc_id,
            "score": score,
            "title": docs[doc_id]["title"],
            "text": docs[doc_id]["text"][:200],
        }
        for i, (doc_id, score) in enumerate(hits, start=1)
    ]
    if as_json:
        emit_json({"corpus": corpus, "method": method, "query": query, "hits": rows})
        return
    table = Table("rank", "doc_id", "score", "title")
    for row in rows:
        table.add_row(
            str(row["rank"]), row["doc_id"], f"{row['score']:.4f}", row["title"] or row["text"][:80]
        )
    out.print(table)


@app.command()
def corpora(as_json: JsonOpt = False) -> None:
    """List indexed corpora: documents, chunks, model and table versions."""
    from tasks.api import open_store

    with user_errors():
        store = open_store()
        rows = [
            {
                **asdict(info),
                **{f"{k}_rows": v for k, v in store.counts(info.name).items()},
                **{f"{k}_version": v for k, v in store.versions(info.name).items()},
            }
            for info in store.corpora()
        ]
    if as_json:
        emit_json(rows)
        return
    table = Table("corpus", "documents", "chunks", "model", "versions (docs/views)", "updated")
    for row in rows:
        table.add_row(
            row["name"],
            str(row["documents_rows"]),
            str(row["views_rows"]),
            row["model"],
            f"{row['documents_version']}/{row['views_version']}",
            f"{row['updated_at']:%Y-%m-%d %H:%M}",
        )
    out.print(table if rows else "no corpora yet: run `zsr ingest SOURCE --corpus NAME`")


@app.command()
def methods(as_json: JsonOpt = False) -> None:
    """List retrieval methods and their parameters."""
    from tasks.search import METHODS

    rows = [
        {
            "method": name,
            "description": (model.__doc__ or "").strip(),
            "params": {
                p: {"default": f.default, "description": f.description} for p, f in model.model_fields.items()
            },
        }
        for name, model in METHODS.items()
    ]
    if as_json:
        emit_json(rows)
        return
    table = Table("method", "parameters", "what it does")
    for row in rows:
        params = ", ".join(f"{p}={v['default']}" for p, v in row["params"].items()) or "-"
        table.add_row(row["method"], params, row["description"])
    out.print(table)


@app.command()
def demo(
    data: Annotated[Path, typer.Option(help="A BEIR folder with queries and qrels.")] = DEMO_DATA,
    corpus: Annotated[str, typer.Option(help="Corpus name to index the demo as.")] = "demo",
    as_json: JsonOpt = False,
) -> None:
    """The main job on the bundled demo data: index it, then score bm25, dense and hybrid on its qrels."""
    from tasks.api import ingest as run_ingest
    from tasks.api import searcher
    from tasks.evaluate import evaluate, load_qrels, load_queries

    with user_errors(), index_progress(not as_json) as progress:
        report, _ = run_ingest(data, corpus, fmt="beir", progress=progress)
        qrels = load_qrels(data / "qrels" / "test.tsv")
        queries = {qid: text for qid, text in load_queries(data / "queries.jsonl").items() if qid in qrels}
        engine = searcher(corpus)
        scores = {
            m: evaluate(engine.search_batch(queries, m, k=100), qrels) for m in ("bm25", "dense", "hybrid")
        }
    if as_json:
        emit_json({"index": asdict(report), "queries": len(queries), "scores": scores})
        return
    out.print(
        f"indexed [bold]{corpus}[/]: {report.added} added, {report.changed} changed, "
        f"{report.unchanged} unchanged"
    )
    measures = list(next(iter(scores.values())))
    table = Table("method", *measures, title=f"{len(queries)} queries with human qrels")
    for method, values in scores.items():
        table.add_row(method, *(f"{values[m]:.3f}" for m in measures))
    out.print(table)
