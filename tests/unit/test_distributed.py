"""The Ray scale-out's local guarantees: without ``ZSR_RAY_ADDRESS`` nothing imports Ray, and what the
distributed path does with its pieces (slices of a batch, refusals) holds without a cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.distributed.pool import PooledEmbedder
from tests.fakes import FakeEmbedder, fake_workspace

ROOT = Path(__file__).resolve().parents[2]


def test_the_local_path_never_imports_ray(tmp_path: Path) -> None:
    """The CLI and flows loaded, a search and an evaluation run, without ZSR_RAY_ADDRESS: no ``ray``."""
    script = f"""
import os, sys
os.environ["ZSR_HOME"] = {str(tmp_path / "home")!r}
os.environ.pop("ZSR_RAY_ADDRESS", None)
import pytest
from pathlib import Path
import flows.cli, flows.evaluate, flows.nightly
from tests.fakes import fake_workspace
with pytest.MonkeyPatch.context() as mp, fake_workspace(Path({str(tmp_path)!r}), mp) as ws:
    ws.evaluate("c", "t", ["dense", "bm25"])
    ws.search("c", "wing", "dense")
assert "ray" not in sys.modules, "ray was imported on the local path"
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


class _Actor:
    """Stands in for a Ray actor handle: ``encode.remote`` returns the fake's vectors as the 'ref'."""

    def __init__(self, fake: FakeEmbedder, calls: list[list[str]]) -> None:
        self.fake, self.calls = fake, calls
        self.encode = self  # handle.encode.remote(...)

    def remote(self, texts: list[str], queries: bool) -> np.ndarray:
        self.calls.append(texts)
        return self.fake.encode(texts, queries=queries)


def test_a_batch_is_split_between_actors_and_put_back_in_order() -> None:
    fake, calls = FakeEmbedder(), []
    pool = PooledEmbedder.__new__(PooledEmbedder)
    pool.actors = [_Actor(fake, calls) for _ in range(3)]
    pool.dim = fake.dim
    pool._ray = type("Ray", (), {"get": staticmethod(lambda refs: refs)})()
    texts = [f"text {i} wing" for i in range(7)]
    vectors = pool.encode(texts, queries=False)
    assert [len(c) for c in calls] == [3, 3, 1]  # every actor a share, contiguous
    assert np.array_equal(vectors, fake.encode(texts, queries=False))
    assert pool.encode([], queries=False).shape == (0, fake.dim)


def test_eval_on_ray_without_an_address_names_the_setting(tmp_path: Path, monkeypatch: Any) -> None:
    with fake_workspace(tmp_path, monkeypatch) as ws, pytest.raises(ValueError, match="ZSR_RAY_ADDRESS"):
        ws.evaluate("c", "t", ["bm25"], on_ray=True)


def test_cluster_status_without_an_address_says_local(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app
    from tests.conftest import zsr_home_at

    with zsr_home_at(tmp_path / "home") as home, pytest.MonkeyPatch.context() as mp:
        mp.delenv("ZSR_RAY_ADDRESS", raising=False)
        result = CliRunner().invoke(app, ["cluster", "status", "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["ray"].startswith("local")
    assert found["storage"] == str(home / "lancedb") and found["prefect_api"].startswith("http")


class _Call:
    """``handle.method`` of a Ray handle: ``.remote(...)`` calls the function (the 'ref' is its result)."""

    def __init__(self, function: Any) -> None:
        self.remote = function


class _FakeRay:
    """Just enough of ``ray`` for PooledEmbedder to start: records the actors' resources and starts."""

    def __init__(self) -> None:
        self.resources: dict[str, Any] = {}
        self.started: list[Any] = []
        fake = FakeEmbedder()
        self.actor = type("Actor", (), {"shape": _Call(lambda: (fake.space, fake.dim, fake.max_tokens))})()

    def remote(self, **resources: Any) -> Any:
        self.resources = resources
        return lambda cls: self  # the actor class

    def options(self, **_: Any) -> _Call:
        return _Call(self._start)

    def _start(self, load: Any) -> Any:
        self.started.append(load)
        return self.actor

    def get(self, ref: Any) -> Any:
        return ref


@pytest.mark.parametrize(
    ("gpus", "size", "actors", "resources"),
    [
        (0.0, None, 2, {"num_cpus": 1, "num_gpus": 0.0}),  # one per node, a CPU each
        (4.0, None, 4, {"num_cpus": 0, "num_gpus": 1.0}),  # one per GPU
        (2.0, 4, 4, {"num_cpus": 0, "num_gpus": 0.5}),  # more actors than GPUs share them
    ],
)
def test_pool_size_and_resources_follow_the_cluster(
    gpus: float, size: int | None, actors: int, resources: dict[str, Any], monkeypatch: Any
) -> None:
    import tasks.distributed.pool as pool_module
    from tasks.distributed.cluster import ClusterInfo, NodeInfo

    ray = _FakeRay()
    nodes = [NodeInfo(f"n{i}", "127.0.0.1:1", True, 1.0, gpus / 2, 1e8) for i in range(2)]
    monkeypatch.setattr(pool_module, "connect", lambda address: ray)
    monkeypatch.setattr(pool_module, "cluster_info", lambda address: ClusterInfo(address, nodes, {}))
    pool = PooledEmbedder("addr", FakeEmbedder, size)
    assert len(pool.actors) == actors == len(ray.started)
    assert {k: ray.resources[k] for k in resources} == resources


def test_more_actors_than_cpus_is_refused_by_the_setting(monkeypatch: Any) -> None:
    import tasks.distributed.pool as pool_module
    from tasks.distributed.cluster import ClusterInfo, NodeInfo

    nodes = [NodeInfo(f"n{i}", "127.0.0.1:1", True, 1.0, 0.0, 1e8) for i in range(2)]
    monkeypatch.setattr(pool_module, "connect", lambda address: None)
    monkeypatch.setattr(pool_module, "cluster_info", lambda address: ClusterInfo(address, nodes, {}))
    with pytest.raises(ValueError, match=r"ZSR_RAY_ACTORS=3 .* has 2; lower ZSR_RAY_ACTORS"):
        PooledEmbedder("addr", FakeEmbedder, 3)


def test_an_empty_address_is_no_cluster(monkeypatch: Any) -> None:
    from tasks.settings import Settings

    monkeypatch.setenv("ZSR_RAY_ADDRESS", "")
    assert Settings().ray_address is None
    monkeypatch.setenv("ZSR_RAY_ADDRESS", "head:6379")
    assert Settings().ray_address == "head:6379"
