"""The ``zsr`` command line. Every command works without a Prefect server; ``--json`` is for scripts.

One module per command group, each registering its commands on the shared :data:`app` when imported:
``corpus`` (ingest, search, corpora, methods, demo), ``evaluation`` (eval, runs, compare, sql, export,
report), ``synthesis`` (synthesize), ``testsets`` (the ``testset`` group), ``models`` (adapt, models),
``home`` (migrate), ``gc`` (storage upkeep), ``rm`` (deletes), ``schedule`` (nightly schedules on a
running Prefect server) and ``cluster`` (what the commands run on: Ray cluster, storage, Prefect API).
``common`` holds the app and what the commands share: consoles, options, tables, progress bars and the
handling of user errors.
"""

from __future__ import annotations

# Imported for their commands; `zsr --help` lists the commands in the order they are registered.
from flows.cli import cluster, corpus, evaluation, gc, home, models, rm, schedule, synthesis, testsets  # noqa: F401
from flows.cli.common import app
from flows.cli.serve import serve

__all__ = ["app"]

app.command("serve")(serve)  # defined in flows.cli.serve; Prefect itself is imported only when it runs
