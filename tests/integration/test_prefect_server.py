"""A real Prefect stack from ``zsr serve``: server, deployments from ``prefect.yaml``, a process worker.

Runs are triggered through the REST API exactly as the UI's Run button does, and executed by the worker in
its own processes with the real model on a Cranfield slice. The nightly schedule is read back as the
server holds it and as its scheduler plans runs from it. Faults: a flow run that fails on bad input, a
run whose machine dies with it (worker and flow run frozen, then killed: the zombie automation marks it
Crashed once its heartbeats stop), a flow run process killed (crash), the worker killed mid-run (serve
starts a new one), a second nightly run while one runs (cancelled by the deployment's limit), and a
DuckDB session holding the warehouse catalog during a scheduled run. The regression automation: a
``zsr.evaluation.regressed`` event makes it call a webhook served here on 127.0.0.1. The tests share one
stack and run in file order (the last but one checks on the run lost early on); each waits with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from tests.flows.conftest import write_slice

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
CORPUS, TESTSET = "itest", "human"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
ZOMBIE_AFTER = 60  # seconds without a heartbeat (every 30 s) before the automation crashes a run
LOST: dict[str, Any] = {}  # the run whose "machine" died, shared by the two tests that follow it
UI_RUN_STATE = {  # what the UI's Run dialog sends (ui-v2, use-quick-run)
    "type": "SCHEDULED",
    "message": "Run from the Prefect UI",
    "state_details": {"deferred": False, "untrackable_result": False, "pause_reschedule": False},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pids_where(match: Callable[[bytes, bytes], bool]) -> list[int]:
    """Processes whose (environ, cmdline) match."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env, cmd = (entry / "environ").read_bytes(), (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if match(env, cmd):
                found.append(int(entry.name))
    return found


def prepare_home(home: Path) -> Path:
    """A ZSR_HOME holding the slice indexed as ``itest`` with its qrels registered; returns the slice."""
    from tasks.settings import Settings
    from tasks.workspace import Workspace

    source = write_slice(home.parent / "slice", queries=4, extra_docs=20)
    ws = Workspace.open(Settings(home=home))
    ws.ingest(source, CORPUS, fmt="beir")
    ws.testsets.register(CORPUS, TESTSET, source)
    return source


class Patient(httpx.HTTPTransport):
    """Retries a 503: the server answers so while SQLite's file is locked, and again a moment later."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(30):
            response = super().handle_request(request)
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(1)
        return response


class Served:
    """``python -m flows.cli.serve`` in a subprocess, and the REST calls the tests make against it."""

    def __init__(self, home: Path, pool: str, *options: str, env: dict[str, str] | None = None) -> None:
        """Start serve; :meth:`ready` waits for it (the test can prepare data meanwhile)."""
        self.port, self.pool, self.home = free_port(), pool, home
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.ui = f"http://127.0.0.1:{self.port}"
        self.output = home / "serve.out"
        env = {**os.environ, **(env or {}), "ZSR_HOME": str(home), "PREFECT_HOME": str(home / "prefect")}
        env["PREFECT_WORKER_QUERY_SECONDS"] = "1"  # pick runs up at once (default: every 10 s)
        env.pop("PREFECT_API_URL", None)
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flows.cli.serve", "--port", str(self.port), "--pool", pool, *options],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ready(self, startup_timeout: float = 300.0) -> Served:
        deadline = time.monotonic() + startup_timeout
        while "Prefect UI:" not in self.output.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail(f"zsr serve did not start:\n{self.log()}")
            time.sleep(0.5)
        self.http = httpx.Client(base_url=self.api, timeout=30, transport=Patient())
        return self

    def log(self) -> str:
        logs = self.home / "prefect" / "logs"
        parts = [self.output.read_text()]
        parts += [f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.log"))]
        return "\n".join(parts)

    def deployment(self, name: str) -> dict[str, Any]:
        found = self.http.post("/deployments/filter", json={"deployments": {"name": {"any_": [name]}}}).json()
        assert len(found) == 1, found
        return found[0]

    def run(self, deployment: str, parameters: dict[str, Any], at: datetime | None = None) -> str:
        """Create a flow run the way the UI does; ``at`` schedules it for later."""
        state: dict[str, Any] = {**UI_RUN_STATE, "state_details": dict(UI_RUN_STATE["state_details"])}
        if at is not None:
            state["state_details"]["scheduled_time"] = at.isoformat()
        response = self.http.post(
            f"/deployments/{self.deployment(deployment)['id']}/create_flow_run",
            json={"parameters": parameters, "enforce_parameter_schema": True, "state": state},
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def flow_run(self, run_id: str) -> dict[str, Any]:
        return self.http.get(f"/flow_runs/{run_id}").json()

    def wait(self, run_id: str, states: set[str] = FINAL, timeout: float = 240.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (run := self.flow_run(run_id))["state"]["type"] not in states:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"run {run['name']} still {run['state']['type']} after {timeout:.0f} s\n{self.log()}"
                )
            time.sleep(0.5)
        return run

    def artifacts(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The run's artifacts by key (the latest of each key)."""
        found = self.http.post(
            "/artifacts/filter",
            json={"artifacts": {"flow_run_id": {"any_": [run_id]}}, "sort": "CREATED_DESC"},
        ).json()
        return {a["key"]: a for a in reversed(found) if a["key"]}

    def mine(self, env: bytes) -> bool:
        """Whether a process belongs to this stack (every process serve starts inherits its ZSR_HOME)."""
        return f"ZSR_HOME={self.home}\0".encode() in env

    def wait_heartbeat(self, run_id: str, timeout: float = 90.0) -> None:
        """Until the server holds a heartbeat of the run: the zombie automation watches from the first."""
        query = {
            "filter": {
                "event": {"name": ["prefect.flow-run.heartbeat"]},
                "resource": {"id": [f"prefect.flow-run.{run_id}"]},
            }
        }
        deadline = time.monotonic() + timeout
        while not self.http.post("/events/filter", json=query).json()["events"]:
            if time.monotonic() > deadline:
                pytest.fail(f"no heartbeat of run {run_id} within {timeout:.0f} s\n{self.log()}")
            time.sleep(0.5)

    def worker_pids(self) -> list[int]:
        marker = b"worker\0start\0--pool\0" + self.pool.encode() + b"\0"
        return pids_where(lambda env, cmd: marker in cmd and self.mine(env))

    def wait_for_worker(self, not_pid: int | None = None, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = [p for p in self.worker_pids() if p != not_pid]
            pool = self.http.get(f"/work_pools/{self.pool}").json()
            if pids and pool["status"] == "READY":
                return pids[0]
            time.sleep(0.5)
        pytest.fail(f"no worker came back within {timeout:.0f} s\n{self.log()}")

    def stop(self, timeout: float = 90.0) -> int:
        """Ctrl-C, as a person would; returns serve's exit code."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            pytest.fail(f"zsr serve did not stop within {timeout:.0f} s after Ctrl-C\n{self.log()}")

    def close(self) -> None:
        """Kill serve and everything it started (each child runs in a session of its own)."""
        for pid in [self.process.pid, *pids_where(lambda env, cmd: self.mine(env))]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.process.wait(10)


def wait_flow_process(run_id: str, timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = pids_where(lambda env, cmd: f"PREFECT__FLOW_RUN_ID={run_id}".encode() in env)
        if pids:
            return pids
        time.sleep(0.2)
    pytest.fail(f"no process runs flow run {run_id}")


def warehouse_runs(home: Path) -> list[dict[str, Any]]:
    """Published runs with what each holds; a whole run has every measure, per-query rows and rankings."""
    from storage.warehouse import Warehouse

    return (
        Warehouse(home / "warehouse")
        .query(
            """SELECT r.run_id, r.eval_id, r.method, r.n_queries,
                  (SELECT count(*) FROM metrics m WHERE m.run_id = r.run_id) AS measures,
                  (SELECT count(DISTINCT query_id) FROM query_metrics q WHERE q.run_id = r.run_id) AS queries,
                  (SELECT count(*) FROM rankings k WHERE k.run_id = r.run_id) AS ranked
           FROM runs r ORDER BY r.created_at"""
        )
        .to_pylist()
    )


class Hook:
    """A webhook receiver on 127.0.0.1: the bodies POSTed to ``url``, in order of arrival."""

    def __init__(self) -> None:
        received: list[tuple[str, bytes]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append((self.headers.get("Content-Type", ""), self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/zsr-alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, timeout: float) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while not self.received and time.monotonic() < deadline:
            time.sleep(0.5)
        return self.received


@pytest.fixture(scope="module")
def hook() -> Iterator[Hook]:
    receiver = Hook()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, hook: Hook) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("served") / "home"
    home.mkdir()
    options = ["--grace", "15", "--zombie-after", str(ZOMBIE_AFTER)]
    stack = Served(home, "zsr-itest", *options, env={"ZSR_REGRESSION_WEBHOOK": hook.url})
    try:
        prepare_home(home)  # while the server starts
        yield stack.ready()
    finally:
        stack.close()


def test_evaluate_triggered_like_the_ui(served: Served) -> None:
    deployment = served.deployment("evaluate")
    assert deployment["enforce_parameter_schema"] and deployment["work_pool_name"] == "zsr-itest"
    assert deployment["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(
        ROOT
    )
    refused = served.http.post(
        f"/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": {"methods": ["splade"]}, "enforce_parameter_schema": True, "state": UI_RUN_STATE},
    )
    assert refused.status_code == 409 and "splade" in refused.text  # the schema is enforced server-side
    automations = served.http.post("/automations/filter", json={}).json()
    assert [a["trigger"]["within"] for a in automations if "silent" in a["name"]] == [ZOMBIE_AFTER]

    run_id = served.run("evaluate", {"corpus": CORPUS, "testset": TESTSET, "methods": ["dense", "bm25"]})
    run = served.wait(run_id)
    assert run["state"]["type"] == "COMPLETED", served.log()
    assert run["name"] == f"evaluate-{CORPUS}-{TESTSET}"

    runs = [r for r in warehouse_runs(served.home) if "-evaluate-" in r["eval_id"]]
    assert [r["method"] for r in runs] == ["dense", "bm25"] and len({r["eval_id"] for r in runs}) == 1
    assert all(r["measures"] == 5 and r["queries"] == r["n_queries"] == 4 and r["ranked"] > 0 for r in runs)

    artifacts = served.artifacts(run_id)
    key = f"evaluate-{CORPUS}-{TESTSET}"
    assert {f"{key}-results", f"{key}-summary", f"{key}-progress"} <= set(artifacts)
    import json

    table = json.loads(artifacts[f"{key}-results"]["data"])
    assert [row["method"] for row in table] == ["dense", "bm25"]
    assert all(row["Δ nDCG@10"] == "new" and isinstance(row["nDCG@10"], float) for row in table)
    summary = artifacts[f"{key}-summary"]["data"]
    report = summary.split("(file://", 1)[1].split(")", 1)[0]
    assert Path(report).is_file() and "nan" not in summary.lower()
    assert artifacts[f"{key}-progress"]["data"] == 100.0


def test_a_regression_event_calls_the_webhook(served: Served, hook: Hook) -> None:
    """The automation serve made from ZSR_REGRESSION_WEBHOOK; the event posted as the nightly emits it."""
    from flows.cli.alerts import REGRESSION_AUTOMATION, WEBHOOK_BLOCK
    from tasks.evaluation.alerts import REGRESSED_EVENT, corpus_resource

    named = {"automations": {"name": {"any_": [REGRESSION_AUTOMATION]}}}
    (automation,) = served.http.post("/automations/filter", json=named).json()
    trigger = automation["trigger"]
    assert (trigger["posture"], trigger["expect"], trigger["threshold"]) == ("Reactive", [REGRESSED_EVENT], 1)
    assert trigger["match"] == {"prefect.resource.id": "zsr.corpus.*"} and automation["enabled"]
    (action,) = automation["actions"]
    assert action["type"] == "call-webhook"
    block = served.http.get(f"/block_documents/{action['block_document_id']}?include_secrets=true").json()
    assert block["name"] == WEBHOOK_BLOCK and block["data"]["url"] == hook.url

    summary = f"1 regression(s) on {CORPUS}; human/bm25: nDCG@10 0.8000 -> 0.1000 (-0.7000, t-test p 0.003)"
    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": REGRESSED_EVENT,
        "resource": {"prefect.resource.id": corpus_resource(CORPUS), "prefect.resource.name": CORPUS},
        "payload": {"summary": summary, "artifact_key": "x-comparison", "regressions": [{"method": "bm25"}]},
    }
    assert served.http.post("/events", json=[event]).status_code == 204
    received = hook.wait(timeout=90)
    assert received, f"the webhook was not called within 90 s\n{served.log()}"
    (content_type, body), *_ = received
    sent = json.loads(body)
    assert content_type == "application/json" and sent["text"] == summary and sent["corpus"] == CORPUS
    assert sent["event_id"] == event["id"] and sent["regressions"] == [{"method": "bm25"}]


def exists_at_two(day: date, zone: ZoneInfo) -> bool:
    """Whether 02:00 exists on ``day`` in ``zone`` (not on the night clocks go forward)."""
    two = datetime(day.year, day.month, day.day, 2, tzinfo=zone)
    return two.astimezone(UTC).astimezone(zone).hour == 2


def test_nightly_schedule_as_deployed(served: Served) -> None:
    """The server holds ``nightly-reindex`` as ``prefect.yaml`` declares it, and schedules its runs by it."""
    declared = {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}
    nightly = declared["nightly-reindex"]
    (schedule,) = nightly["schedules"]
    # what README.md and deployments/README.md promise
    assert (schedule["cron"], schedule["timezone"], schedule["active"]) == ("0 2 * * *", "Europe/Paris", True)
    assert nightly["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}

    deployment = served.deployment("nightly-reindex")
    (deployed,) = deployment["schedules"]
    assert deployed["schedule"]["cron"] == schedule["cron"]
    assert deployed["schedule"]["timezone"] == schedule["timezone"]
    assert deployed["active"] is schedule["active"] and not deployment["paused"]
    assert deployed["parameters"] == schedule["parameters"]
    assert deployment["global_concurrency_limit"]["limit"] == nightly["concurrency_limit"]["limit"]
    strategy = deployment["concurrency_options"]["collision_strategy"]
    assert strategy == nightly["concurrency_limit"]["collision_strategy"]
    for name in set(declared) - {"nightly-reindex"}:  # on demand only, as declared and as deployed
        assert not declared[name].get("schedules") and served.deployment(name)["schedules"] == [], name

    def planned() -> list[dict[str, Any]]:
        """The runs the server's scheduler created for the deployment."""
        query = {"deployment_id": {"any_": [deployment["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}}
        runs = served.http.post("/flow_runs/filter", json={"flow_runs": query}).json()
        return [r for r in runs if r["auto_scheduled"]]

    deadline = time.monotonic() + 120
    while not (runs := planned()):
        if time.monotonic() > deadline:
            pytest.fail(f"the scheduler planned no nightly-reindex run\n{served.log()}")
        time.sleep(1)
    zone = ZoneInfo(schedule["timezone"])
    starts = [datetime.fromisoformat(r["expected_start_time"]).astimezone(zone) for r in runs]
    assert {(t.hour, t.minute) for t in starts if exists_at_two(t.date(), zone)} == {(2, 0)}, starts
    assert all(r["parameters"].items() >= schedule["parameters"].items() for r in runs)


def test_bad_input_fails_with_its_reason(served: Served) -> None:
    run = served.wait(served.run("evaluate", {"corpus": CORPUS, "testset": "nope"}))
    assert run["state"]["type"] == "FAILED"
    assert "not registered" in run["state"]["message"], run["state"]["message"]


def test_machine_lost_mid_run(served: Served) -> None:
    """Worker and flow run frozen, then killed together: nobody reports; heartbeats stop (checked later)."""
    (worker,) = served.worker_pids()
    run_id = served.run("evaluate", {"corpus": CORPUS, "testset": TESTSET})
    served.wait(run_id, {"RUNNING", *FINAL})
    flow_pids = wait_flow_process(run_id)
    served.wait_heartbeat(run_id)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in [*flow_pids, worker]:
            os.kill(pid, sig)
    LOST.update(run_id=run_id, at=time.monotonic())
    time.sleep(3)
    assert served.flow_run(run_id)["state"]["type"] == "RUNNING"  # nothing left to say otherwise
    served.wait_for_worker(not_pid=worker)


def test_crashed_flow_run_leaves_the_worker_serving(served: Served) -> None:
    run_id = served.run("evaluate", {"corpus": CORPUS, "testset": TESTSET})
    served.wait(run_id, {"RUNNING", *FINAL})
    for pid in wait_flow_process(run_id):
        os.kill(pid, signal.SIGKILL)
    run = served.wait(run_id)
    assert run["state"]["type"] == "CRASHED" and "SIGKILL" in run["state"]["message"]
    assert all(r["measures"] == 5 and r["queries"] == r["n_queries"] for r in warehouse_runs(served.home))
    assert served.worker_pids() and served.http.get(f"/work_pools/{served.pool}").json()["status"] == "READY"


def test_worker_killed_mid_run_is_restarted(served: Served) -> None:
    (worker,) = served.worker_pids()
    run_id = served.run("evaluate", {"corpus": CORPUS, "testset": TESTSET})
    served.wait(run_id, {"RUNNING", *FINAL})
    wait_flow_process(run_id)
    os.kill(worker, signal.SIGKILL)
    run = served.wait(run_id, timeout=60)
    assert run["state"]["type"] == "CRASHED"  # reported at once, not left Running
    assert all(r["measures"] == 5 and r["queries"] == r["n_queries"] for r in warehouse_runs(served.home))
    new_worker = served.wait_for_worker(not_pid=worker)  # zsr serve started a new one
    assert new_worker != worker and "starting a new one" in served.output.read_text()
    again = served.wait(served.run("evaluate", {"corpus": CORPUS, "testset": TESTSET, "methods": ["dense"]}))
    assert again["state"]["type"] == "COMPLETED", served.log()


def test_second_nightly_run_is_cancelled_not_doubled(served: Served, tmp_path: Path) -> None:
    source = str(served.home.parent / "slice")
    params = {"corpus": CORPUS, "source": source, "methods": ["bm25"], "metrics": ["nDCG@10"]}
    before = {r["eval_id"] for r in warehouse_runs(served.home)}
    first = served.run("nightly-reindex", params)
    served.wait(first, {"RUNNING", *FINAL})
    second = served.run("nightly-reindex", params)
    assert served.wait(second, timeout=120)["state"]["type"] == "CANCELLED"
    done = served.wait(first)
    assert done["state"]["type"] == "COMPLETED", served.log()
    assert done["name"].startswith(f"nightly-{CORPUS}-")
    new = [r for r in warehouse_runs(served.home) if r["eval_id"] not in before]
    assert [r["method"] for r in new] == ["bm25"] and "-nightly-reindex-" in new[0]["eval_id"]
    keys = set(served.artifacts(first))
    assert f"nightly-reindex-{CORPUS}-comparison" in keys


def test_warehouse_held_open_in_duckdb_during_a_scheduled_run(served: Served) -> None:
    import duckdb

    catalog = served.home / "warehouse" / "catalog.duckdb"
    with duckdb.connect(str(catalog)) as session:  # read-write: holds the file's lock, as a notebook can
        count = "SELECT count(*) FROM runs WHERE method = 'hybrid'"
        (before,) = session.execute(count).fetchone()
        at = datetime.now(UTC) + timedelta(seconds=3)
        run_id = served.run("evaluate", {"corpus": CORPUS, "testset": TESTSET, "methods": ["hybrid"]}, at=at)
        assert served.flow_run(run_id)["state"]["name"] == "Scheduled"
        run = served.wait(run_id)
        assert run["state"]["type"] == "COMPLETED", served.log()
        assert datetime.fromisoformat(run["start_time"]) >= at - timedelta(seconds=1)
        (after,) = session.execute(count).fetchone()  # the open session sees the new run at once
    assert after == before + 1


def test_silent_run_is_marked_crashed(served: Served) -> None:
    assert LOST, "test_machine_lost_mid_run did not run"
    left = ZOMBIE_AFTER + 90 - (time.monotonic() - LOST["at"])  # the automation's window, and its evaluation
    run = served.wait(LOST["run_id"], timeout=max(left, 10))
    assert run["state"]["type"] == "CRASHED" and "No heartbeat" in run["state"]["message"]


def test_serve_stops_cleanly_on_ctrl_c(served: Served) -> None:
    run_id = served.run("evaluate", {"corpus": CORPUS, "testset": TESTSET})
    served.wait(run_id, {"RUNNING", *FINAL})
    children = served.worker_pids() + wait_flow_process(run_id)
    started = time.monotonic()
    assert served.stop() == 0, served.log()
    assert time.monotonic() - started < 60
    assert "stopped" in served.output.read_text()
    assert not [p for p in children if Path(f"/proc/{p}").exists()]
    assert not pids_where(lambda env, cmd: served.mine(env))  # server, worker and flow runs all gone
    with sqlite3.connect(served.home / "prefect" / "prefect.db") as db:  # the server is gone: its file
        (state, message) = db.execute(
            "SELECT f.state_type, s.message FROM flow_run f JOIN flow_run_state s ON s.id = f.state_id "
            "WHERE f.id = ?",
            [run_id],
        ).fetchone()
    assert state == "CRASHED", message  # not left Running forever
