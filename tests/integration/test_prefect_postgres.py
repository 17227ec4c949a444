"""Prefect on PostgreSQL with two process workers on one work pool, as on several machines.

One module, one server set: a PostgreSQL cluster started here (tests/pg_server.py), ``zsr serve --database``
on it with its worker limited to one run at a time, and a second ``prefect worker start --type process
--limit 1`` on the same pool. The deployments are the shipped ones (``deployments/prefect.yaml``: the
nightly's ``CANCEL_NEW`` limit included) with their entrypoints moved to tests/integration/pg_flows.py:
the same flows with the fake embedding model, each run held at a gate before it loads its test set, so
that what happens "while a run is in progress" is decided here, not left to timing. Checked: two runs
proceed at once on the two workers (each run's flow process is a child of a different worker); a second
nightly run of the corpus is cancelled by the free worker while the first runs on the other; PostgreSQL
stopped and started again while that first run works leaves it Completed or Crashed, never Running. The
tests share the stack and run in file order (the last takes over the run the one before leaves at its
gate); each waits with a deadline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.flows.conftest import write_slice
from tests.integration.test_prefect_server import (
    FINAL,
    PREFECT_YAML,
    ROOT,
    Served,
    pids_where,
    warehouse_runs,
)
from tests.pg_server import PostgresServer, postgres_bin

pytestmark = pytest.mark.slow
POOL, CORPUS, TESTSET = "zsr-pg", "pgtest", "human"
SECOND = "second-node"  # the worker this module starts beside serve's own
GATED = {"nightly-reindex": "nightly", "evaluate": "evaluate"}  # deployment -> flow in pg_flows.py
EVALUATE = {"corpus": CORPUS, "testset": TESTSET, "methods": ["bm25"], "metrics": ["nDCG@10"]}
OUTAGE = 3.0  # seconds PostgreSQL stays down while a run works
HELD: dict[str, str] = {}  # the nightly run one test leaves in progress for the next


def gated_deployments(dest: Path) -> Path:
    """The shipped nightly and evaluate deployments, unscheduled, run from tests/integration/pg_flows.py."""
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    spec["deployments"] = [
        {**d, "entrypoint": f"tests/integration/pg_flows.py:{GATED[d['name']]}", "schedules": []}
        for d in spec["deployments"]
        if d["name"] in GATED
    ]
    dest.write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest


def prepare_home(home: Path) -> Path:
    """The Cranfield slice indexed with the fake model as ``pgtest``, its qrels registered; returns it."""
    import tasks.workspace
    from tasks.settings import Settings
    from tests.fakes import FakeEmbedder

    source = write_slice(home.parent / "slice", queries=2, extra_docs=4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tasks.workspace, "load_embedder", lambda space, *args: FakeEmbedder(space=space))
        ws = tasks.workspace.Workspace.open(Settings(home=home))
        ws.ingest(source, CORPUS, fmt="beir")
        ws.testsets.register(CORPUS, TESTSET, source)
    return source


class Cluster:
    """The PostgreSQL server, ``zsr serve`` on it, the second worker, and the runs' gates."""

    def __init__(self, root: Path, postgres: PostgresServer) -> None:
        """``zsr serve`` on PostgreSQL (the data prepared while it starts), then the second worker."""
        self.postgres, self.home, self.gates = postgres, root / "home", root / "gates"
        self.home.mkdir()
        self.gates.mkdir()
        prefect_file = gated_deployments(root / "prefect.yaml")
        options = ["--database", postgres.url, "--worker-limit", "1", "--prefect-file", str(prefect_file)]
        options += ["--zombie-after", "0", "--grace", "10"]
        self.second: subprocess.Popen[bytes] | None = None
        self.served = Served(self.home, POOL, *options, env={"ZSR_TEST_GATES": str(self.gates)})
        try:
            self.source = prepare_home(self.home)
            self.served.ready()
            self.second = self._start_second_worker()
        except BaseException:
            self.close()
            raise

    def _start_second_worker(self) -> subprocess.Popen[bytes]:
        """``prefect worker start`` as another node runs it: only the API address and the pool in common."""
        from flows.cli.serve import TELEMETRY_OFF

        env = {**os.environ, **TELEMETRY_OFF, "ZSR_HOME": str(self.home), "ZSR_PROJECT_DIR": str(ROOT)}
        env.update(PREFECT_API_URL=self.served.api, PREFECT_WORKER_QUERY_SECONDS="1")
        env.update(PREFECT_HOME=str(self.home / "second-prefect"), ZSR_TEST_GATES=str(self.gates))
        command = ["worker", "start", "--pool", POOL, "--type", "process", "--limit", "1"]
        command += ["--name", SECOND, "--install-policy", "never"]
        with (self.home / "second-worker.log").open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "prefect", *command],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while len(self.online()) < 2:
            if worker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the second worker did not come online\n{self.log()}")
            time.sleep(0.5)
        return worker

    def online(self) -> set[str]:
        workers = self.served.http.post(f"/work_pools/{POOL}/workers/filter", json={}).json()
        return {w["name"] for w in workers if w["status"] == "ONLINE"}

    def log(self) -> str:
        second = self.home / "second-worker.log"
        tail = second.read_text()[-3000:] if second.exists() else ""
        return f"{self.served.log()}\n--- second worker\n{tail}\n--- postgres\n{self.postgres.logs()}"

    def at_gate(self, *run_ids: str, timeout: float = 120.0) -> None:
        """Until every run waits at its gate (its flow process is running flow code)."""
        deadline = time.monotonic() + timeout
        while not all((self.gates / f"{run}.waiting").exists() for run in run_ids):
            for run in run_ids:
                if (state := self.served.flow_run(run)["state"]["type"]) in FINAL:
                    pytest.fail(f"run {run} ended {state} before its gate\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"runs {run_ids} did not all reach their gate in {timeout:.0f} s\n{self.log()}")
            time.sleep(0.3)

    def open(self, *run_ids: str) -> None:
        for run in run_ids:
            (self.gates / f"{run}.open").touch()

    def worker_log(self, name: str) -> str:
        """The log of the worker called ``name`` (this module's second one, or serve's)."""
        path = self.home / ("second-worker.log" if name == SECOND else "prefect/logs/worker.log")
        return path.read_text()

    def close(self) -> None:
        """Kill serve and every process carrying this ZSR_HOME: the second worker and its flow runs too."""
        self.served.close()
        if self.second is not None:
            self.second.wait(10)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql; scripts/test does as root)")
    server = PostgresServer(bin_dir)
    try:
        yield server.start()
    finally:
        server.remove()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Cluster]:
    stack = Cluster(tmp_path_factory.mktemp("pg"), postgres)
    try:
        yield stack
    finally:
        stack.close()


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_two_runs_proceed_on_two_workers(cluster: Cluster) -> None:
    served = cluster.served
    assert cluster.second is not None
    (serve_worker,) = [p for p in served.worker_pids() if p != cluster.second.pid]
    worker_pid = {SECOND: cluster.second.pid}
    first, second = served.run("evaluate", EVALUATE), served.run("evaluate", EVALUATE)
    cluster.at_gate(first, second)  # both in progress at once
    held = cluster.postgres.query(f"SELECT state_type FROM flow_run WHERE id IN ('{first}', '{second}')")
    assert held == ["RUNNING", "RUNNING"]  # the server's state is in PostgreSQL, not in SQLite
    runs = [served.flow_run(r) for r in (first, second)]
    assert [r["state"]["type"] for r in runs] == ["RUNNING", "RUNNING"]
    names = [r["labels"]["prefect.worker.name"] for r in runs]
    assert len(set(names)) == 2 and SECOND in names, names
    for run, name in zip(runs, names, strict=True):  # each flow process is a child of the worker named
        assert parent_pid(int(run["infrastructure_pid"])) == worker_pid.get(name, serve_worker), name
    cluster.open(first, second)
    for run_id in (first, second):
        assert served.wait(run_id, timeout=120)["state"]["type"] == "COMPLETED", cluster.log()
    assert [r["method"] for r in warehouse_runs(cluster.home)] == ["bm25", "bm25"]


def test_cancel_new_holds_across_workers(cluster: Cluster) -> None:
    """A second nightly run of the corpus is cancelled, not doubled, though another worker is free for it.

    The first run stays at its gate: the next test restarts PostgreSQL while it is in progress.
    """
    served = cluster.served
    params = {"corpus": CORPUS, "source": str(cluster.source), "methods": ["bm25"], "metrics": ["nDCG@10"]}
    first = served.run("nightly-reindex", params)
    cluster.at_gate(first)  # holds the deployment's one slot; its worker (limit 1) takes no other run
    busy = served.flow_run(first)["labels"]["prefect.worker.name"]
    (free,) = cluster.online() - {busy}
    second = served.run("nightly-reindex", params)
    cancelled = served.wait(second, timeout=120)
    assert cancelled["state"]["type"] == "CANCELLED", cluster.log()
    assert cancelled["state"]["message"] == "Deployment concurrency limit reached."
    assert second in cluster.worker_log(free) and second not in cluster.worker_log(busy)
    assert served.flow_run(first)["state"]["type"] == "RUNNING"
    HELD["nightly"] = first


def test_postgres_restart_during_a_flow(cluster: Cluster) -> None:
    """The database goes away while the nightly run works (its API calls fail), then comes back: the run
    ends Completed or Crashed within a bounded wait, never left Running, and both workers still serve."""
    assert "nightly" in HELD, "test_cancel_new_holds_across_workers did not leave a run in progress"
    served, run_id = cluster.served, HELD["nightly"]
    server_log = cluster.home / "prefect" / "logs" / "server.log"
    logged = server_log.stat().st_size
    cluster.postgres.halt()
    cluster.open(run_id)
    time.sleep(OUTAGE)
    cluster.postgres.start()
    with server_log.open("rb") as log:
        log.seek(logged)
        assert b"Connect call failed" in log.read()  # the server did lose its database
    run = served.wait(run_id, timeout=120)  # bounded: a run left Running fails here
    assert run["state"]["type"] in ("COMPLETED", "CRASHED"), (run["state"], cluster.log())
    deadline = time.monotonic() + 30  # its process exits right after it reports the final state
    while pids_where(lambda env, cmd: f"PREFECT__FLOW_RUN_ID={run_id}".encode() in env):
        assert time.monotonic() < deadline, f"the process of run {run_id} still runs 30 s after it ended"
        time.sleep(0.5)
    assert len(cluster.online()) == 2
