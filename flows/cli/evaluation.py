"""Evaluation and warehouse commands: ``eval``, ``runs``, ``compare``, ``sql``, ``export`` and ``report``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from flows.cli.common import (
    CorpusOpt,
    JsonOpt,
    app,
    cell,
    emit_json,
    err,
    fallback_warnings,
    narrow,
    out,
    query_progress,
    results_json,
    run_label,
    show,
    show_results,
    show_rows,
    user_errors,
    warn,
    workspace,
)

if TYPE_CHECKING:
    import polars as pl

    from tasks.evaluation.compare import Cost


@app.command("eval")
def eval_(
    corpus: CorpusOpt,
    testset: Annotated[str, typer.Option("--testset", "-t", help="A registered test set of the corpus.")],
    methods: Annotated[
        str, typer.Option(help="Comma-separated methods, e.g. 'dense,bm25,hybrid(fusion=rrf)'.")
    ] = "dense,bm25,hybrid",
    metrics: Annotated[
        str | None,
        typer.Option(help="Comma-separated ir-measures names (default: nDCG@10,R@100,RR@10,AP@100,P@10)."),
    ] = None,
    depth: Annotated[
        int | None, typer.Option(min=1, help="Documents retrieved per query (default: from the measures).")
    ] = None,
    on_ray: Annotated[
        bool,
        typer.Option("--ray", help="Score the methods side by side on the Ray cluster of ZSR_RAY_ADDRESS."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Score methods on a test set; every number lands in the warehouse."""
    from tasks.methods.registry import split_methods

    measure_list = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    with user_errors(), query_progress(not as_json) as progress:
        results = (
            workspace()
            .evaluate(
                corpus,
                testset,
                split_methods(methods),
                measure_list,
                depth=depth,
                progress=progress,
                on_ray=on_ray,
            )
            .runs
        )
    if as_json:
        emit_json(results_json(results))
        for message in fallback_warnings(results):
            warn(message)
    else:
        show_results(corpus, testset, results)


RUN_COLUMNS = ("corpus", "testset", "method", "nDCG@10", "R@100")


@app.command()
def runs(
    corpus: Annotated[str | None, typer.Option("--corpus", "-c", help="Only this corpus.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many runs.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List evaluation runs, newest first."""
    frame = workspace().runs(corpus, limit)
    if as_json:
        emit_json(frame.to_dicts())
    elif frame.height and narrow():
        # run ids by their suffix; the date, the mean latency and the query count are in --json
        show(
            ["run", "created", "corpus", "testset", "method", "nDCG@10", "R@100"],
            [
                [run_label(r["run_id"]), f"{r['created_at']:%m-%d %H:%M}", *(r[c] for c in RUN_COLUMNS)]
                for r in frame.iter_rows(named=True)
            ],
        )
    elif frame.height:
        show(frame.columns, frame.iter_rows())
    else:
        out.print("no runs yet: run `zsr eval --corpus C --testset T`")


@app.command()
def compare(
    run_a: Annotated[
        str, typer.Argument(help="Baseline run id (with --frontier: any run of the evaluation).")
    ],
    run_b: Annotated[str | None, typer.Argument(help="Run compared against the baseline.")] = None,
    measure: Annotated[str, typer.Option(help="Per-query measure to compare.")] = "nDCG@10",
    top: Annotated[int, typer.Option(min=0, help="How many biggest movers to show each way.")] = 5,
    frontier: Annotated[
        bool, typer.Option("--frontier", help="Every method of RUN_A's evaluation: quality against LLM cost.")
    ] = False,
    cost: Annotated[
        str, typer.Option(help="With --frontier: the cost axis, calls, tokens or judge (calls) per query.")
    ] = "calls",
    target: Annotated[
        float | None, typer.Option(help="With --frontier: name the cheapest method reaching this quality.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two runs query by query (paired tests, movers), or with --frontier: quality against cost."""
    if frontier:
        _frontier(run_a, measure, cost, target, as_json)
        return
    with user_errors():
        if run_b is None:
            raise ValueError("compare takes two runs (`zsr compare A B`), or one with --frontier")
        result = workspace().compare(run_a, run_b, measure, top)
    if as_json:
        emit_json(asdict(result))
        return
    a, b = result.run_a, result.run_b
    out.print(f"{a['corpus']}/{a['testset']}", highlight=False)
    for name, run in (("A", a), ("B", b)):  # one line each, so a narrow terminal breaks no id
        out.print(f"{name} = {run['run_id']} [bold]{escape(run['method'])}[/]", highlight=False)
    pairs = {**result.aggregates, **result.cost}
    show(
        ["measure", "A", "B", "B - A"],
        [[m, x, y, None if x is None or y is None else y - x] for m, (x, y) in pairs.items()],
    )
    out.print(
        f"{result.measure} per query: B wins {result.wins}, ties {result.ties}, loses {result.losses}; "
        f"paired t-test p = {cell(result.t_test_p)}, Wilcoxon p = {cell(result.wilcoxon_p)}"
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


def _frontier(run_id: str, measure: str, cost: str, target: float | None, as_json: bool) -> None:
    """The cost-quality table of ``run_id``'s evaluation, cheapest first, the Pareto frontier starred."""
    from tasks.evaluation.compare import cheapest

    with user_errors():
        axes: dict[str, Cost] = {"calls": "calls", "tokens": "tokens", "judge": "judge_calls"}
        if cost not in axes:
            raise ValueError(f"--cost must be calls, tokens or judge, got {cost!r}")
        axis = axes[cost]
        points = workspace().frontier(run_id, measure, axis)
    pick = cheapest(points, target, axis) if target is not None else None
    if as_json:
        emit_json({"points": [asdict(p) for p in points], "cheapest": asdict(pick) if pick else None})
        return
    show(
        ["method", measure, "LLM calls/query", "LLM tokens/query", "judge calls/query", "frontier"],
        [
            [p.method, p.quality, p.calls, p.tokens, p.judge_calls, "*" if p.on_frontier else ""]
            for p in points
        ],
    )
    if target is not None:
        found = (
            f"{pick.method} ({pick.quality:.3f}, {getattr(pick, axis):.1f} {axis}/query)" if pick else "none"
        )
        out.print(escape(f"cheapest with {measure} >= {target:g}: {found}"), highlight=False)


@app.command()
def sql(
    query: Annotated[
        str | None, typer.Argument(help="One SQL statement; without it, an interactive shell.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Query the results warehouse with DuckDB SQL (views runs, metrics, query_metrics, rankings, ...)."""
    ws = workspace()

    def run(statements: str) -> None:
        frame = ws.sql(statements)
        if frame is not None:
            _print_frame(frame, as_json)

    if query is not None:
        with user_errors():
            run(query)
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
                run(buffer)
            except ValueError as error:
                err.print(f"[red]{error}[/]", highlight=False)
            buffer = ""


def _print_frame(frame: pl.DataFrame, as_json: bool) -> None:
    if as_json:
        emit_json(frame.to_dicts())
    else:
        show_rows(frame.columns, list(frame.iter_rows()))


@app.command()
def export(
    run_id: Annotated[str, typer.Argument(help="The run to export.")],
    fmt: Annotated[str, typer.Option("--format", help="Only trec for now.")] = "trec",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
) -> None:
    """Export a run's ranking (TREC run format: query Q0 doc rank score tag)."""
    with user_errors():
        if fmt != "trec":
            raise ValueError(f"unknown format {fmt!r}; use --format trec")
        lines = workspace().export_trec(run_id)
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
        out.print(f"report: {workspace().report(run_id, measure)}", soft_wrap=True)
