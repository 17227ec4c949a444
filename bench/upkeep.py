"""Storage upkeep: disk and search latency of a corpus re-indexed 30 times, before and after ``zsr gc``.

Usage: python bench/upkeep.py [--nights 30] [--changed 0.03] [--every 1] [--rounds 3]

The demo's Cranfield slice (323 documents, 225 queries) is ingested, then re-indexed ``--nights`` times
with ``--changed`` of its documents edited each night (a different few each time), as the nightly flow
would; after every ``--every``-th re-index a bm25 run is evaluated and published, so its table versions
are recorded. The home is then copied: one copy is left as it is, the other gets ``gc --apply``. Disk
bytes (LanceDB and warehouse) and per-query latency p50 of dense and bm25 (the same 225 queries, one a
call, top 10) are measured on both copies side by side, alternating ``--rounds`` times (minimum of each
side's p50). It checks that every recorded run's versions survive and that both copies rank alike.
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
    return [{**d, "text": f"{d['text']} (revised on night {n})"} if i in edited else d for i, d in enumerate(lines)]


def p50(ws: Workspace, queries: list[str], method: str) -> float:
    """Median milliseconds of one query a call."""
    engine = ws.searcher("demo")
    engine.search(queries[0], method)
    times = []
    for query in queries:
        start = time.perf_counter()
        engine.search(query, method, k=10)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--changed", type=float, default=0.03)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lines = [json.loads(line) for line in (DEMO / "corpus.jsonl").read_text().splitlines() if line.strip()]
    queries = list(load_queries(DEMO / "queries.jsonl").values())
    with tempfile.TemporaryDirectory() as tmp:
        before_home, after_home, source = Path(tmp) / "before", Path(tmp) / "after", Path(tmp) / "corpus.jsonl"
        ws = Workspace.open(Settings(home=before_home))
        source.write_text("".join(json.dumps(d) + "\n" for d in lines))
        ws.ingest(source, "demo", skip_bad=True)
        ws.testsets.register("demo", "human", DEMO)
        start = time.perf_counter()
        for n in range(1, args.nights + 1):
            source.write_text("".join(json.dumps(d) + "\n" for d in night(lines, n, args.changed)))
            ws.ingest(source, "demo", skip_bad=True)
            lines = night(lines, n, args.changed)
            if n % args.every == 0:
                ws.evaluate("demo", "human", ["bm25"])
        print(f"{args.nights} re-indexes ({args.changed:.0%} of {len(lines)} documents changed each), "
              f"a run every {args.every}: {time.perf_counter() - start:.0f} s")
        shutil.copytree(before_home, after_home)
        after = Workspace.open(Settings(home=after_home))
        start = time.perf_counter()
        report = after.gc(apply=True)
        print(f"gc --apply: {time.perf_counter() - start:.1f} s, {len(after.runs(limit=1000))} runs kept reproducible, "
              f"{len(report.unreproducible)} not")
        sides = {"before": ws, "after": after}
        latency: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for name, side in sides.items():
                for method in ("dense", "bm25"):
                    latency.setdefault((name, method), []).append(p50(side, queries, method))
        for method in ("dense", "bm25"):
            a, b = (side.search_many("demo", dict(enumerate(queries)), method) for side in sides.values())
            assert a == b, f"{method} ranks differently after gc"
        tables = {t.table: t for t in report.tables}
        print("measure                       before      after   after/before")
        for name, folder in (("LanceDB bytes", "lancedb"), ("warehouse bytes", "warehouse")):
            x, y = size(before_home / folder), size(after_home / folder)
            print(f"{name:24} {x:>11,} {y:>11,}   {y / x:6.2f}")
        x, y = files(before_home / "warehouse"), files(after_home / "warehouse")
        print(f"{'warehouse files':24} {x:>11,} {y:>11,}   {y / x:6.2f}")
        for table in ("demo__documents", *(t for t in tables if "__views__" in t)):
            t = tables[table]
            print(f"{table[:18] + ' versions':24} {t.versions:>11} {t.versions - t.versions_removed:>11}   "
                  f"{(t.versions - t.versions_removed) / t.versions:6.2f}")
            print(f"{table[:18] + ' fragments':24} {t.fragments:>11} {t.fragments_after:>11}   "
                  f"{t.fragments_after / t.fragments:6.2f}")
        for method in ("dense", "bm25"):
            x, y = min(latency[("before", method)]), min(latency[("after", method)])
            print(f"{method + ' p50 ms':24} {x:>11.1f} {y:>11.1f}   {y / x:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
