"""What the ``zsr`` commands share: the Typer app, output on stdout and stderr, options and helpers."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from tasks.settings import get_settings

if TYPE_CHECKING:
    from tasks.evaluation.runs import RunResult
    from tasks.workspace import Workspace

app = typer.Typer(
    help="zsr: zero-shot retrieval. Index a corpus into LanceDB, search it, measure methods without labels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True, soft_wrap=True)  # messages stay whole lines, so they can be copied and grepped

CorpusOpt = Annotated[str, typer.Option("--corpus", "-c", help="Corpus name (letters, digits, '-', '_').")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
NARROW = 120  # below this many columns, tables show run ids by their unique suffix and drop spare columns


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """Configure logging for every command: warnings only (Lance's included) unless ``--verbose``."""
    # Lance's Rust logger reads this once, when lancedb is first imported (each command imports it lazily).
    os.environ.setdefault("LANCE_LOG", "info" if verbose else "error")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn errors a user can act on into one clear message and exit status 2 (no traceback).

    Bad input, an unknown corpus, run or test set, an LLM that failed for good (the message names the
    model, its endpoint, the HTTP status and the fix) and an object store that did not answer
    (``ConnectionError``, naming the store and the fix) are such errors; the message stays on one line.
    """
    from tasks.leases import InUseError
    from tasks.llm.client import LLMError

    try:
        yield
    except (ValueError, LookupError, FileNotFoundError, ConnectionError, LLMError, InUseError) as error:
        # The message as written: "[...]" is not markup to it, nor ":question:" (a purpose) an emoji.
        err.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, emoji=False, soft_wrap=True)
        raise typer.Exit(2) from None


def warn(message: str | None) -> None:
    """A yellow warning line on stderr (nothing for ``None``)."""
    if message:
        err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, emoji=False, soft_wrap=True)


def fallback_warnings(results: list[RunResult]) -> list[str | None]:
    """Each run's fallback warning (``None`` when few enough of its queries fell back)."""
    return [r.warning(get_settings().fallback_warn_share) for r in results]


def emit_json(value: Any) -> None:
    """Machine-readable output on stdout."""
    print(json.dumps(value, indent=2, default=str))


def listing(
    rows: list[dict[str, Any]],
    columns: dict[str, str],
    as_json: bool,
    empty: str,
    spare: Collection[str] = (),
) -> None:
    """Rows as JSON, or as a table of ``columns`` (header -> key), or the hint ``empty`` if there are none.

    Headers in ``spare`` are left out on a narrow terminal.
    """
    if as_json:
        emit_json(rows)
    elif rows:
        shown = {h: k for h, k in columns.items() if not (narrow() and h in spare)}
        show(list(shown), ([row[key] for key in shown.values()] for row in rows))
    else:
        out.print(empty)


def narrow() -> bool:
    """Whether the terminal is narrower than ``NARROW`` columns (80 columns is)."""
    return out.width < NARROW


def run_label(run_id: str) -> str:
    """A run id as tables show it: whole, or on a narrow terminal its random suffix (6 hex digits).

    Every command that takes a run id accepts the suffix; ``--json`` always has the full id.
    """
    return run_id.rsplit("-", 1)[-1] if narrow() else run_id


def show(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    title: str | None = None,
    whole: Collection[str] = ("run", "run_id", "corpus"),
) -> None:
    """A table on stdout; long values wrap instead of being cut, except columns in ``whole`` (ids to copy).

    Values are shown through :func:`cell`, except Rich ``Text`` (already styled).
    """
    table = Table(title=title)
    for column in columns:
        short = len(column) <= 10 and " " not in column  # a one-word header stays whole: "nDCG@10"
        table.add_column(
            column, overflow="fold", no_wrap=column in whole, min_width=len(column) if short else None
        )
    for row in rows:
        table.add_row(*(v if isinstance(v, Text) else cell(v) for v in row))
    out.print(table)


def show_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Rows of any query: a table when its columns fit the terminal, else one block per row.

    A column needs about the width of its header or its widest value, up to :data:`_SQUEEZED` (a narrower
    one folds its values over lines); when the columns need more than the terminal has, each row is shown
    as ``column  value`` lines (psql's expanded display), so nothing is cut and every value reads whole.
    """
    needed = sum(
        min(max([len(column), *(len(cell(row[i])) for row in rows)]), _SQUEEZED) + 3
        for i, column in enumerate(columns)
    )
    if needed <= out.width:
        show(columns, rows)
        return
    for number, row in enumerate(rows, start=1):
        table = Table(title=f"row {number} of {len(rows)}", show_header=False, title_justify="left")
        table.add_column(no_wrap=True, style="bold")
        table.add_column(overflow="fold")
        for column, value in zip(columns, row, strict=True):
            table.add_row(column, cell(value))
        out.print(table)


_SQUEEZED = 12  # the width below which a column folds most values


def cell(value: Any) -> str:
    """A value as tables show it: ``-`` when missing or NaN, floats to 3 places, times to the second."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return f"{value:%Y-%m-%d %H:%M:%S}" if hasattr(value, "strftime") else str(value)


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


@contextmanager
def query_progress(enabled: bool) -> Iterator[Any]:
    """Progress bars on stderr, one per method (or step); yields ``update(method, done, total)``."""
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


def workspace() -> Workspace:
    """The process's workspace (imported here, not at start-up: most commands need only part of it)."""
    from tasks.workspace import Workspace

    return Workspace.open()


def show_results(corpus: str, testset: str, results: list[RunResult]) -> None:
    """One row per run: its measures, the share of queries that fell back, LLM errors and retrieval time.

    A run whose fallback answered more than ``ZSR_FALLBACK_WARN_SHARE`` of the queries gets a warning line on
    stderr: its scores are largely the fallback's.
    """
    measures = list(results[0].metrics)

    def measure(name: str) -> Callable[[RunResult], Any]:
        return lambda r: r.metrics[name]

    columns: dict[str, Callable[[RunResult], Any]] = {
        "run": lambda r: run_label(r.run_id),
        "method": lambda r: r.method,
        **{m: measure(m) for m in measures},
        "fallback": lambda r: f"{r.fallback_share:.0%}",
        "LLM errors": lambda r: r.llm_errors,
        "seconds": lambda r: r.retrieval_seconds,
    }
    if narrow():  # the retrieval time, and LLM errors when there were none, are in --json and the warehouse
        del columns["seconds"]
        if not any(r.llm_errors for r in results):
            del columns["LLM errors"]
    show(
        list(columns),
        [[value(r) for value in columns.values()] for r in results],
        title=f"{corpus} / {testset}: {results[0].n_queries} queries",
    )
    for message in fallback_warnings(results):
        warn(message)


def results_json(results: list[RunResult]) -> list[dict[str, Any]]:
    """Runs as JSON: each run's record and metrics, and ``warning`` (``null`` unless too many fell back)."""
    return [{**asdict(r), "warning": w} for r, w in zip(results, fallback_warnings(results), strict=True)]
