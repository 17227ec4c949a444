"""The ``migrate`` command: upgrade a home an older zsr wrote to this zsr's on-disk format."""

from __future__ import annotations

from dataclasses import asdict

from flows.cli.common import JsonOpt, app, emit_json, out, user_errors


@app.command()
def migrate(as_json: JsonOpt = False) -> None:
    """Upgrade $ZSR_HOME, written by an older zsr, to this zsr's format (back it up first; safe to re-run)."""
    from tasks.settings import get_settings
    from tasks.workspace import Workspace

    root = get_settings().home_dir
    with user_errors():
        report = Workspace.migrate(progress=None if as_json else lambda action: out.print(f"  {action}"))
    if as_json:
        emit_json(asdict(report))
    elif not report.actions:
        out.print(f"{root} is already at format {report.format}; nothing to do")
    else:
        out.print(f"{root} is now at format {report.format} ({len(report.actions)} steps)")
