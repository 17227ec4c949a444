"""What a killed `zsr serve` left running is stopped by the next one on the same home (flows.cli.serve)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.cli.serve import STATE_FILE, ServeError, Stack

SLEEP = "import time; time.sleep(600)"


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stack:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    return Stack(port=1)


def spawn(*argv: str) -> subprocess.Popen[bytes]:
    """A sleeping process whose command line carries ``argv``, once /proc shows it.

    Popen can return while the kernel is still inside the child's exec: the new command line is not in
    /proc yet (it reads empty), and the reaper, which goes by command lines, would not recognise the process.
    """
    process = subprocess.Popen([sys.executable, "-c", SLEEP, *argv], start_new_session=True)
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    for _ in range(500):
        if argv[-1].encode() in cmdline.read_bytes():
            return process
        time.sleep(0.01)
    raise AssertionError(f"process {process.pid} never showed its command line")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_state(stack: Stack, pid: int, groups: list[int]) -> None:
    stack.home.mkdir(parents=True, exist_ok=True)
    (stack.home / STATE_FILE).write_text(json.dumps({"pid": pid, "port": 4200, "groups": groups}))


def test_leftovers_of_a_killed_serve_are_stopped(stack: Stack) -> None:
    server, worker = spawn("prefect", "server"), spawn("prefect", "worker")
    stranger = spawn("not-ours")  # a group id reused by something else is left alone
    try:
        write_state(stack, dead_pid(), [server.pid, worker.pid, stranger.pid])
        stopped = stack.reap_previous()
        assert sorted(stopped) == sorted([server.pid, worker.pid])
        assert server.wait(10) is not None and worker.wait(10) is not None
        assert stranger.poll() is None and not (stack.home / STATE_FILE).exists()
        assert stack.reap_previous() == []  # nothing recorded any more
    finally:
        for process in (server, worker, stranger):
            process.kill()
            process.wait()


def test_a_live_serve_on_the_same_home_is_refused(stack: Stack) -> None:
    other = spawn("flows.cli.serve", "prefect")
    try:
        write_state(stack, other.pid, [other.pid])
        with pytest.raises(ServeError, match=f"another zsr serve \\(pid {other.pid}, port 4200\\)"):
            stack.reap_previous()
        assert other.poll() is None  # untouched
    finally:
        other.kill()
        other.wait()


def test_children_get_a_parent_death_signal(tmp_path: Path) -> None:
    """A child spawned the way serve spawns its children dies with its parent, even on SIGKILL."""
    script = (
        "import subprocess, sys, time\n"
        "from flows.cli.serve import _die_with_parent\n"
        f"child = subprocess.Popen([sys.executable, '-c', {SLEEP!r}], start_new_session=True,"
        " preexec_fn=_die_with_parent)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(child, 0)  # alive while its parent lives
    parent.kill()
    parent.wait()
    for _ in range(100):  # the kernel signals at once; allow the child a moment to exit
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break  # exited, awaiting its reaper (init)
        time.sleep(0.1)
    else:
        os.kill(child, 9)
        pytest.fail("the child outlived its parent")


def test_a_zombie_counts_as_gone() -> None:
    """An exited child its parent has not reaped yet holds no port or pool: waiting on it would stall."""
    from flows.cli.serve import _alive, _stat

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while _stat(child.pid)[0] != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    assert not _alive(child.pid)  # os.kill(pid, 0) alone still finds it
    assert _alive(os.getpid())
    child.wait()
