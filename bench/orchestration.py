"""Orchestration overhead of the ``evaluate`` flow against the same work called directly, on Cranfield.

Usage: python bench/orchestration.py [DATA_DIR] [--rounds N] [--home DIR] [--methods dense,bm25,hybrid]

Ingests Cranfield into a temporary ZSR_HOME (or reuses ``--home``), registers its qrels, loads the model
once, then alternates over N rounds, measured side by side in this one process:

- direct: the evaluation sequence the flow runs, its steps called in this process (``Workspace.evaluate``:
  check, open the searcher, load the test set, evaluate each method into the warehouse, read the previous
  evaluation, write the HTML report);
- prefect: the ``evaluate`` flow itself, the same sequence with each step a task, against a local Prefect
  server (the test harness's SQLite server), with its task runs, retries, progress, table and markdown
  artifacts.

Prints the minimum of each side and the overhead ratio, and exits 1 above the target (+10%). Deployment
runs cost on top of this a fresh process per flow run (Python, Prefect, flow imports and the model load,
measured separately by the integration tests), which is constant per run, not per query.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

METRICS = ["nDCG@10", "R@100", "RR@10", "AP@100", "P@10"]


def direct(corpus: str, testset: str, methods: list[str]) -> float:
    """The flow's work without Prefect: the same sequence, its steps called in this process."""
    from tasks.workspace import Workspace

    started = time.perf_counter()
    Workspace.open().evaluate(corpus, testset, methods, METRICS, label="direct", compare=True, report=True)
    return time.perf_counter() - started


def orchestrated(corpus: str, testset: str, methods: list[str]) -> float:
    """The ``evaluate`` flow, in this process, reporting to the Prefect server."""
    from flows.evaluate import evaluate

    started = time.perf_counter()
    state = evaluate(corpus=corpus, testset=testset, methods=methods, metrics=METRICS, return_state=True)
    assert state.is_completed(), state
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--home", type=Path, help="Reuse this ZSR_HOME (Cranfield already indexed there).")
    parser.add_argument("--methods", default="dense,bm25,hybrid")
    args = parser.parse_args()
    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp)
        os.environ["ZSR_HOME"] = str(home)
        os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))  # cached task results land here

        from tasks.settings import get_settings
        from tasks.workspace import Workspace

        get_settings.cache_clear()
        ws = Workspace.open()  # the flow's workspace too: both sides share the model and the handles
        folder = args.data / "cranfield"
        started = time.perf_counter()
        ws.ingest(folder, "cranfield", fmt="beir", skip_bad=True)
        if not ws.testsets.names("cranfield"):
            ws.testsets.register("cranfield", "human", folder)
        ws.searcher("cranfield").warm_up()  # the model loads once, for both sides
        print(f"index ready in {time.perf_counter() - started:.1f} s (ZSR_HOME={home})")

        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=300):
            direct("cranfield", "human", methods[:1])  # warm caches on both paths before timing
            orchestrated("cranfield", "human", methods[:1])
            plain, flow = [], []
            for _ in range(args.rounds):
                plain.append(direct("cranfield", "human", methods))
                flow.append(orchestrated("cranfield", "human", methods))
            # The fixed cost of a flow run, on the cheapest evaluation (bm25 only: little noise)
            fixed_plain, fixed_flow = [], []
            for _ in range(3):
                fixed_plain.append(direct("cranfield", "human", ["bm25"]))
                fixed_flow.append(orchestrated("cranfield", "human", ["bm25"]))
        print(
            f"Cranfield, 225 queries, methods {','.join(methods)}, {len(METRICS)} measures, "
            f"{args.rounds} rounds"
        )
        print(f"direct     {min(plain):7.2f} s   (rounds: {', '.join(f'{t:.2f}' for t in plain)})")
        print(f"prefect    {min(flow):7.2f} s   (rounds: {', '.join(f'{t:.2f}' for t in flow)})")
        overhead = min(flow) / min(plain) - 1
        print(
            f"orchestration overhead {overhead:+.1%} ({min(flow) - min(plain):+.2f} s)   (target <= +10%)"
            f"{'  TARGET MISSED' if overhead > 0.10 else ''}"
        )
        print(
            f"fixed cost per flow run (bm25 only: {min(fixed_plain):.2f} s direct, {min(fixed_flow):.2f} s "
            f"prefect): {min(fixed_flow) - min(fixed_plain):+.2f} s"
        )
    return 1 if overhead > 0.10 else 0


if __name__ == "__main__":
    sys.exit(main())
