"""The ``gc`` command: storage upkeep, a dry run unless ``--apply``.

It compacts LanceDB tables and deletes their old versions (never one a recorded run points at), merges the
warehouse's small Parquet files into packs (every run whole, every row the same) and vacuums the LLM
response cache; see ``Workspace.gc``. Corpora a running job holds are skipped and named.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import typer

from flows.cli.common import JsonOpt, app, emit_json, narrow, out, show, user_errors, warn, workspace


@app.command()
def gc(
    apply: Annotated[
        bool, typer.Option("--apply", help="Do it (without: print what would be reclaimed, change nothing).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Compact tables and the warehouse, delete table versions no recorded run uses (dry run by default)."""
    with user_errors():
        report = workspace().gc(apply=apply)
    if as_json:
        emit_json(
            {**asdict(report), "unreproducible": report.unreproducible, "reclaimed": report.bytes_reclaimed}
        )
        return
    show(
        ["table", "versions", "kept", "fragments", "size", "reclaimed"],
        (
            [
                t.table,
                f"{t.versions} -> {t.versions_after}",
                len(t.kept),  # versions kept because recorded runs point at them
                f"{t.fragments} -> {t.fragments_after}" if apply else t.fragments,
                _size(t.bytes),
                t.skipped or _size(t.bytes_reclaimed),
            ]
            for t in report.tables
        ),
        title="LanceDB (kept: versions recorded runs point at)",
        whole=() if narrow() else ("table",),  # on 80 columns a long table name folds
    )
    show(
        ["folder", "files", "merged", "size", "reclaimed"],
        (
            [f.table, f.files, f.merged, _size(f.bytes), _size(f.bytes - f.bytes_after)]
            for f in report.folders
        ),
        title="warehouse",
    )
    if report.llm_cache is not None:
        before, after = report.llm_cache
        out.print(
            f"LLM response cache: {_size(before)}, {_size(before - after)} reclaimable", highlight=False
        )
    lost = report.unreproducible
    if lost:
        warn(
            f"{len(lost)} runs point at table versions that were gone before this gc (nothing of theirs was "
            f"deleted now); they cannot be searched as they ran: {', '.join(lost)}"
        )
    verb = "reclaimed" if apply else "would reclaim at least"
    hint = "" if apply else "; run `zsr gc --apply` to do it"
    out.print(f"{verb} {_size(report.bytes_reclaimed)}{hint}", highlight=False)


def _size(value: Any) -> str:
    """Bytes in a readable unit (``-`` where unknown: tables not on local disk)."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)
