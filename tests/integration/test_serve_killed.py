"""`zsr serve` killed with SIGKILL: its server and worker stop with it, and the port is free again."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from flows.cli.serve import STATE_FILE
from tests.integration.test_prefect_server import Served, pids_where

pytestmark = pytest.mark.slow


def test_children_do_not_outlive_a_killed_serve(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    stack = Served(home, "zsr-killed", "--zombie-after", "0")
    try:
        stack.ready()
        state = json.loads((home / "prefect" / STATE_FILE).read_text())
        children = pids_where(lambda env, cmd: stack.mine(env) and b"prefect" in cmd)
        assert state["pid"] == stack.process.pid and children
        os.kill(stack.process.pid, signal.SIGKILL)
        stack.process.wait(10)
        deadline = time.monotonic() + 120  # a worker may take a while to honour SIGTERM
        while (left := [p for p in children if Path(f"/proc/{p}").exists() and not zombie(p)]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)
        assert not left, f"still running after serve was killed: {left}"
        with socket.socket() as probe:  # the port is free for the next serve
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", stack.port))
    finally:
        stack.close()


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
