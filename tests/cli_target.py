"""Subprocess target for CLI tests: the real ``zsr`` app, with the fake embedder and no real backoff.

Usage: python -m tests.cli_target ZSR_ARGS...
Runs ``zsr ZSR_ARGS...`` in this process, so stdout and stderr are the real file descriptors (typer's
CliRunner swaps in its own). Corpora are read with :class:`tests.fakes.FakeEmbedder` whatever model they
name, and the LLM client counts its retry delays without sleeping them, so a test pays for neither a real
model nor real backoff. The LLM is whatever the ``ZSR_LLM_*`` variables say (a test points them at a
:class:`tests.llm_server.ScriptedServer`).
"""

from __future__ import annotations

import sys
from functools import partial

import tasks.workspace
from flows.cli import app
from tasks.llm.client import LLMClient
from tests.fakes import FakeEmbedder


def main() -> None:
    tasks.workspace.load_embedder = lambda space, *args: FakeEmbedder(space=space)  # type: ignore[assignment]
    tasks.workspace.LLMClient = partial(LLMClient, sleep=lambda seconds: None)  # type: ignore[misc]
    app(sys.argv[1:], prog_name="zsr")


if __name__ == "__main__":
    main()
