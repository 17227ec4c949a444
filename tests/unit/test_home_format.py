"""Home format 2: a format-1 home is refused untouched, migrated in place (killed anywhere, run again), then
read as before. The real model is not needed: a space's revision is read from the model's files, and bm25
and the re-ingest of an unchanged source encode nothing (``tests/integration/test_home_v1.py`` searches
and evaluates with the model)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from lancedb.index import IvfHnswSq

from storage.corpus_store import CorpusStore
from storage.embedding_cache import cache_table
from storage.home import FORMAT_VERSION, Home, HomeFormatError, check_format, migrate, recorded_format
from storage.ids import content_hash
from storage.registry import REGISTRY, OutdatedRegistryError
from storage.vector_space import ROLES, VectorSpace, space_of
from storage.views import views_table
from tasks.evaluation.testsets import load
from tasks.ingest.embed import installed_space
from tasks.ingest.index import reindex
from tasks.ingest.sources import read_source
from tasks.methods.search import Searcher
from tests.fakes import FakeEmbedder, make_docs
from tests.home_fixture import tree, unpack_home_v1
from tests.kill_target import instrument

MINILM = installed_space("all-MiniLM-L6-v2", "", "")  # the model and prefixes the archived home used


class Killed(Exception):
    """Stands in for a kill between two steps of a migration."""


def no_model() -> FakeEmbedder:
    raise AssertionError("nothing should be embedded")


def rows(table: Any) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in table.to_arrow().to_pylist())


def state(home: Home) -> dict[str, Any]:
    """Every table (schema, its metadata, rows, indexes) and the format record."""
    db = CorpusStore(home.lancedb).lance.db
    out: dict[str, Any] = {"format": recorded_format(home)}
    for name in sorted(db.list_tables().tables):
        table = db.open_table(name)
        indexes = sorted(i.index_type for i in table.list_indices())
        out[name] = (table.schema, table.schema.metadata, rows(table), indexes)
    return out


def stored_rankings(home: Home, method: str) -> dict[str, list[tuple[str, float]]]:
    """The rankings of the archived run of ``method``, from the warehouse's Parquet files."""
    found = duckdb.sql(
        f"SELECT k.query_id, k.doc_id, k.score FROM read_parquet('{home.warehouse}/rankings/*.parquet') k "
        f"JOIN read_parquet('{home.warehouse}/runs/*.parquet') r USING (run_id) "
        "WHERE r.method = ? ORDER BY k.query_id, k.rank",
        params=[method],
    ).fetchall()
    out: dict[str, list[tuple[str, float]]] = {}
    for query_id, doc_id, score in found:
        out.setdefault(query_id, []).append((doc_id, score))
    return out


def test_a_format_1_home_is_refused_and_left_as_it_was(tmp_path):
    home, source = unpack_home_v1(tmp_path)
    before = tree(tmp_path)
    with pytest.raises(HomeFormatError, match=r"written by zsr format 1.*`zsr migrate`.*`cp -a "):
        check_format(home)
    store = CorpusStore(home.lancedb)  # read without the check: refused as well, never misread
    with pytest.raises(OutdatedRegistryError, match=r"zsr format 1.*zsr migrate"):
        store.registry.corpus("tiny")
    with pytest.raises(OutdatedRegistryError):
        reindex(store, "tiny", read_source(source).documents, MINILM, no_model)
    assert tree(tmp_path) == before


def test_migrating_a_format_1_home_files_every_vector_under_its_space(tmp_path):
    home, source = unpack_home_v1(tmp_path)
    db = CorpusStore(home.lancedb).lance.db
    old_views = rows(db.open_table("tiny__views"))
    old_cache = rows(db.open_table(f"embedcache__{content_hash('all-MiniLM-L6-v2', '')[:16]}"))

    report = migrate(home, space_of=installed_space)
    assert report.found == 1 and len(report.actions) == 6
    assert recorded_format(home) == FORMAT_VERSION
    check_format(home)
    store = CorpusStore(home.lancedb)
    info = store.registry.corpus("tiny")
    assert (info.space, info.dim, info.source) == (MINILM, 384, "/tmp/v1/src")
    kept = ["tiny__documents", "tiny__expanded", "tiny__synthetic_queries", REGISTRY]
    caches = [cache_table(MINILM, role) for role in ROLES]
    assert sorted(store.lance.names()) == sorted([*kept, views_table("tiny", MINILM), *caches])
    views = store.views.table("tiny", MINILM)
    assert rows(views) == old_views and space_of(views.schema) == MINILM
    for name in caches:  # both roles had one table: format 1 keyed the cache by the prefix, "" for both
        assert rows(db.open_table(name)) == old_cache and space_of(db.open_table(name).schema) == MINILM

    # bm25 reads tables the migration left alone; the archived run's rankings come back exactly
    testset = load(home.testsets, "tiny", "human")
    searcher = Searcher(store, "tiny", no_model)
    assert searcher.search_batch(testset.queries, "bm25", 100) == stored_rankings(home, "bm25")

    # migrating again changes nothing, and re-ingesting the source finds nothing to do (nothing encoded)
    before = tree(tmp_path)
    assert migrate(home, space_of=installed_space).actions == []
    done = reindex(store, "tiny", read_source(source).documents, info.space, no_model)
    assert (done.added, done.changed, done.deleted, done.repaired, done.unchanged) == (0, 0, 0, 0, 8)
    assert tree(tmp_path) == before


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> dict[str, Any]:
    home, _ = unpack_home_v1(tmp_path_factory.mktemp("through"))
    migrate(home, space_of=installed_space)
    return state(home)


@pytest.mark.parametrize("steps", range(1, 6))
def test_a_migration_killed_after_any_step_ends_as_one_that_ran_through(tmp_path, migrated, steps):
    home, _ = unpack_home_v1(tmp_path)
    done: list[str] = []

    def kill_after(action: str) -> None:
        done.append(action)
        if len(done) == steps:
            raise Killed(action)

    with pytest.raises(Killed):
        migrate(home, space_of=installed_space, progress=kill_after)
    with pytest.raises(HomeFormatError, match="zsr migrate"):  # half a migration is never read
        check_format(home)
    again = migrate(home, space_of=installed_space)
    assert state(home) == migrated
    assert not set(again.actions) & set(done[: min(steps, 3)])  # finished copies are not made again


def test_a_copy_killed_before_its_commit_is_made_again(tmp_path, migrated):
    home, _ = unpack_home_v1(tmp_path)
    lancedb = Path(home.lancedb)
    target = lancedb / f"{views_table('tiny', MINILM)}.lance"
    shutil.copytree(lancedb / "tiny__views.lance", target)
    shutil.rmtree(target / "_versions")  # its data files landed, its commit did not: listed, unreadable
    assert migrate(home, space_of=installed_space).actions[0] == f"copied tiny__views to {target.stem}"
    assert state(home) == migrated


def test_a_new_home_is_recorded_and_a_newer_one_refused(tmp_path, fake):
    def home_at(root: Path) -> Home:
        return Home(root, str(root / "lancedb"), root / "warehouse", root / "testsets")

    new = home_at(tmp_path / "new")
    check_format(new)
    assert json.loads((new.root / "format.json").read_text()) == {"format": FORMAT_VERSION}

    # tables this zsr wrote before anyone checked the home (a library user) are taken as current
    library = home_at(tmp_path / "library")
    reindex(CorpusStore(library.lancedb), "c", make_docs(3), fake.space, lambda: fake)
    check_format(library)
    assert recorded_format(library) == FORMAT_VERSION
    assert migrate(library, space_of=installed_space).actions == []

    (new.root / "format.json").write_text(json.dumps({"format": FORMAT_VERSION + 1}))
    before = tree(new.root)
    with pytest.raises(HomeFormatError, match=rf"format {FORMAT_VERSION + 1}, newer .* upgrade zsr"):
        check_format(new)
    with pytest.raises(HomeFormatError, match="upgrade zsr"):
        migrate(new, space_of=installed_space)
    assert tree(new.root) == before


# -- a format-1 database with more in it than the archive: corpora sharing a space, another prefix, an ANN
# -- index, an unused cache table and the views of a corpus whose first ingest never registered it
def v1_cache(model: str, prefix: str) -> str:
    return f"embedcache__{content_hash(model, prefix)[:16]}"


def fake_space(model: str, query_prefix: str, passage_prefix: str) -> VectorSpace:
    return VectorSpace(model, "fake", "fake", query_prefix, passage_prefix)


def home_of(store: CorpusStore) -> Home:
    root = Path(store.uri).parent
    return Home(root, store.uri, root / "warehouse", root / "testsets")


def to_format_1(store: CorpusStore) -> None:
    """Rewrite the store's tables as format 1 laid them out (the inverse of the migration, for the test)."""
    db = store.lance.db
    infos = store.registry.corpora()
    v1_rows = [{**dataclasses.asdict(i), **dataclasses.asdict(i.space)} for i in infos]
    v1_registry = pa.schema(
        [(f, pa.string()) for f in ("name", "model", "query_prefix", "passage_prefix")]
        + [("dim", pa.int32()), ("source", pa.string())]
        + [(f, pa.timestamp("us", tz="UTC")) for f in ("created_at", "updated_at")]
    )
    db.create_table(REGISTRY, pa.Table.from_pylist(v1_rows, v1_registry), mode="overwrite")
    for info in infos:
        if views_table(info.name, info.space) not in db.list_tables().tables:
            continue  # its first ingest stopped before any view was written
        views = db.open_table(views_table(info.name, info.space))
        old = db.create_table(f"{info.name}__views", views.to_arrow().replace_schema_metadata(None))
        if views.list_indices():
            old.create_index("vector", config=IvfHnswSq(distance_type="cosine"))
        for role in ROLES:
            if cache_table(info.space, role) not in db.list_tables().tables:
                continue  # no text of this role was ever embedded in the space
            cached = db.open_table(cache_table(info.space, role)).to_arrow().replace_schema_metadata(None)
            name = v1_cache(info.space.model, info.space.prefix(role))
            if name not in db.list_tables().tables:
                db.create_table(name, schema=cached.schema)
            db.open_table(name).merge_insert("content_hash").when_not_matched_insert_all().execute(cached)
    for name in db.list_tables().tables:
        if "__views__" in name or (name.startswith("embedcache__") and name.count("__") == 2):
            db.drop_table(name)


def test_every_corpus_of_a_format_1_database_keeps_its_vectors_and_rankings(tmp_store, fake):
    spaces = {
        "a": fake.space,
        "b": fake.space,  # shares a's space, so its cache tables too
        "p": dataclasses.replace(fake.space, passage_prefix="passage: "),
    }
    for corpus, space in spaces.items():
        embedder = FakeEmbedder(space=space)
        docs = make_docs(300 if corpus == "a" else 6, prefix=corpus)
        reindex(tmp_store, corpus, docs, space, lambda e=embedder: e, ann_min_rows=256)
    assert tmp_store.views.table("a", fake.space).list_indices()  # a has an ANN index
    embedder_of = {c: FakeEmbedder(space=s) for c, s in spaces.items()}
    queries = {"q1": "term5 wing", "q2": "boundary layer heat"}
    exact = ("b", "p")  # searched without an ANN index, so rankings must come back exactly
    expected = {c: Searcher(tmp_store, c, lambda c=c: embedder_of[c]).search_batch(queries) for c in exact}
    views = {c: rows(tmp_store.views.table(c, s)) for c, s in spaces.items()}
    infos = tmp_store.registry.corpora()
    to_format_1(tmp_store)
    db = tmp_store.lance.db
    unused = db.open_table(v1_cache("fake-bow", "p: ")).to_arrow()
    db.create_table(v1_cache("a-model-no-corpus-uses", ""), unused)
    db.create_table("z__views", db.open_table("b__views").to_arrow())  # z was never registered

    report = migrate(home_of(tmp_store), space_of=fake_space)
    assert {
        f"built the ANN index of {views_table('a', fake.space)}",
        f"dropped {v1_cache('a-model-no-corpus-uses', '')}",
        "dropped z__views",
    } <= set(report.actions)
    store = CorpusStore(tmp_store.uri)
    assert store.registry.corpora() == infos
    assert {c: rows(store.views.table(c, s)) for c, s in spaces.items()} == views
    indices = store.views.table("a", fake.space).list_indices()
    assert sorted(i.columns for i in indices) == [["kind"], ["vector"]]  # ANN, and the kind prefilter's
    assert {
        c: Searcher(store, c, lambda c=c: embedder_of[c]).search_batch(queries) for c in exact
    } == expected
    passages = {s.key: rows(db.open_table(cache_table(s, "passage"))) for s in spaces.values()}
    assert passages[fake.space.key] != passages[spaces["p"].key]  # each space its own vectors
    done = reindex(store, "b", make_docs(6, prefix="b"), fake.space, no_model)
    assert (done.unchanged, done.repaired) == (6, 0)


def test_a_format_1_registry_alone_is_format_1(tmp_store, fake):
    def stop(number: int, name: str, side: str) -> None:
        if (name, side) == ("cache.put", "before"):  # registered, nothing embedded or written yet
            raise Killed(name)

    with pytest.raises(Killed):
        reindex(instrument(tmp_store, stop), "s", make_docs(3), fake.space, lambda: fake)
    to_format_1(CorpusStore(tmp_store.uri))
    assert CorpusStore(tmp_store.uri).lance.names() == ["corpora", "s__documents"]
    with pytest.raises(HomeFormatError, match="format 1"):
        check_format(home_of(tmp_store))
    migrate(home_of(tmp_store), space_of=fake_space)
    assert CorpusStore(tmp_store.uri).registry.incomplete("s") == "its views table is missing"
