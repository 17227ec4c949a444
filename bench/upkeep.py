"""Storage upkeep: disk and search latency of a corpus re-indexed 30 times, before and after ``zsr gc``.

Usage: python bench/upkeep.py [--nights 30] [--changed 0.03] [--keep-every 10] [--rounds 2]

The demo's Cranfield slice (323 documents, 225 queries) is ingested, then re-indexed ``--nights`` times
with ``--changed`` of its documents edited each night (a different few each time), each re-index followed
by a published bm25 run, as the nightly flow does, so every night's table versions are recorded. The home
is then copied twice: ``before`` is left as it is; ``gc`` gets ``gc --apply`` (every run's versions kept);
``gc-fewer-runs`` first loses the runs of all but every ``--keep-every``-th night (``zsr rm run``), then
gets ``gc --apply``. Disk bytes, versions, fragments and per-query latency p50 of dense (query encoding
included) and bm25 (the same 225 queries, one a call, top 10, sides interleaved query by query over
``--rounds``) are printed for the three homes side by side, with each one's ratio to ``before``. It checks
that the three homes rank every query alike.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from tasks.evaluation.measures import load_queries
from tasks.settings import Settings
from tasks.workspace import Workspace

DEMO = Path(__file__).resolve().parents[1] / "demo" / "cranfield"


def size(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def files(folder: Path) -> int:
    """Files under ``folder``."""
    return sum(1 for p in folder.rglob("*") if p.is_file())


def night(lines: list[dict[str, object]], n: int, share: float) -> list[dict[str, object]]:
    """The corpus as on night ``n``: a different ``share`` of its documents edited (kept thereafter)."""
    step = max(1, round(len(lines) * share))
    edited = {(n * step + i) % len(lines) for i in range(step)}
    return [
        {**d, "text": f"{d['text']} (revised on night {n})"} if i in edited else d
        for i, d in enumerate(lines)
    ]


def latencies(sides: dict[str, Workspace], queries: list[str], method: str, rounds: int) -> dict[str, float]:
    """Each side's median milliseconds of one query a call, the sides interleaved query by query.

    Interleaving (the side that goes first alternating) spreads the load of a shared machine evenly over
    the sides, so their ratio holds even when absolute times do not.
    """
    engines = {name: ws.searcher("demo") for name, ws in sides.items()}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for engine in engines.values():
        engine.search(queries[0], method)  # warm caches and the query encoder
    for r in range(rounds):
        for i, query in enumerate(queries):
            order = list(engines.items())
            for name, engine in order[(i + r) % len(order) :] + order[: (i + r) % len(order)]:
                start = time.perf_counter()
                engine.search(query, method, k=10)
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: float(np.percentile(t, 50)) for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--changed", type=float, default=0.03)
    parser.add_argument("--keep-every", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    lines = [json.loads(line) for line in (DEMO / "corpus.jsonl").read_text().splitlines() if line.strip()]
    queries = list(load_queries(DEMO / "queries.jsonl").values())
    with tempfile.TemporaryDirectory() as tmp:
        homes = {name: Path(tmp) / name for name in ("before", "gc", "gc-fewer-runs")}
        source = Path(tmp) / "corpus.jsonl"
        ws = Workspace.open(Settings(home=homes["before"]))
        source.write_text("".join(json.dumps(d) + "\n" for d in lines))
        ws.ingest(source, "demo", skip_bad=True)
        ws.testsets.register("demo", "human", DEMO)
        start = time.perf_counter()
        for n in range(1, args.nights + 1):
            lines = night(lines, n, args.changed)
            source.write_text("".join(json.dumps(d) + "\n" for d in lines))
            ws.ingest(source, "demo", skip_bad=True)
            ws.evaluate("demo", "human", ["bm25"])
        print(
            f"{args.nights} re-indexes ({args.changed:.0%} of {len(lines)} documents changed each), each "
            f"followed by a bm25 run: {time.perf_counter() - start:.0f} s"
        )
        sides = {"before": ws}
        reports = {}
        for name in ("gc", "gc-fewer-runs"):
            shutil.copytree(homes["before"], homes[name])
            sides[name] = Workspace.open(Settings(home=homes[name]))
            if name == "gc-fewer-runs":  # the runs of every --keep-every-th night only
                runs = sides[name].runs(limit=10_000).sort("created_at")["run_id"].to_list()
                for i, run_id in enumerate(runs, start=1):
                    if i % args.keep_every:
                        sides[name].remove_run(run_id)
            start = time.perf_counter()
            reports[name] = sides[name].gc(apply=True)
            kept = len(sides[name].runs(limit=10_000))
            lost = len(reports[name].unreproducible)
            took = time.perf_counter() - start
            print(f"{name}: gc --apply {took:.1f} s, {kept} runs kept, {lost} unreproducible")
        for method in ("dense", "bm25"):
            ranked = [side.search_many("demo", dict(enumerate(queries)), method) for side in sides.values()]
            assert all(r == ranked[0] for r in ranked), f"{method} ranks differently after gc"
        print(f"{'measure':26}" + "".join(f"{name:>15}" for name in sides))
        rows = {
            "LanceDB bytes": [size(h / "lancedb") for h in homes.values()],
            "warehouse bytes": [size(h / "warehouse") for h in homes.values()],
            "warehouse files": [files(h / "warehouse") for h in homes.values()],
        }
        for table in (
            "demo__documents",
            next(t.table for t in reports["gc"].tables if "__views__" in t.table),
        ):
            found = [{t.table: t for t in reports[name].tables}[table] for name in reports]
            short = table.split("__")[1]
            rows[f"{short} versions"] = [found[0].versions] + [t.versions_after for t in found]
            rows[f"{short} fragments"] = [found[0].fragments] + [t.fragments_after for t in found]
        for method in ("dense", "bm25"):
            p50 = latencies(sides, queries, method, args.rounds)
            rows[f"{method} p50 ms"] = [round(p50[name], 1) for name in sides]
        for name, values in rows.items():
            ratios = "".join(f"  ({v / values[0]:.2f})" for v in values[1:])
            print(f"{name:26}" + "".join(f"{v:>15,}" for v in values) + ratios)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
