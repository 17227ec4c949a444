"""A re-index killed with SIGKILL at any point, then run again, ends with the tables of a clean run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.corpus_store import CorpusStore
from tests.fakes import make_docs

ROOT = Path(__file__).resolve().parents[2]


def write_source(path: Path, docs) -> Path:
    with path.open("w") as out:
        for d in docs:
            out.write(
                json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text, "metadata": d.metadata}) + "\n"
            )
    return path


def index(uri: str, source: Path, delay: float = 0.0, step: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.kill_target",
            uri,
            str(source),
            str(delay),
            *(["step"] if step else []),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.rstrip().endswith("done"), out


def snapshot(uri: str) -> dict[str, list]:
    store = CorpusStore(uri)
    docs = store.documents("c").to_arrow().drop_columns(["ingested_at"]).sort_by("doc_id").to_pylist()
    views = store.views("c", 32).to_arrow().sort_by("view_id").to_pylist()
    return {"documents": docs, "views": views, "fts": [store.has_fts("c")]}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("src")
    base = make_docs(20)
    edited = [
        d if i % 3 else type(d)(d.doc_id, d.title, d.text + " revised", d.metadata)
        for i, d in enumerate(base)
    ]
    v2 = edited[4:] + make_docs(6, prefix="n")  # 4 deleted, 6 added, 5 changed
    return write_source(folder / "v1.jsonl", base), write_source(folder / "v2.jsonl", v2)


@pytest.fixture(scope="module")
def expected(sources, tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("clean") / "db")
    finish(index(uri, sources[0]))
    finish(index(uri, sources[1]))
    return snapshot(uri)


# v2 re-indexes 11 documents in 6 batches of 2. The child waits for a go after each batch, so it cannot
# run ahead of the test; the kills land in the next encode, in a write, and in the deletions and index
# rebuild that follow the last batch.
@pytest.mark.parametrize(("batches_before_kill", "pause"), [(1, 0.07), (3, 0.16), (6, 0.0)])
def test_killed_reindex_converges_to_a_clean_run(sources, expected, tmp_path, batches_before_kill, pause):
    uri = str(tmp_path / "db")
    finish(index(uri, sources[0]))
    proc = index(uri, sources[1], delay=0.15, step=True)
    for _ in range(batches_before_kill):
        line = proc.stdout.readline()
        assert line.startswith("batch"), line
        proc.stdin.write("go\n")
        proc.stdin.flush()
    time.sleep(pause)
    os.kill(proc.pid, signal.SIGKILL)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL and "done" not in rest
    if batches_before_kill < 6:
        assert snapshot(uri) != expected  # the kill really left the run unfinished
    finish(index(uri, sources[1]))
    assert snapshot(uri) == expected
    # and a further run finds nothing to do
    before = CorpusStore(uri).versions("c")
    finish(index(uri, sources[1]))
    assert CorpusStore(uri).versions("c") == before
