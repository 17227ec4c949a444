"""Prefect on PostgreSQL with two process workers on one work pool, as on several machines.

One module, one server set: a PostgreSQL cluster started here (tests/pg_server.py), ``zsr serve --database``
on it with its worker limited to one run at a time, and a second ``prefect worker start --type process
--limit 1`` on the same pool. The deployments are the shipped ones (``deployments/prefect.yaml``: the
nightly's ``CANCEL_NEW`` limit included) with their entrypoints moved to tests/integration/pg_flows.py:
the same flows with the fake embedding model, each run held at a gate before it loads its test set, so
that what happens "while a run is in progress" is decided here, not left to timing. Checked: two runs
proceed at once on the two workers (each run's flow process is a child of a different worker); a second
nightly run of the same corpus is cancelled while the first runs, whichever worker takes it; and
PostgreSQL restarted during a flow leaves the run Completed or Crashed, never Running. The tests share
the stack and run in file order; each waits with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.flows.conftest import write_slice
from tests.integration.test_prefect_server import FINAL, PREFECT_YAML, ROOT, Served, warehouse_runs
from tests.pg_server import PostgresServer, postgres_bin

pytestmark = pytest.mark.slow
POOL, CORPUS, TESTSET = "zsr-pg", "pgtest", "human"
SECOND = "second-node"  # the worker this module starts beside serve's own
GATED = {"nightly-reindex": "nightly", "evaluate": "evaluate"}  # deployment -> flow in pg_flows.py
EVALUATE = {"corpus": CORPUS, "testset": TESTSET, "methods": ["bm25"], "metrics": ["nDCG@10"]}


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
        self.postgres, self.home, self.gates = postgres, root / "home", root / "gates"
        self.home.mkdir()
        self.gates.mkdir()
        prefect_file = gated_deployments(root / "prefect.yaml")
        options = ["--database", postgres.url, "--worker-limit", "1", "--prefect-file", str(prefect_file)]
        options += ["--zombie-after", "0", "--grace", "10"]
        self.served = Served(self.home, POOL, *options, env={"ZSR_TEST_GATES": str(self.gates)})
        self.second: subprocess.Popen[bytes] | None = None
        self.source = prepare_home(self.home)  # while the server starts
        self.served.ready()
        self.second = self._start_second_worker()

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

    def wait(self, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
        run = self.served.wait(run_id, timeout=timeout)
        return run

    def close(self) -> None:
        if self.second is not None:
            with_group = self.second.pid
            try:
                os.killpg(with_group, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.second.wait(10)
        self.served.close()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql; scripts/test does it as root)")
    server = PostgresServer(bin_dir)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Cluster]:
    stack: Cluster | None = None
    try:
        stack = Cluster(tmp_path_factory.mktemp("pg"), postgres)
        yield stack
    finally:
        if stack is not None:
            stack.close()


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_two_runs_proceed_on_two_workers(cluster: Cluster) -> None:
    served = cluster.served
    assert served.http.get("/admin/version").is_success
    workers = {pid: (SECOND if cluster.second and pid == cluster.second.pid else "serve") for pid in served.worker_pids()}
    assert sorted(workers.values()) == ["second", "serve"] or sorted(workers.values()) == [SECOND, "serve"]
    first = served.run("evaluate", EVALUATE)
    second = served.run("evaluate", {**EVALUATE, "methods": ["bm25", "dense"]})
    cluster.at_gate(first, second)  # both runs in progress at once
    runs = [served.flow_run(r) for r in (first, second)]
    assert [r["state"]["type"] for r in runs] == ["RUNNING", "RUNNING"]
    names = [r["labels"]["prefect.worker.name"] for r in runs]
    parents = [workers[parent_pid(int(r["infrastructure_pid"]))] for r in runs]
    assert len(set(names)) == 2 and SECOND in names, names
    assert sorted(parents) == [SECOND, "serve"], parents
    assert [p == SECOND for p in parents] == [n == SECOND for n in names]  # the label names the real parent
    cluster.open(first, second)
    for run in (first, second):
        assert cluster.wait(run)["state"]["type"] == "COMPLETED", cluster.log()
    assert sorted(r["method"] for r in warehouse_runs(cluster.home)) == ["bm25", "bm25", "dense"]


def test_cancel_new_holds_across_workers(cluster: Cluster) -> None:
    served = cluster.served
    params = {"corpus": CORPUS, "source": str(cluster.source), "methods": ["bm25"], "metrics": ["nDCG@10"]}
    first = served.run("nightly-reindex", params)
    cluster.at_gate(first)  # holds the deployment's one slot; its worker (limit 1) takes nothing else
    busy = served.flow_run(first)["labels"]["prefect.worker.name"]
    second = served.run("nightly-reindex", params)
    cancelled = cluster.wait(second)
    assert cancelled["state"]["type"] == "CANCELLED", cluster.log()
    assert cancelled["labels"].get("prefect.worker.name", "") != busy  # the other worker proposed it
    cluster.open(first)
    done = cluster.wait(first)
    assert done["state"]["type"] == "COMPLETED", cluster.log()
    assert done["name"].startswith(f"nightly-{CORPUS}-")


def test_postgres_restart_during_a_flow(cluster: Cluster) -> None:
    served = cluster.served
    run_id = served.run("evaluate", EVALUATE)
    cluster.at_gate(run_id)
    cluster.postgres.restart()
    cluster.open(run_id)
    run = cluster.wait(run_id, timeout=120)
    assert run["state"]["type"] in ("COMPLETED", "CRASHED"), (run["state"], cluster.log())
