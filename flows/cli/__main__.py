"""``python -m flows.cli``: the ``zsr`` command, for checkouts where the console script is not on PATH."""

from flows.cli import app

app()
