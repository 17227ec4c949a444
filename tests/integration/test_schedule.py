"""``zsr schedule`` against a real ``zsr serve``: a schedule added from the CLI is on the server, planned by
its scheduler, run by its worker, kept across a restart of serve, and removed alone.

The CLI runs in this process (Typer's runner) with ``PREFECT_API_URL`` pointing at the stack; what it did is
read back through the Prefect client. The tests share one stack and run in file order; the restart test
replaces the stack with a new ``zsr serve`` on the same ``PREFECT_HOME`` (its database).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from tests.flows.conftest import write_slice
from tests.integration.test_prefect_server import Served

pytestmark = pytest.mark.slow
CORPUS, OTHER = "mine", "theirs"
POOL = "zsr-sched"


class Stack:
    """The running ``zsr serve`` (replaced by :meth:`restart`) and the data its schedules point at."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.served = Served(home, POOL, "--zombie-after", "0", "--grace", "10")
        self.source = write_slice(home.parent / "slice", queries=2, extra_docs=6)
        self.served.ready()

    def restart(self) -> None:
        assert self.served.stop() == 0, self.served.log()
        self.served = Served(self.home, POOL, "--zombie-after", "0", "--grace", "10").ready()

    def zsr(self, *args: str, code: int = 0) -> Any:
        """``zsr ARGS`` on an 80-column terminal, against this stack."""
        from flows.cli import app
        from flows.cli.common import err, out

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(out, "width", 80)
            mp.setattr(err, "width", 80)
            result = CliRunner().invoke(app, list(args), env={"PREFECT_API_URL": self.served.api})
        assert result.exit_code == code, result.output
        return result

    @contextmanager
    def client(self) -> Iterator[Any]:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.served.api}), get_client(sync_client=True) as client:
            yield client

    def deployment(self, name: str) -> Any:
        from prefect.exceptions import ObjectNotFound

        with self.client() as client:
            try:
                return client.read_deployment_by_name(f"nightly/{name}")
            except ObjectNotFound:
                return None

    def planned(self, name: str, timeout: float = 120.0) -> list[Any]:
        """The runs the server's scheduler planned for deployment ``name`` (waits for the first)."""
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

        deadline = time.monotonic() + timeout
        while True:
            with self.client() as client:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name]))
                )
            planned = [r for r in runs if r.auto_scheduled and r.state and r.state.is_scheduled()]
            if planned:
                return planned
            if time.monotonic() > deadline:
                pytest.fail(f"the scheduler planned no run of {name} in {timeout:.0f} s\n{self.served.log()}")
            time.sleep(1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("schedule") / "home"
    home.mkdir()
    running = Stack(home)
    try:
        yield running
    finally:
        running.served.close()


def test_added_schedule_is_on_the_server(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(stack.source.parent)  # a relative --source is stored absolute
    result = stack.zsr(
        "schedule", "add", CORPUS, "--source", "slice", "--cron", "30 3 * * *", "--timezone", "Asia/Tokyo",
        "--format", "beir",
    )  # fmt: skip
    assert f"scheduled {CORPUS}: 30 3 * * * (Asia/Tokyo)" in result.output

    deployment = stack.deployment(f"{CORPUS}-nightly")
    example = stack.deployment("nightly-reindex")
    (item,) = deployment.schedules
    assert (item.schedule.cron, item.schedule.timezone, item.active) == ("30 3 * * *", "Asia/Tokyo", True)
    expected = {"corpus": CORPUS, "source": str(stack.source), "fmt": "beir", "skip_bad": False}
    assert item.parameters == expected and deployment.parameters == expected  # the Run button's defaults too
    assert deployment.global_concurrency_limit.limit == 1  # its own limit: this corpus never runs twice
    assert deployment.concurrency_options.collision_strategy == "CANCEL_NEW"
    assert deployment.global_concurrency_limit.id != example.global_concurrency_limit.id
    assert (deployment.work_pool_name, deployment.entrypoint) == (POOL, "flows/nightly.py:nightly")
    assert deployment.pull_steps == example.pull_steps and deployment.enforce_parameter_schema
    assert deployment.parameter_openapi_schema == example.parameter_openapi_schema
    assert not deployment.paused and "zsr-schedule" in deployment.tags
    assert [s.parameters["corpus"] for s in example.schedules] == ["demo"]  # the example is untouched


def test_list_shows_it(stack: Stack) -> None:
    rows = json.loads(stack.zsr("schedule", "list", "--json").output)
    mine = {r["corpus"]: r for r in rows}
    assert set(mine) == {"demo", CORPUS}
    row = mine[CORPUS]
    assert (row["cron"], row["timezone"], row["source"], row["active"]) == (
        "30 3 * * *",
        "Asia/Tokyo",
        str(stack.source),
        True,
    )
    assert row["next_run"].endswith(" 03:30") and row["deployment"] == f"{CORPUS}-nightly"
    assert mine["demo"]["deployment"] == "nightly-reindex" and mine["demo"]["example"] is True

    table = stack.zsr("schedule", "list").output
    assert max(map(len, table.splitlines())) <= 80, table
    assert f"│ {CORPUS} " in table and "Asia/Tokyo" in table and "03:30" in table


def test_adding_again_updates_it(stack: Stack) -> None:
    """Twice in a row, as fast as the CLI goes: one deployment, one schedule, runs planned by the last one."""
    stack.zsr(
        "schedule", "add", CORPUS, "--source", str(stack.source), "--cron", "0 4 * * *", "--timezone", "UTC"
    )
    result = stack.zsr(
        "schedule", "add", CORPUS, "--source", str(stack.source), "--cron", "45 22 * * 1-5",
        "--timezone", "Europe/Paris", "--skip-bad",
    )  # fmt: skip
    assert f"updated {CORPUS}: 45 22 * * 1-5 (Europe/Paris)" in result.output
    rows = json.loads(stack.zsr("schedule", "list", "--json").output)
    assert [r["corpus"] for r in rows] == ["demo", CORPUS]
    (item,) = stack.deployment(f"{CORPUS}-nightly").schedules
    assert (item.schedule.cron, item.schedule.timezone) == ("45 22 * * 1-5", "Europe/Paris")
    assert item.parameters == {"corpus": CORPUS, "source": str(stack.source), "fmt": None, "skip_bad": True}

    time.sleep(10)  # the scheduler plans a new or updated deployment within seconds: let it
    paris = ZoneInfo("Europe/Paris")
    for run in stack.planned(f"{CORPUS}-nightly"):
        start = run.expected_start_time.astimezone(paris)
        assert (start.hour, start.minute) == (22, 45) and start.isoweekday() <= 5, start
        assert run.parameters == item.parameters


def test_bad_cron_and_the_example_corpus_are_refused(stack: Stack) -> None:
    refused = stack.zsr(
        "schedule", "add", CORPUS, "--source", str(stack.source), "--cron", "every night", code=2
    )
    assert "is not a cron expression" in refused.output
    refused = stack.zsr("schedule", "add", "demo", "--source", str(stack.source), code=2)
    assert "scheduled by the shipped example nightly/nightly-reindex" in refused.output
    (item,) = stack.deployment(f"{CORPUS}-nightly").schedules
    assert item.schedule.cron == "45 22 * * 1-5"
    assert stack.deployment("demo-nightly") is None


def test_a_scheduled_corpus_runs_on_the_worker(stack: Stack) -> None:
    """A run of the corpus's deployment (what the schedule starts) completes: pool, pull step and form fit."""
    with stack.client() as client:
        run = client.create_flow_run_from_deployment(stack.deployment(f"{CORPUS}-nightly").id)
    finished = stack.served.wait(str(run.id), timeout=300)
    assert finished["state"]["type"] == "COMPLETED", stack.served.log()
    assert finished["name"].startswith(f"nightly-{CORPUS}-")
    assert f"{CORPUS}-nightly-{CORPUS}-comparison" in stack.served.artifacts(str(run.id))


def test_schedules_survive_a_restart_of_serve(stack: Stack) -> None:
    """``zsr serve`` applies prefect.yaml again on start: the corpus's deployment must come through whole."""
    stack.zsr(
        "schedule", "add", OTHER, "--source", str(stack.source), "--cron", "0 1 * * *", "--timezone", "UTC"
    )
    before = {r["corpus"]: r for r in json.loads(stack.zsr("schedule", "list", "--json").output)}
    stack.restart()
    after = {r["corpus"]: r for r in json.loads(stack.zsr("schedule", "list", "--json").output)}
    assert after == before and set(after) == {"demo", CORPUS, OTHER}
    (item,) = stack.deployment(f"{CORPUS}-nightly").schedules
    assert item.schedule.cron == "45 22 * * 1-5" and item.parameters["corpus"] == CORPUS


def test_rm_removes_only_that_corpus(stack: Stack) -> None:
    result = stack.zsr("schedule", "rm", CORPUS)
    assert f"removed the nightly schedule of {CORPUS} (nightly/{CORPUS}-nightly)" in result.output
    assert stack.deployment(f"{CORPUS}-nightly") is None
    assert [r["corpus"] for r in json.loads(stack.zsr("schedule", "list", "--json").output)] == [
        "demo",
        OTHER,
    ]
    assert "no nightly schedule of corpus" in stack.zsr("schedule", "rm", CORPUS, code=2).output

    result = stack.zsr("schedule", "rm", "demo")  # the example goes only when asked by its corpus's name
    assert "removed the nightly schedule of demo (nightly/nightly-reindex)" in result.output
    assert "active: false" in result.output  # ... and says serve would bring it back
    example = stack.deployment("nightly-reindex")
    assert example is not None and example.schedules == []
    assert [r["corpus"] for r in json.loads(stack.zsr("schedule", "list", "--json").output)] == [OTHER]


def test_next_run_is_the_schedules_next_time(stack: Stack) -> None:
    (row,) = json.loads(stack.zsr("schedule", "list", "--json").output)
    planned = min(r.expected_start_time for r in stack.planned(f"{OTHER}-nightly"))
    assert row["next_run"] == f"{planned.astimezone(ZoneInfo('UTC')):%Y-%m-%d %H:%M}"
    assert datetime.fromisoformat(row["next_run"]).hour == 1
