"""A re-index killed with SIGKILL at any write boundary, then run again, ends with the tables of a clean run.

The boundaries are derived, not written down: an instrumented run of the v2 re-index records which store
calls change a table version, and the test kills a child process right before the first of them and right
after each one. After each kill it checks that the kill interrupted something (or came after the last
write), that running v2 again gives exactly the clean v2 tables and then writes nothing more, and that
ingesting v1 instead gives exactly the clean v1 tables.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from storage.corpus_store import CorpusStore
from storage.types import Document
from tests.fakes import FakeEmbedder, make_docs
from tests.kill_target import instrument, reindex_source

ROOT = Path(__file__).resolve().parents[2]
LONG = " ".join(f"span{i}" for i in range(30))  # several chunks with the fake model's 16-token window


def write_source(path: Path, docs: list[Document]) -> Path:
    with path.open("w") as out:
        for d in docs:
            out.write(
                json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text, "metadata": d.metadata}) + "\n"
            )
    return path


def write_sources(folder: Path) -> tuple[Path, Path]:
    """v1, and v2: one deleted, one edited, one with new metadata only, one with fewer chunks, one new."""
    base = make_docs(6)
    base[3] = dataclasses.replace(base[3], text=LONG)
    v2 = [
        dataclasses.replace(base[1], text=base[1].text + " revised"),
        dataclasses.replace(base[2], metadata={"n": 2, "edited": True}),
        dataclasses.replace(base[3], text=" ".join(LONG.split()[:20])),
        *base[4:],
        Document("n0", "fresh", "nozzle exhaust plume noise", {"n": 100}),
    ]
    return write_source(folder / "v1.jsonl", base), write_source(folder / "v2.jsonl", v2)


def table_versions(uri: str) -> dict[str, int]:
    """Version of every table in the database (the corpus tables, the registry and the embedding cache)."""
    db = CorpusStore(uri).lance.db
    return {name: db.open_table(name).version for name in db.list_tables().tables}


def snapshot(uri: str) -> dict[str, Any]:
    store = CorpusStore(uri)
    docs = store.documents.table("c").to_arrow().drop_columns(["ingested_at"]).sort_by("doc_id").to_pylist()
    views = store.views.table("c", FakeEmbedder().space).to_arrow().sort_by("view_id").to_pylist()
    fts = store.documents.has_fts("c")
    bm25 = (
        sorted((d, round(s, 5)) for d, s in store.search.fts("c", "wing revised span3", 50)) if fts else None
    )
    return {"documents": docs, "views": views, "fts": fts, "bm25": bm25}


class Call(NamedTuple):
    number: int
    name: str
    commits: int  # LanceDB commits the call made, over all tables

    @property
    def writes(self) -> bool:
        return self.commits > 0


def trace_v2(folder: Path) -> list[Call]:
    """Every top-level store call of the v2 re-index over a v1 index, and whether it changed a table."""
    v1, v2 = write_sources(folder)
    uri = str(folder / "trace")
    reindex_source(CorpusStore(uri), v1)
    calls: list[Call] = []
    seen: dict[int, dict[str, int]] = {}

    def hook(number: int, name: str, side: str) -> None:
        if side == "before":
            seen[number] = table_versions(uri)
        else:
            after = table_versions(uri)
            calls.append(Call(number, name, sum(v - seen[number].get(t, 0) for t, v in after.items())))

    reindex_source(instrument(CorpusStore(uri), hook), v2)
    return calls


def kill_points(calls: list[Call]) -> list[tuple[int, str, str]]:
    """Right before the first write and right after each write: one kill per distinct on-disk state.

    Between two writes only reads run, so "after write k" and "before write k+1" leave the same tables.
    """
    writes = [c for c in calls if c.writes]
    return [(writes[0].number, "before", writes[0].name)] + [(c.number, "after", c.name) for c in writes]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kill_at" in metafunc.fixturenames:
        with tempfile.TemporaryDirectory() as tmp:
            points = kill_points(trace_v2(Path(tmp)))
        metafunc.parametrize("kill_at", points, ids=[f"{side}-{n}-{name}" for n, side, name in points])


class World(NamedTuple):
    v1: Path
    v2: Path
    v1_db: Path
    clean_v1: dict[str, Any]
    clean_v2: dict[str, Any]
    last_write: int


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    folder = tmp_path_factory.mktemp("src")
    v1, v2 = write_sources(folder)
    v1_db = folder / "v1db"
    reindex_source(CorpusStore(str(v1_db)), v1)
    clean = folder / "clean"
    shutil.copytree(v1_db, clean)
    reindex_source(CorpusStore(str(clean)), v2)
    calls = trace_v2(tmp_path_factory.mktemp("trace"))
    assert sum(c.writes for c in calls) >= 8  # the v2 run has several batches of writes to interrupt
    # One commit per writing call: killing between store calls then reaches every commit boundary.
    assert [c for c in calls if c.commits > 1] == []
    last = max(c.number for c in calls if c.writes)
    return World(v1, v2, v1_db, snapshot(str(v1_db)), snapshot(str(clean)), last)


def run_to_the_end(uri: str, source: Path, expected: dict[str, Any]) -> None:
    """Re-index ``source`` in process: it must give ``expected``, and a further run must write nothing."""
    reindex_source(CorpusStore(uri), source)
    assert snapshot(uri) == expected
    before = table_versions(uri)
    reindex_source(CorpusStore(uri), source)
    assert table_versions(uri) == before


def test_killed_reindex_converges_to_a_clean_run(world, kill_at, tmp_path):
    number, side, name = kill_at
    uri = str(tmp_path / "db")
    shutil.copytree(world.v1_db, uri)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.kill_target", uri, str(world.v2), str(number), side],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.splitlines()[-1] == f"call {number} {name}"  # killed at the traced call
    killed = snapshot(uri)
    if side == "after" and number == world.last_write:
        assert killed == world.clean_v2  # past the last write: nothing was left to interrupt
    else:
        assert killed != world.clean_v2  # the kill really left the run unfinished
    back = str(tmp_path / "back")
    shutil.copytree(uri, back)
    run_to_the_end(back, world.v1, world.clean_v1)  # going back to v1 undoes the half-done v2 exactly
    run_to_the_end(uri, world.v2, world.clean_v2)
