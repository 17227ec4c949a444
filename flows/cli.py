"""The ``zsr`` command line. Every command works without a Prefect server; ``--json`` is for scripts."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from flows.serve import serve
from storage.settings import get_settings

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
    try:
        yield
    except (ValueError, LookupError, FileNotFoundError) as error:  # bad input; unknown corpus, run, test set
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
    show(
        ["rank", "doc_id", "score", "title"],
        [[r["rank"], r["doc_id"], r["score"], r["title"] or r["text"][:80]] for r in rows],
    )


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
    columns = {"corpus": "name", "documents": "documents_rows", "chunks": "views_rows", "model": "model"}
    columns |= {
        "documents version": "documents_version",
        "views version": "views_version",
        "updated": "updated_at",
    }
    listing(rows, columns, as_json, "no corpora yet: run `zsr ingest SOURCE --corpus NAME`")


@app.command()
def methods(as_json: JsonOpt = False) -> None:
    """List retrieval methods and their parameters."""
    from tasks.search import METHODS

    rows = [
        {
            "method": name,
            "description": inspect.cleandoc(model.__doc__ or "").split("\n\n")[0].replace("\n", " "),
            "params": {
                p: {"default": f.default, "description": f.description} for p, f in model.model_fields.items()
            },
        }
        for name, model in METHODS.items()
    ]
    if as_json:
        emit_json(rows)
        return
    show(
        ["method", "parameters", "what it does"],
        [
            [
                r["method"],
                ", ".join(f"{p}={v['default']}" for p, v in r["params"].items()) or "-",
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
    from tasks.api import ingest as run_ingest
    from tasks.api import open_store
    from tasks.testsets import register

    with user_errors():
        with index_progress(not as_json) as progress:
            indexed, _ = run_ingest(data, corpus, fmt="beir", progress=progress)
        register(get_settings().testsets_dir, open_store(), corpus, "human", data, fmt="beir", replace=True)
        results = _evaluate(corpus, "human", ["dense", "bm25", "hybrid"], None, None, progress=not as_json)
        page = _write_report(results[0].run_id, "nDCG@10")
    if as_json:
        emit_json({"index": asdict(indexed), "runs": [asdict(r) for r in results], "report": str(page)})
        return
    out.print(
        f"indexed [bold]{corpus}[/]: {indexed.added} added, {indexed.changed} changed, "
        f"{indexed.unchanged} unchanged"
    )
    _show_results(corpus, "human", results)
    out.print(f'report: {page}\nquery the results: zsr sql "SELECT * FROM leaderboard"', soft_wrap=True)


testset_app = typer.Typer(help="Register and list test sets (queries + relevance judgements) per corpus.")
app.add_typer(testset_app, name="testset")


@testset_app.command("add")
def testset_add(
    corpus: Annotated[str, typer.Argument(help="The corpus the judgements refer to.")],
    name: Annotated[str, typer.Argument(help="Name to register the test set under.")],
    path: Annotated[
        Path, typer.Argument(help="BEIR folder (queries.jsonl + qrels/SPLIT.tsv) or a TREC qrels file.")
    ],
    fmt: Annotated[str | None, typer.Option("--format", help="beir or trec (default: detected).")] = None,
    split: Annotated[str, typer.Option(help="BEIR qrels split.")] = "test",
    queries: Annotated[
        Path | None, typer.Option(help="Queries (.jsonl or .tsv) for a TREC qrels file.")
    ] = None,
    replace: Annotated[bool, typer.Option(help="Replace a test set registered under the same name.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Validate a test set against the corpus and register it."""
    from tasks.api import open_store
    from tasks.testsets import register

    with user_errors():
        testset, report = register(
            get_settings().testsets_dir,
            open_store(),
            corpus,
            name,
            path,
            fmt=fmt,
            split=split,
            queries=queries,
            replace=replace,  # type: ignore[arg-type]
        )
    if as_json:
        emit_json({"corpus": corpus, "name": name, "content_hash": testset.content_hash, **asdict(report)})
        return
    out.print(
        f"registered [bold]{corpus}/{name}[/]: {report.n_judged_queries} judged queries, "
        f"{report.n_qrels} qrels"
    )
    for warning in report.warnings:
        err.print(f"[yellow]warning[/] {warning}", highlight=False)


@testset_app.command("list")
def testset_list(
    corpus: Annotated[str | None, typer.Option("--corpus", "-c", help="Only this corpus.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List registered test sets."""
    from tasks.testsets import list_testsets

    columns = {c: c for c in ("corpus", "name", "kind")} | {"queries": "n_queries", "qrels": "n_qrels"}
    listing(
        list_testsets(get_settings().testsets_dir, corpus),
        columns | {"created": "created_at"},
        as_json,
        "no test sets yet: run `zsr testset add CORPUS NAME PATH`",
    )


@app.command("eval")
def eval_(
    corpus: CorpusOpt,
    testset: Annotated[str, typer.Option("--testset", "-t", help="A registered test set of the corpus.")],
    methods: Annotated[
        str, typer.Option(help="Comma-separated methods, e.g. 'dense,bm25,hybrid(fusion=score)'.")
    ] = "dense,bm25,hybrid",
    metrics: Annotated[
        str | None,
        typer.Option(help="Comma-separated ir-measures names (default: nDCG@10,R@100,RR@10,AP@100,P@10)."),
    ] = None,
    depth: Annotated[
        int | None, typer.Option(min=1, help="Documents retrieved per query (default: from the measures).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Score methods on a test set; every number lands in the warehouse."""
    from tasks.search import split_methods

    measure_list = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    with user_errors():
        results = _evaluate(
            corpus, testset, split_methods(methods), measure_list, depth, progress=not as_json
        )
    if as_json:
        emit_json([asdict(r) for r in results])
    else:
        _show_results(corpus, testset, results)


def _evaluate(
    corpus: str,
    testset: str,
    methods: list[str],
    measures: list[str] | None,
    depth: int | None,
    progress: bool,
) -> list[Any]:
    """Validate everything, then evaluate each method into the warehouse (shared by eval and demo)."""
    from tasks.api import searcher
    from tasks.runs import evaluate_methods, prepare
    from tasks.testsets import load

    prepare(methods, measures)  # typos fail before the model loads
    engine = searcher(corpus)
    test = load(get_settings().testsets_dir, corpus, testset)
    with _query_progress(progress) as callback:
        return evaluate_methods(
            engine, test, methods, _warehouse(), measures=measures, depth=depth, progress=callback
        )


def _show_results(corpus: str, testset: str, results: list[Any]) -> None:
    measures = list(results[0].metrics)
    show(
        ["run", "method", *measures, "seconds"],
        [[r.run_id, r.method, *(r.metrics[m] for m in measures), r.retrieval_seconds] for r in results],
        title=f"{corpus} / {testset}: {results[0].n_queries} queries",
    )


@contextmanager
def _query_progress(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err, transient=True
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(method: str, done: int, total: int) -> None:
            if method not in tasks:
                tasks[method] = bar.add_task(method, total=total)
            bar.update(tasks[method], completed=done)

        yield update


def _warehouse() -> Any:
    from storage.warehouse import Warehouse

    return Warehouse(get_settings().warehouse_dir)


@app.command()
def runs(
    corpus: Annotated[str | None, typer.Option("--corpus", "-c", help="Only this corpus.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many runs.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List evaluation runs, newest first."""
    from tasks.compare import list_runs

    frame = list_runs(_warehouse(), corpus, limit)
    if as_json:
        emit_json(frame.to_dicts())
    elif frame.height:
        show(frame.columns, frame.iter_rows())
    else:
        out.print("no runs yet: run `zsr eval --corpus C --testset T`")


def listing(rows: list[dict[str, Any]], columns: dict[str, str], as_json: bool, empty: str) -> None:
    """Rows as JSON, or as a table of ``columns`` (header -> key), or the hint ``empty`` if there are none."""
    if as_json:
        emit_json(rows)
    elif rows:
        show(list(columns), ([row[key] for key in columns.values()] for row in rows))
    else:
        out.print(empty)


def show(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """A table on stdout; long values wrap instead of being cut, so ids stay copyable."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    out.print(table)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return f"{value:%Y-%m-%d %H:%M:%S}" if hasattr(value, "strftime") else str(value)


@app.command()
def compare(
    run_a: Annotated[str, typer.Argument(help="Baseline run id.")],
    run_b: Annotated[str, typer.Argument(help="Run compared against the baseline.")],
    measure: Annotated[str, typer.Option(help="Per-query measure to compare.")] = "nDCG@10",
    top: Annotated[int, typer.Option(min=0, help="How many biggest movers to show each way.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Compare two runs query by query: paired significance tests, wins/ties/losses, biggest movers."""
    from tasks.api import query_texts
    from tasks.compare import compare_runs, run_row

    warehouse = _warehouse()
    with user_errors():
        result = compare_runs(warehouse, run_a, run_b, measure, top, query_texts(run_row(warehouse, run_a)))
    if as_json:
        emit_json(asdict(result))
        return
    a, b = result.run_a, result.run_b
    out.print(
        f"A = {a['run_id']} [bold]{a['method']}[/]   B = {b['run_id']} [bold]{b['method']}[/]"
        f"   ({a['corpus']}/{a['testset']})"
    )
    pairs = {**result.aggregates, **result.cost}
    show(
        ["measure", "A", "B", "B - A"],
        [[m, x, y, None if x is None or y is None else y - x] for m, (x, y) in pairs.items()],
    )
    out.print(
        f"{result.measure} per query: B wins {result.wins}, ties {result.ties}, loses {result.losses}; "
        f"paired t-test p = {_cell(result.t_test_p)}, Wilcoxon p = {_cell(result.wilcoxon_p)}"
    )
    for title, movers in (("biggest gains for B", result.gains), ("biggest drops for B", result.drops)):
        if movers:
            show(
                ["query", "A", "B", "delta", "text"],
                [
                    [m["query_id"], m["value_a"], m["value_b"], m["delta"], (m["text"] or "")[:70]]
                    for m in movers
                ],
                title=title,
            )


@app.command()
def sql(
    query: Annotated[
        str | None, typer.Argument(help="One SQL statement; without it, an interactive shell.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Query the results warehouse with DuckDB SQL (views runs, metrics, query_metrics, rankings, ...)."""
    import duckdb

    con = _warehouse().connect()
    if query is not None:
        with user_errors():
            try:
                _print_result(con.sql(query), as_json)
            except duckdb.Error as error:
                raise ValueError(str(error)) from None
        return
    out.print(
        "DuckDB over the zsr warehouse. Views: runs, metrics, query_metrics, queries, rankings, leaderboard,"
    )
    out.print(
        "latest_runs, run_deltas; macros query_deltas(a, b), win_tie_loss(a, b)."
        " End statements with ';', .quit to leave."
    )
    buffer = ""
    while True:
        try:
            line = input("zsr> " if not buffer else "...> ")
        except EOFError:
            break
        if not buffer and line.strip() in (".quit", ".exit", "\\q"):
            break
        buffer += line + "\n"
        if buffer.rstrip().endswith(";"):
            try:
                _print_result(con.sql(buffer), as_json)
            except duckdb.Error as error:
                err.print(f"[red]{error}[/]", highlight=False)
            buffer = ""


def _print_result(relation: Any, as_json: bool) -> None:
    if relation is None:
        return
    frame = relation.pl()
    if as_json:
        emit_json(frame.to_dicts())
    else:
        show(frame.columns, frame.iter_rows())


@app.command()
def export(
    run_id: Annotated[str, typer.Argument(help="The run to export.")],
    fmt: Annotated[str, typer.Option("--format", help="Only trec for now.")] = "trec",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
) -> None:
    """Export a run's ranking (TREC run format: query Q0 doc rank score tag)."""
    from tasks.compare import trec_lines

    with user_errors():
        if fmt != "trec":
            raise ValueError(f"unknown format {fmt!r}; use --format trec")
        lines = trec_lines(_warehouse(), run_id)
    text = "\n".join(lines) + "\n"
    if output:
        output.write_text(text)
        err.print(f"wrote {len(lines)} lines to {output}")
    else:
        print(text, end="")


@app.command()
def report(
    run_id: Annotated[str, typer.Argument(help="Any run of the evaluation to report on.")],
    measure: Annotated[
        str, typer.Option(help="Measure for the per-query chart and hardest queries.")
    ] = "nDCG@10",
) -> None:
    """Write a one-page HTML report (tables and charts) of the evaluation a run belongs to."""
    with user_errors():
        out.print(f"report: {_write_report(run_id, measure)}", soft_wrap=True)


def _write_report(run_id: str, measure: str) -> Path:
    from tasks.api import write_eval_report

    return write_eval_report(run_id, measure)


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
    import json as jsonlib

    from tasks.api import llm_client, open_store, searcher
    from tasks.synthesize import (
        ExtractiveGenerator,
        Filters,
        LLMGenerator,
        document_vectors,
        sample_documents,
    )
    from tasks.synthesize import synthesize as run_synthesis
    from tasks.views import build_views

    with user_errors():
        store = open_store()
        engine = searcher(corpus)
        if generator not in ("llm", "extractive"):
            raise ValueError(f"unknown generator {generator!r}; use llm or extractive")
        shots = (
            [jsonlib.loads(line) for line in examples.read_text().splitlines() if line.strip()]
            if examples
            else []
        )
        if any(set(s) < {"passage", "query"} for s in shots):
            raise ValueError(f"{examples}: every example needs 'passage' and 'query' fields")
        gen = (
            ExtractiveGenerator()
            if generator == "extractive"
            else LLMGenerator(llm_client(), style=style, temperature=temperature, examples=shots)
        )
        doc_ids = None
        if docs:
            ids, vectors = document_vectors(store, corpus)
            doc_ids = sample_documents(ids, vectors, docs, seed=seed)
        filters = Filters(roundtrip_k=roundtrip_k or None, roundtrip_method=roundtrip_method)
        with _query_progress(not as_json) as progress:
            report = run_synthesis(
                store,
                corpus,
                gen,
                style=style,
                per_doc=per_doc,
                doc_ids=doc_ids,
                filters=filters,
                search=engine.search_batch,
                refilter=refilter,
                progress=(lambda done, total: progress("generating", done, total)) if progress else None,
            )
        views = build_views(store, corpus, engine.embedder_factory)
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


@testset_app.command("synthesize")
def testset_synthesize(
    corpus: Annotated[str, typer.Argument(help="The corpus to build a test set for.")],
    name: Annotated[str, typer.Argument(help="Name to register the synthetic test set under.")],
    docs: Annotated[int, typer.Option(min=1, help="Diverse documents to write queries from.")] = 50,
    per_doc: Annotated[int, typer.Option(min=1, help="Queries per document.")] = 1,
    methods: Annotated[
        str, typer.Option(help="Methods whose top results are pooled and judged.")
    ] = "bm25,dense,hybrid",
    pool_depth: Annotated[int, typer.Option(min=1, help="Top results of each method pooled per query.")] = 10,
    generator: Annotated[str, typer.Option(help="llm, or extractive (no LLM).")] = "llm",
    judge: Annotated[str, typer.Option(help="llm (graded 0-2, single token).")] = "llm",
    roundtrip_k: Annotated[int, typer.Option(min=0, help="Round-trip filter depth (0: off).")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the document sample.")] = 0,
    replace: Annotated[bool, typer.Option(help="Replace a test set registered under the same name.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build a test set without human labels: sampled documents, generated queries, pooled and LLM-judged."""
    from tasks.api import llm_client, open_store, searcher
    from tasks.judge import LLMJudge
    from tasks.search import split_methods
    from tasks.synthesize import ExtractiveGenerator, Filters, LLMGenerator
    from tasks.synthetic_testset import build_synthetic_testset

    settings = get_settings()
    with user_errors():
        if judge != "llm":
            raise ValueError(
                f"unknown judge {judge!r}; the CLI offers llm (oracle judges are for simulations)"
            )
        if generator not in ("llm", "extractive"):
            raise ValueError(f"unknown generator {generator!r}; use llm or extractive")
        llm = llm_client()
        report = build_synthetic_testset(
            open_store(),
            corpus,
            name=name,
            generator=ExtractiveGenerator() if generator == "extractive" else LLMGenerator(llm),
            judge=LLMJudge(llm),
            searcher=searcher(corpus),
            root=settings.testsets_dir,
            methods=split_methods(methods),
            n_docs=docs,
            per_doc=per_doc,
            pool_depth=pool_depth,
            seed=seed,
            filters=Filters(roundtrip_k=roundtrip_k or None),
            replace=replace,
            warehouse=_warehouse(),
        )
    if as_json:
        emit_json(asdict(report))
        return
    out.print(
        f"registered [bold]{corpus}/{name}[/] (synthetic): {report.queries} queries, "
        f"{report.judged} pairs judged ({report.failed} failed), {report.relevant_pairs} relevant, "
        f"{report.mean_relevant_per_query:.1f} relevant per query; "
        f"generator {report.generator}, judge {report.judge}"
    )


@testset_app.command("agreement")
def testset_agreement(
    corpus: Annotated[str, typer.Argument(help="The corpus.")],
    human: Annotated[str, typer.Argument(help="Test set with human qrels.")],
    synthetic: Annotated[str, typer.Argument(help="Synthetic test set to check against it.")],
    methods: Annotated[
        str, typer.Option(help="Methods to rank (at least two).")
    ] = "bm25,dense,hybrid,multiview,d2q",
    measure: Annotated[str, typer.Option(help="Measure the methods are ranked by.")] = "nDCG@10",
    as_json: JsonOpt = False,
) -> None:
    """How well a synthetic test set ranks methods like the human one (Kendall tau, kept in the warehouse)."""
    from tasks.api import searcher
    from tasks.search import split_methods
    from tasks.synthetic_testset import agreement
    from tasks.testsets import load

    root = get_settings().testsets_dir
    with user_errors():
        result = agreement(
            _warehouse(),
            searcher(corpus),
            load(root, corpus, human),
            load(root, corpus, synthetic),
            split_methods(methods),
            measure=measure,
        )
    if as_json:
        emit_json(asdict(result))
        return
    show(
        ["method", f"{measure} ({human})", f"{measure} ({synthetic})"],
        [[m, result.human_scores[m], result.synthetic_scores[m]] for m in result.methods],
    )
    out.print(
        f"Kendall tau {_cell(result.kendall_tau)} (p = {_cell(result.p_value)}); "
        f"same best method: {'yes' if result.top1_agree else 'no'}"
    )


app.command("serve")(serve)  # defined in flows.serve; Prefect itself is imported only when it runs
