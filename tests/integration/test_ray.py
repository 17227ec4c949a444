"""Scale-out on a real Ray cluster: a head and a worker node process on 127.0.0.1, started once per module.

Ingest on a pool of embedding actors gives the tables of a local ingest (the real model: vectors within
cosine 0.99999); an actor killed by PID midway is restarted and the tables still match. Evaluation fanned
out gives the local scores, and a node that leaves midway leaves no run of it in the warehouse until every
run is back. The LLM limit holds across the cluster, and spread LLM batches keep one cache and usage rows.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from storage.corpus_store import CorpusStore
from tasks.distributed.cluster import cluster_info, connect
from tasks.distributed.evaluation import evaluate_on_ray
from tasks.distributed.llm import ClusterSlots, SpreadLLMClient
from tasks.distributed.pool import PooledEmbedder
from tasks.evaluation.runs import Direct
from tasks.ingest.index import reindex
from tasks.llm.client import LLMConfig, Request
from tasks.settings import Settings
from tasks.workspace import Workspace
from tests.conftest import zsr_home_at
from tests.fakes import FakeEmbedder, fake_workspace, make_docs
from tests.flows.conftest import write_slice
from tests.llm_server import ScriptedServer
from tests.ray_targets import MarkingEmbedder, fake_searcher

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
OBJECT_STORE = 200 * 1024 * 1024  # bytes per node: the tests move a few megabytes
# Workers import zsr and the tests' fakes from this checkout; a dead node is noticed within seconds.
NODE_ENV = {
    "PYTHONPATH": str(ROOT),
    "OPENAI_API_KEY": "sk-zsr-test",
    "HF_HUB_OFFLINE": "1",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_failure_threshold": "3",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """Ray node processes, each ``ray start --block`` in a process group of its own."""

    def __init__(self, temp: Path) -> None:
        self.temp = temp
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen[bytes]] = []

    def start_node(self, *, head: bool = False) -> str:
        """Start a node with one CPU; returns its node id once the cluster lists it alive."""
        before = self.alive()
        where = ["--head", f"--port={self.port}", "--include-dashboard=false"] if head else []
        command = [str(RAY), "start", "--block", "--num-cpus=1", f"--object-store-memory={OBJECT_STORE}"]
        command += [*where, f"--temp-dir={self.temp}", "--node-ip-address=127.0.0.1"]
        command += [] if head else [f"--address={self.address}"]
        log = (self.temp / f"node{len(self.nodes)}.log").open("wb")
        self.nodes.append(
            subprocess.Popen(
                command, env={**os.environ, **NODE_ENV}, stdout=log, stderr=log, start_new_session=True
            )
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            new = self.alive() - before
            if new:
                return new.pop()
            time.sleep(0.5)
        raise RuntimeError(
            f"ray node did not start: {(self.temp / f'node{len(self.nodes) - 1}.log').read_text()}"
        )

    def alive(self) -> set[str]:
        """Ids of the nodes alive now (none before the head answers)."""
        if not self.nodes:
            return set()
        try:
            return {n.node_id for n in cluster_info(self.address).alive}
        except ConnectionError:
            return set()

    def kill(self, node: subprocess.Popen[bytes]) -> None:
        """SIGKILL a node's whole process group (raylet, object store, workers)."""
        try:
            os.killpg(node.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head node and one worker node, one CPU each; every process group killed at the end."""
    if not RAY.exists():
        pytest.skip(f"the ray command is not installed at {RAY} (pip install ray, pinned in constraints.txt)")
    started = Cluster(Path(tempfile.mkdtemp(prefix="zsr-ray-", dir="/tmp")))  # Ray's socket paths: short
    try:
        started.start_node(head=True)
        started.start_node()
        yield started
    finally:
        import ray

        ray.shutdown()
        for node in reversed(started.nodes):
            started.kill(node)
        shutil.rmtree(started.temp, ignore_errors=True)


def tables(store: CorpusStore, corpus: str, space: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Documents and views of a corpus, sorted, without the columns that record when they were written."""
    docs = store.documents.table(corpus).to_arrow().drop_columns(["ingested_at"]).to_pylist()
    views = store.views.table(corpus, space).to_arrow().to_pylist()
    return sorted(docs, key=lambda r: r["doc_id"]), sorted(views, key=lambda r: r["view_id"])


# -- ingest ------------------------------------------------------------------------------------------------
def test_ingest_on_actors_and_eval_on_ray_equal_the_local_path(cluster: Cluster, tmp_path: Path) -> None:
    """The real model and the workspace's own Ray paths (what `zsr ingest` and `zsr eval --ray` run)."""
    source = write_slice(tmp_path / "slice", queries=1, extra_docs=4)
    results = {}
    for name, address in (("local", None), ("ray", cluster.address)):
        ws = Workspace(Settings(home=tmp_path / name, ray_address=address, ray_actors=1))
        report, _ = ws.ingest(source, "slice")
        ws.testsets.register("slice", "human", source)
        evaluation = ws.evaluate("slice", "human", ["dense", "bm25"], on_ray=address is not None)
        space = ws.store.registry.corpus("slice").space
        results[name] = (report, tables(ws.store, "slice", space), scores(evaluation.runs))
    (local, (local_docs, local_views), local_scores) = results["local"]
    (ray_report, (docs, views), ray_scores) = results["ray"]
    assert ray_report.chunks_encoded == local.chunks_encoded > 0
    assert docs == local_docs
    strip = [{k: v for k, v in row.items() if k != "vector"} for row in views]
    assert strip == [{k: v for k, v in row.items() if k != "vector"} for row in local_views]
    a, b = (np.array([row["vector"] for row in rows]) for rows in (views, local_views))
    cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.99999
    assert ray_scores.keys() == local_scores.keys() == {"dense", "bm25"}
    for method, measured in ray_scores.items():
        assert measured == pytest.approx(local_scores[method], abs=1e-4)


def test_actor_killed_by_pid_midway_is_retried_and_tables_equal_an_uninterrupted_run(
    cluster: Cluster, tmp_path: Path
) -> None:
    docs, marks = make_docs(60), tmp_path / "marks"
    marks.mkdir()
    fake = FakeEmbedder()
    reference = CorpusStore(str(tmp_path / "reference"))
    reindex(reference, "c", docs, fake.space, lambda: fake, batch_docs=10)

    killed: list[int] = []

    def kill_first_encoder() -> None:
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            seen = sorted(marks.iterdir())
            if seen:
                killed.append(int(seen[0].name.split("-")[0]))
                os.kill(killed[0], signal.SIGKILL)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first_encoder)
    killer.start()
    store = CorpusStore(str(tmp_path / "lancedb"))
    pool = PooledEmbedder(cluster.address, lambda: MarkingEmbedder(marks), size=2)
    report = reindex(store, "c", docs, fake.space, lambda: pool, batch_docs=10)
    killer.join()

    assert killed, "no actor encoded anything"
    encoders = {int(p.name.split("-")[0]) for p in marks.iterdir()}
    assert len(encoders) > 2  # a replacement actor encoded after the kill
    assert report.added == 60
    assert tables(store, "c", fake.space) == tables(reference, "c", fake.space)


# -- evaluation --------------------------------------------------------------------------------------------
def scores(runs: list[Any]) -> dict[str, dict[str, float]]:
    return {run.method: run.metrics for run in runs}


METHODS = ["dense", "bm25", "hybrid"]


RANKINGS = (
    "SELECT r.method, k.query_id, k.doc_id, k.rank FROM rankings k JOIN runs r USING (run_id) "
    "WHERE r.eval_id = $1 ORDER BY 1, 2, 4"
)


def test_eval_fanned_out_equals_local_and_a_node_leaving_midway_leaves_no_partial_run(
    cluster: Cluster, tmp_path: Path, monkeypatch: Any
) -> None:
    leaving = cluster.start_node()  # three nodes, one CPU each: one method on each
    node = cluster.nodes[-1]
    marks = tmp_path / "marks"
    marks.mkdir()
    with fake_workspace(tmp_path, monkeypatch, corpora=("c",)) as ws:
        local = ws.evaluate("c", "t", METHODS)
        before = set(ws.runs(limit=100)["run_id"].to_list())
        visible: list[int] = []  # runs of the evaluation in the warehouse each time a scored run came back

        def came_back(method: str, done: int, total: int) -> None:
            visible.append(len(set(ws.runs(limit=100)["run_id"].to_list()) - before))

        steps = Direct(ws.warehouse, ws.searcher, ws.testsets.load, progress=came_back)
        factory = partial(fake_searcher, ws.settings, wait=marks)
        outcome: list[Any] = []
        evaluation = threading.Thread(
            target=lambda: outcome.append(
                evaluate_on_ray(cluster.address, steps, factory, "c", ["t"], METHODS)
            )
        )
        evaluation.start()
        deadline = time.monotonic() + 60
        while not (marks / leaving).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (marks / leaving).exists(), "no method was scored on the node that leaves"
        cluster.kill(node)
        evaluation.join()
        [fanned] = outcome[0]
        after = set(ws.runs(limit=100)["run_id"].to_list()) - before
        rankings, local_rankings = (ws.sql(RANKINGS, [e.eval_id]) for e in (fanned, local))
    assert visible == [0, 0, 0]  # nothing published until every run, the retried one too, was back
    assert after == {run.run_id for run in fanned.runs}
    assert [r.method for r in fanned.runs] == METHODS
    assert scores(fanned.runs) == scores(local.runs)
    assert rankings is not None and rankings.height > 0
    assert rankings.equals(local_rankings)


# -- LLM ---------------------------------------------------------------------------------------------------
def test_llm_slots_bound_calls_in_flight_across_the_cluster(cluster: Cluster) -> None:
    ray, address = connect(cluster.address), cluster.address
    slots = ClusterSlots(address, limit=2, lease=60)

    @ray.remote(num_cpus=0)
    def hold(limit: int) -> int:
        mine = ClusterSlots(address, limit=limit, lease=60)
        with mine:
            time.sleep(0.3)
            return int(ray.get(mine.actor.in_use.remote()))

    in_use = ray.get([hold.options(scheduling_strategy="SPREAD").remote(2) for _ in range(6)])
    assert max(in_use) == 2  # the limit was reached, never passed, by tasks on both nodes
    assert ray.get(slots.actor.in_use.remote()) == 0

    expiring = ClusterSlots(cluster.address, limit=1, lease=0.5)
    expiring.__enter__()  # a holder that dies without releasing: its lease runs out
    with expiring:
        assert ray.get(expiring.actor.in_use.remote()) == 1


def test_spread_llm_batch_keeps_one_cache_and_usage_rows(cluster: Cluster, tmp_path: Path) -> None:
    config = LLMConfig(model="openai/gpt-test", concurrency=2, retry_seconds=5)
    requests = [Request([{"role": "user", "content": f"question {i}"}]) for i in range(8)]
    usage: list[pa.Table] = []
    with ScriptedServer("answer") as server:
        client = SpreadLLMClient(
            cluster.address, _with_base(config, server.url), tmp_path / "cache.sqlite", usage.append
        )
        first = client.complete_many(requests, purpose="judge")
        again = client.complete_many(requests, purpose="judge")
    assert [a.text for a in first] == ["answer"] * 8  # type: ignore[union-attr]
    assert len(server.seen) == 8  # each request asked once, across the workers
    assert all(a.cache_hit for a in again)  # type: ignore[union-attr]
    rows = pa.concat_tables(usage).to_pylist()
    assert len(rows) == 16 and {r["purpose"] for r in rows} == {"judge"}
    assert sum(r["cache_hit"] for r in rows) == 8


def _with_base(config: LLMConfig, url: str) -> LLMConfig:
    from dataclasses import replace

    return replace(config, api_base=url)


def test_cluster_status_lists_the_nodes(cluster: Cluster, tmp_path: Path) -> None:
    from flows.cli.cluster import status_rows

    with zsr_home_at(tmp_path / "home"):
        rows = status_rows(Settings(home=tmp_path / "home", ray_address=cluster.address))
    text = json.dumps(rows)
    assert cluster.address in text and "127.0.0.1" in text
