"""Home format 3 (typed metadata for ``--where``): a format-2 home is refused untouched, then migrated in
place (killed anywhere, run again) with its metadata intact and filterable, its vectors and rankings kept.

The home is ``tests/fixtures/home-v2.tar.gz``, written by the format-2 zsr (see ``tests/home_fixture.py``).
No model is needed: bm25 encodes nothing, and dense search is checked with stand-in query vectors of the
model's dimension (which documents a filter lets through does not depend on the query).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from storage.corpus_store import CorpusStore
from storage.home import FORMAT_VERSION, HomeFormatError, check_format, migrate, recorded_format
from storage.metadata import FilterError
from tasks.ingest.embed import installed_space
from tasks.ingest.index import reindex
from tasks.ingest.sources import read_source
from tasks.methods.search import Searcher
from tests.fakes import FakeEmbedder
from tests.home_fixture import tree, unpack_home_v2
from tests.unit.test_home_format import Killed, no_model, state

MINILM = installed_space("all-MiniLM-L6-v2", "", "")
NASA = ["a1", "a2", "a4", "a7"]


def stand_in() -> FakeEmbedder:
    return FakeEmbedder(dim=384, space=MINILM)


def without_metadata_columns(table: Any) -> list[dict[str, Any]]:
    return sorted(
        (
            {k: v for k, v in row.items() if not k.startswith("meta__") and k != "vector"}
            for row in table.to_arrow().to_pylist()
        ),
        key=lambda r: json.dumps(r, sort_keys=True, default=str),
    )


def test_a_format_2_home_is_refused_and_left_as_it_was(tmp_path):
    home, _ = unpack_home_v2(tmp_path)
    before = tree(tmp_path)
    with pytest.raises(
        HomeFormatError, match=r"written by zsr format 2; this zsr reads format 3.*`zsr migrate`"
    ):
        check_format(home)
    assert tree(tmp_path) == before


def test_migrating_a_format_2_home_makes_its_metadata_filterable(tmp_path):
    home, source = unpack_home_v2(tmp_path)
    db = CorpusStore(home.lancedb).lance.db
    names = sorted(db.list_tables().tables)
    old = {name: without_metadata_columns(db.open_table(name)) for name in names}

    report = migrate(home, space_of=installed_space)
    assert report.found == 2 and recorded_format(home) == FORMAT_VERSION == 3
    assert report.actions == [
        "left volume of tiny unfilterable: their stored values differ in type",
        "added the metadata columns of lang, pages, source, year to tiny__documents",
        "added the metadata columns of lang, pages, source, year to tiny__views__ebcf0a720c14614f",
        "added the metadata columns of lang, pages, source, year to tiny__expanded",
    ]
    check_format(home)
    assert sorted(db.list_tables().tables) == names
    assert {name: without_metadata_columns(db.open_table(name)) for name in names} == old  # nothing lost
    store = CorpusStore(home.lancedb)
    assert {k: str(t) for k, t in store.documents.metadata_fields("tiny").items()} == {
        "lang": "string", "pages": "double", "source": "string", "year": "int64"
    }  # fmt: skip
    documents = store.documents.fetch("tiny", ["a1", "a6", "a7"], ["doc_id", "meta__year", "meta__pages"])
    assert sorted((r["doc_id"], r["meta__year"], r["meta__pages"]) for r in documents) == [
        ("a1", 1958, None), ("a6", 1961, 12.5), ("a7", 1964, 30.0)
    ]  # fmt: skip

    for method in ("bm25", "dense", "multiview", "d2q"):
        searcher = Searcher(store, "tiny", stand_in, where="source = 'nasa' AND year >= 1960")
        assert sorted(d for d, _ in searcher.search("shock flow heat wing pressure", method, 3)) == [
            "a2",
            "a4",
            "a7",
        ], method
        found = Searcher(store, "tiny", stand_in, where="source = 'nasa'").search(
            "boundary shock heat wing", method, 10
        )
        assert sorted(d for d, _ in found) == NASA, method
    with pytest.raises(FilterError, match="unknown metadata key 'volume'"):
        Searcher(store, "tiny", no_model, where="volume = 3")

    # migrating again changes nothing, and re-ingesting the source finds nothing to do (nothing encoded)
    before = tree(tmp_path)
    assert migrate(home, space_of=installed_space).actions == []
    done = reindex(store, "tiny", read_source(source / "docs.jsonl").documents, MINILM, no_model)
    assert (done.added, done.changed, done.deleted, done.repaired, done.unchanged) == (0, 0, 0, 0, 8)
    assert tree(tmp_path) == before


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> dict[str, Any]:
    home, _ = unpack_home_v2(tmp_path_factory.mktemp("through"))
    migrate(home, space_of=installed_space)
    return state(home)


@pytest.mark.parametrize("steps", range(1, 4))
def test_a_migration_killed_after_any_step_ends_as_one_that_ran_through(tmp_path, migrated, steps):
    home, _ = unpack_home_v2(tmp_path)
    done: list[str] = []

    def kill_after(action: str) -> None:
        done.append(action)
        if len(done) == steps + 1:  # the first action is a note; the kills land after each merge
            raise Killed(action)

    with pytest.raises(Killed):
        migrate(home, space_of=installed_space, progress=kill_after)
    with pytest.raises(HomeFormatError, match="zsr migrate"):  # half a migration is never read
        check_format(home)
    again = migrate(home, space_of=installed_space)
    assert not set(again.actions[1:]) & set(done[1:])  # a table merged is not merged again
    assert state(home) == migrated
