"""Connecting to the Ray cluster of ``ZSR_RAY_ADDRESS``, and what it holds (``zsr cluster status``)."""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any

from tasks.settings import Settings

NAMESPACE = "zsr"  # named actors (the LLM slots) are found by every driver and worker of zsr
_lock = threading.Lock()


def connect(address: str) -> Any:
    """The ``ray`` module, connected to the cluster at ``address`` (once per process).

    Inside a Ray worker the worker's own connection is used. The driver's code reaches the workers as the
    zsr installed on each node: every node runs the same zsr (deployments/README.md).

    Raises:
        ConnectionError: no cluster answers at ``address``; the message names the setting.
    """
    import ray

    with _lock:
        if not ray.is_initialized():
            try:
                ray.init(
                    address=address,
                    namespace=NAMESPACE,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                    configure_logging=False,
                )
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise ConnectionError(
                    f"no Ray cluster answers at ZSR_RAY_ADDRESS={address!r} ({error}); start one "
                    "(`ray start --head`, README 'Scale out on Ray') or unset ZSR_RAY_ADDRESS to run locally"
                ) from error
    return ray


def in_worker() -> bool:
    """Whether this process is a Ray worker (a task or an actor), where work is not spread again."""
    import ray

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


@dataclass(frozen=True)
class NodeInfo:
    """One node of the cluster as the driver sees it."""

    node_id: str
    address: str
    alive: bool
    cpus: float
    gpus: float
    object_store_bytes: float


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster ``ZSR_RAY_ADDRESS`` names: its nodes and the resources free now."""

    address: str
    nodes: list[NodeInfo]
    available: dict[str, float]

    @property
    def alive(self) -> list[NodeInfo]:
        """Nodes that are up."""
        return [n for n in self.nodes if n.alive]

    @property
    def gpus(self) -> float:
        """GPUs of the nodes that are up (0 on a CPU-only cluster)."""
        return sum(n.gpus for n in self.alive)


def cluster_info(address: str) -> ClusterInfo:
    """The nodes and free resources of the cluster at ``address`` (connects if needed)."""
    ray = connect(address)
    nodes = [
        NodeInfo(
            node_id=n["NodeID"],
            address=f"{n['NodeManagerAddress']}:{n['NodeManagerPort']}",
            alive=bool(n["Alive"]),
            cpus=float(n["Resources"].get("CPU", 0)),
            gpus=float(n["Resources"].get("GPU", 0)),
            object_store_bytes=float(n["Resources"].get("object_store_memory", 0)),
        )
        for n in ray.nodes()
    ]
    return ClusterInfo(address, nodes, dict(ray.available_resources()))


def describe(settings: Settings) -> dict[str, Any]:
    """Where the work of ``settings`` runs and lands: the Ray cluster (or local), storage URI, warehouse.

    Raises:
        ConnectionError: ``ZSR_RAY_ADDRESS`` is set and no cluster answers there.
    """
    ray: Any = "local (ZSR_RAY_ADDRESS is unset: everything runs in this process)"
    if settings.ray_address:
        info = cluster_info(settings.ray_address)
        ray = {
            "address": info.address,
            "nodes_alive": len(info.alive),
            "nodes": [asdict(n) for n in info.nodes],
            "available": info.available,
        }
    storage = settings.lancedb
    if settings.s3_endpoint and storage.startswith("s3://"):
        storage += f" (endpoint {settings.s3_endpoint})"
    return {"ray": ray, "storage": storage, "warehouse": str(settings.warehouse_dir)}
