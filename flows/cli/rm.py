"""The ``rm`` group: delete a corpus, a test set or a run, after confirmation (``--yes`` skips it).

A delete refuses what a running job uses (see :mod:`tasks.leases`) and leaves the catalog consistent: a
corpus leaves the registry before its tables go, a run leaves every view at once (its ``runs`` file goes
first), a test set's folder is renamed away in one step. A delete killed midway is finished by running it
again.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from flows.cli.common import JsonOpt, app, emit_json, err, out, user_errors, workspace

rm = typer.Typer(
    help="Delete a corpus, a test set or a run (asks first; --yes to skip).", no_args_is_help=True
)
app.add_typer(rm, name="rm")

YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="Delete without asking (needed without a terminal).")
]


def confirm(what: str, yes: bool) -> None:
    """Ask before deleting ``what`` (default No); without a terminal, refuse unless ``--yes``."""
    if yes:
        return
    if not sys.stdin.isatty():
        err.print(
            f"[bold red]error:[/] not deleting {what} without confirmation; pass --yes", highlight=False
        )
        raise typer.Exit(2)
    if not typer.confirm(f"Delete {what}?", default=False, err=True):
        err.print("nothing deleted", highlight=False)
        raise typer.Exit(1)


def done(result: dict[str, Any], message: str, as_json: bool) -> None:
    """The outcome, as JSON or as one line."""
    if as_json:
        emit_json(result)
    else:
        out.print(message, highlight=False)


@rm.command("corpus")
def rm_corpus(
    name: Annotated[str, typer.Argument(help="The corpus to delete.")],
    with_testsets: Annotated[
        bool, typer.Option("--with-testsets", help="Delete its test sets too (refused otherwise).")
    ] = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a corpus: its tables and registry entry (its runs stay in the warehouse)."""
    confirm(f"corpus {name!r}" + (" and its test sets" if with_testsets else ""), yes)
    with user_errors():
        result = workspace().remove_corpus(name, with_testsets=with_testsets)
    done(result, f"deleted corpus {name} ({len(result['tables'])} tables)", as_json)


@rm.command("testset")
def rm_testset(
    corpus: Annotated[str, typer.Argument(help="The corpus the test set belongs to.")],
    name: Annotated[str, typer.Argument(help="The test set to delete.")],
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a registered test set (its runs stay in the warehouse)."""
    confirm(f"test set {name!r} of corpus {corpus!r}", yes)
    with user_errors():
        result = workspace().remove_testset(corpus, name)
    done(result, f"deleted test set {corpus}/{name}", as_json)


@rm.command("run")
def rm_run(
    run_id: Annotated[str, typer.Argument(help="The run to delete (`zsr runs` lists them).")],
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a run from every warehouse table."""
    confirm(f"run {run_id!r}", yes)
    with user_errors():
        result = workspace().remove_run(run_id)
    done(result, f"deleted run {run_id} ({len(result['files'])} files)", as_json)
