"""``zsr schedule``'s checks, made before any server is contacted, and its output with no server.

A listening socket stands in for the server: it counts the connections it is offered, so a refusal "before
any server contact" is seen, not assumed.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import available_timezones

import pytest
from typer.testing import CliRunner

from flows.cli import app, schedule
from flows.cli.common import err, out


class Listener:
    """A TCP port that accepts and at once closes each connection, counting them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/api"
        self.connections = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def server() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


def zsr(*args: str, url: str, **env: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"PREFECT_API_URL": url, "COLUMNS": "80", **env})


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--cron", "0 2 * *", "--cron '0 2 * *' is not a cron expression"),
        ("--cron", "61 2 * * *", "is not a cron expression"),
        ("--cron", "H 2 * * *", "is not a cron expression"),  # Jenkins' hashed form: not for Prefect
        ("--timezone", "Mars/Olympus", "--timezone 'Mars/Olympus' is not an IANA time zone"),
        ("--source", "no/such/folder", "--source no/such/folder does not exist"),
    ],
)
def test_bad_input_is_refused_before_any_server_contact(server, option, value, says):
    given = {"--cron": "0 2 * * *", "--timezone": "UTC", "--source": "."} | {option: value}
    args = [a for pair in given.items() for a in pair]
    result = zsr("schedule", "add", "mycorpus", *args, url=server.url)
    assert result.exit_code == 2 and says in result.output, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert server.connections == 0


def test_bad_corpus_name_is_refused_before_any_server_contact(server):
    result = zsr("schedule", "add", "no/slash", "--source", ".", url=server.url)
    assert result.exit_code == 2 and "corpus name 'no/slash' is not allowed" in result.output
    assert server.connections == 0


def test_good_input_goes_to_the_server_and_no_server_is_one_line(server):
    """The same command with good input does reach the port: the checks above are not vacuous."""
    started = time.monotonic()
    result = zsr("schedule", "add", "mycorpus", "--source", ".", "--cron", "0 2 * * *", url=server.url)
    assert server.connections >= 1
    assert time.monotonic() - started < 15  # a port that answers no HTTP: one health check, no retries
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: no Prefect server at {server.url}: start one with `zsr serve`"


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["rm", "mycorpus"]])
def test_no_server_exits_2_with_the_fix(command):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    started = time.monotonic()
    result = zsr("schedule", *command, url=url)
    assert time.monotonic() - started < 8  # at once, not after the client's retries
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.output.strip() == f"error: no Prefect server at {url}: start one with `zsr serve`"


def test_default_server_is_zsr_serves(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr("prefect.settings.PREFECT_API_URL.value", lambda: None)
    assert schedule.api_url() == "http://127.0.0.1:4200/api"
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.example:4300/api/")
    assert schedule.api_url() == "http://prefect.example:4300/api"


def test_source_is_stored_absolute(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    assert schedule.check_schedule("c", Path("data"), "0 2 * * *", "UTC") == tmp_path / "data"
    assert schedule.check_schedule("c", Path("./data/../data"), "0 2 * * *", "UTC") == tmp_path / "data"


def test_default_timezone_is_the_machines(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert schedule.local_timezone() == "Asia/Tokyo"
    monkeypatch.setenv("TZ", ":Europe/Paris")
    assert schedule.local_timezone() == "Europe/Paris"
    monkeypatch.setenv("TZ", "Not/AZone")  # then /etc/localtime, or UTC: always a name Prefect takes
    assert schedule.local_timezone() in available_timezones()


def test_next_run_in_the_schedules_zone():
    winter = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
    assert schedule.next_run("0 2 * * *", "Europe/Paris", after=winter) == "2026-12-03 02:00"
    assert schedule.next_run("30 6 * * 1-5", "UTC", after=winter) == "2026-12-02 06:30"


ROWS = [
    {
        "corpus": "demo",
        "cron": "0 2 * * *",
        "timezone": "Europe/Paris",
        "source": "demo/cranfield",
        "active": True,
        "next_run": "2026-12-03 02:00",
        "deployment": "nightly-reindex",
    },
    {
        "corpus": "scifact-large_v2",
        "cron": "15 4 * * 1-5",
        "timezone": "America/Argentina/Buenos_Aires",
        "source": "/home/someone/data/scifact/corpus.jsonl",
        "active": False,
        "next_run": None,
        "deployment": "scifact-large_v2-nightly",
    },
]


def test_list_fits_80_columns(monkeypatch, server):
    """Every field of every schedule shows, no line runs past 80 columns, the corpus stays whole."""
    monkeypatch.setattr(out, "width", 80)
    monkeypatch.setattr(err, "width", 80)
    monkeypatch.setattr(schedule, "prefect_client", lambda url: _Nothing())
    monkeypatch.setattr(schedule, "list_schedules", lambda client: ROWS)
    result = zsr("schedule", "list", url=server.url)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 80, result.output
    cells = table_rows(lines)
    assert [row[0] for row in cells] == [r["corpus"] for r in ROWS]  # each corpus whole, on one line
    for shown, row in zip(cells, ROWS, strict=True):
        _, when, source, active, next_run = shown
        assert when == f"{row['cron']}{row['timezone']}".replace(" ", ""), result.output
        assert (source, active, next_run) == (
            row["source"],
            "yes" if row["active"] else "no",
            (row["next_run"] or "-").replace(" ", ""),
        )


def table_rows(lines: list[str]) -> list[list[str]]:
    """The body of a Rich table as rows of cells, a cell's folded lines joined (cron and next run without
    spaces: they wrap at them)."""
    rows: list[list[str]] = []
    for line in lines:
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip("│").split("│")]
        if cells[0]:
            rows.append(["" for _ in cells])
        rows[-1] = [a + b for a, b in zip(rows[-1], cells, strict=True)]
    return [[c.replace(" ", "") if i in (1, 4) else c for i, c in enumerate(row)] for row in rows]


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_planned_runs_of_a_replaced_schedule_are_dropped():
    """What the scheduler planned from a schedule that ``add`` replaced goes; the rest stays."""
    from types import SimpleNamespace
    from uuid import uuid4

    current, replaced = uuid4(), uuid4()

    def run(auto: bool, made_by: Any) -> SimpleNamespace:
        creator = None if made_by is None else SimpleNamespace(id=made_by, type="SCHEDULE")
        return SimpleNamespace(id=uuid4(), auto_scheduled=auto, created_by=creator)

    runs = [run(True, current), run(True, replaced), run(True, replaced), run(False, None), run(True, None)]

    class Client:
        def __init__(self) -> None:
            self.deleted: list[Any] = []

        def read_flow_runs(self, flow_run_filter: Any) -> list[SimpleNamespace]:
            return runs

        def delete_flow_run(self, run_id: Any) -> None:
            self.deleted.append(run_id)

    deployment = SimpleNamespace(id=uuid4(), schedules=[SimpleNamespace(id=current)])
    client = Client()
    dropped = schedule.drop_stale_runs(client, deployment)  # type: ignore[arg-type]
    assert client.deleted == [runs[1].id, runs[2].id] and dropped == [str(r.id) for r in runs[1:3]]
