"""The ``cluster`` group: ``zsr cluster status`` shows what this machine's commands and flows run on.

The Ray cluster of ``ZSR_RAY_ADDRESS`` (its nodes, CPUs, GPUs and object store; ``local`` when unset), the
storage URI of the index and the warehouse folder, and the Prefect API flows report to. Every value is read
from the settings as they are, so it shows what a command would use now.
"""

from __future__ import annotations

from typing import Any

import typer

from flows.cli.common import JsonOpt, app, emit_json, err, out, show
from flows.cli.schedule import api_url
from tasks.settings import Settings, get_settings

cluster_app = typer.Typer(help="The Ray cluster, storage and Prefect API this machine's commands use.")
app.add_typer(cluster_app, name="cluster")


def status_rows(settings: Settings) -> dict[str, Any]:
    """What ``zsr cluster status`` shows, as a JSON-ready dict (``tasks.distributed.cluster.describe``).

    Raises:
        ConnectionError: ``ZSR_RAY_ADDRESS`` is set and no cluster answers there.
    """
    from tasks.distributed.cluster import describe

    return {**describe(settings), "prefect_api": api_url()}


@cluster_app.command("status")
def status(as_json: JsonOpt = False) -> None:
    """Show the Ray cluster (nodes, CPUs, GPUs, object store), the storage URI and the Prefect API in use."""
    try:
        found = status_rows(get_settings())
    except ConnectionError as error:
        err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        emit_json(found)
        return
    ray = found["ray"]
    if isinstance(ray, str):
        out.print(f"ray: {ray}", highlight=False)
    else:
        out.print(f"ray: {ray['address']}, {ray['nodes_alive']} node(s) alive", highlight=False)
        show(
            ["node", "address", "alive", "CPUs", "GPUs", "object store MB"],
            (
                [
                    n["node_id"][:12],
                    n["address"],
                    n["alive"],
                    n["cpus"],
                    n["gpus"],
                    round(n["object_store_bytes"] / 2**20),
                ]
                for n in ray["nodes"]
            ),
        )
    for key in ("storage", "warehouse", "prefect_api"):
        out.print(f"{key}: {found[key]}", highlight=False)
