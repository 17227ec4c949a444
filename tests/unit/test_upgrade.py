"""Model upgrade without downtime and query drift compensation, with fake models (tasks.ingest.upgrade)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from storage.compensation import fit, fit_matrix
from storage.corpus_store import CorpusStore
from storage.models import publish
from storage.views import views_table
from tasks.ingest.index import reindex, whole
from tasks.ingest.upgrade import upgrade_model
from tasks.methods.search import Searcher
from tasks.settings import DEFAULT_MODEL
from tests.fakes import FakeEmbedder, make_docs, model_manifest
from tests.kill_target import instrument
from tests.upgrade_kill_target import DriftedEmbedder, upgrade_corpus

ROOT = Path(__file__).resolve().parents[2]
N = 48
QUERIES = {f"q{i}": f"term{i} wing" for i in range(12)}


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_both_fits_map_a_known_rotation_back():
    old = unit_rows(500, 16)
    rotation = np.linalg.qr(np.random.default_rng(3).standard_normal((16, 16)))[0]
    new = old @ rotation
    for method in ("lstsq", "procrustes"):
        drift = fit(new, old, "old", FakeEmbedder().space, method)
        assert cosines(drift.apply(new), old).min() > 0.999, method
        assert drift.cosine_after > 0.999 > drift.cosine_before  # held-out figures say what the map did
        assert np.allclose(drift.matrix, rotation.T, atol=1e-3), method


def test_least_squares_maps_a_general_linear_drift_back_and_procrustes_cannot():
    old = unit_rows(800, 12, seed=1)
    mixing = np.random.default_rng(2).standard_normal((12, 12))  # not orthogonal: stretches and shears
    new = old @ mixing
    assert cosines(fit(new, old, "o", FakeEmbedder().space, "lstsq").apply(new), old).min() > 0.999
    assert fit(new, old, "o", FakeEmbedder().space, "procrustes").cosine_after < 0.99


def test_a_map_between_spaces_of_other_dimensions_is_fit():
    old = unit_rows(400, 8, seed=4)
    new = np.hstack(
        [old @ np.linalg.qr(np.random.default_rng(5).standard_normal((8, 8)))[0], np.zeros((400, 4))]
    )
    drift = fit(new, old, "o", FakeEmbedder().space)  # 12 new dimensions into 8 old ones
    assert drift.matrix.shape == (12, 8) and np.isnan(drift.cosine_before)
    assert cosines(drift.apply(new), old).min() > 0.999


def test_a_fit_needs_pairs():
    with pytest.raises(ValueError, match="at least 2"):
        fit_matrix(np.zeros((1, 4)), np.zeros((1, 4)))


@pytest.fixture
def indexed(tmp_path) -> CorpusStore:
    """Corpus ``c``: :data:`N` documents indexed with the fake model (enough to span its 32 dimensions)."""
    store = CorpusStore(str(tmp_path / "db"))
    old = FakeEmbedder()
    reindex(store, "c", make_docs(N), old.space, lambda: old)
    return store


def searcher(store: CorpusStore, new: DriftedEmbedder | None = None) -> Searcher:
    """A searcher of ``c`` with the model of its active space, and the drifted one for compensation."""
    models = {m.space: m for m in (FakeEmbedder(), new or DriftedEmbedder())}
    active = store.registry.corpus("c").space
    return Searcher(store, "c", lambda: models[active], embedder_for=lambda space: models[space])


def search(store: CorpusStore, method: str, new: DriftedEmbedder | None = None):
    return searcher(store, new).search_batch(QUERIES, method, k=5)


def test_compensated_search_answers_with_the_new_model_from_the_old_index(indexed):
    before = search(indexed, "dense")
    with pytest.raises(LookupError, match="no model upgrade in progress"):
        search(indexed, "dense(compensate=true)")
    report = upgrade_corpus_only_map(indexed)
    assert not report.switched and report.cosine_after > 0.999
    assert indexed.registry.corpus("c").space == FakeEmbedder().space  # still the old model's index
    assert not indexed.views.exists("c", DriftedEmbedder().space)
    new = DriftedEmbedder()
    compensated = search(indexed, "dense(compensate=true)", new)
    assert set(new.as_queries) == set(QUERIES.values())  # the new model encoded the queries
    assert close(compensated, before)  # the map undid the drift (to rounding)
    texts = list(QUERIES.values())
    assert (
        cosines(searcher(indexed).compensated(texts), FakeEmbedder().encode(texts, queries=True)).min()
        > 0.999
    )


def close(a: dict[str, list[tuple[str, float]]], b: dict[str, list[tuple[str, float]]]) -> bool:
    """Each query's scores in ``a`` and ``b`` equal to 0.005 rank for rank (near ties may swap places)."""
    return a.keys() == b.keys() and all(
        np.allclose([s for _, s in a[q]], [s for _, s in b[q]], atol=5e-3) for q in a
    )


def upgrade_corpus_only_map(store: CorpusStore):
    new = DriftedEmbedder()
    return upgrade_model(store, "c", new.space, lambda: new, compensate_only=True)


def test_an_upgrade_builds_the_new_space_beside_the_old_and_switches(indexed):
    old_space, new_space = FakeEmbedder().space, DriftedEmbedder().space
    old_version = indexed.lance.version(views_table("c", old_space))
    before = search(indexed, "dense")
    report = upgrade_corpus(indexed)
    assert report.switched and report.rebuilt == N and report.resumed == 0 and not report.fit_reused
    info = indexed.registry.corpus("c")
    assert info.space == new_space and info.dim == 32
    assert indexed.lance.version(views_table("c", old_space)) == old_version  # the old index untouched
    old_ids = set(indexed.views.table("c", old_space).to_arrow()["view_id"].to_pylist())
    new_views = indexed.views.table("c", new_space).to_arrow()
    chunks = new_views.filter(new_views["kind"].to_numpy(zero_copy_only=False) == "chunk")
    assert set(chunks["view_id"].to_pylist()) == old_ids
    assert set(new_views["kind"].to_pylist()) == {"chunk", "title"}  # title views built in the new space
    assert not indexed.lance.exists("c__expanded")  # nor is the index the old space's d2q reads touched
    after = search(indexed, "dense")  # a rotation keeps cosines: the same scores in the new space
    assert close(after, before)
    again = upgrade_corpus(indexed)
    assert again.switched and again.old_space == again.new_space and again.chunks_encoded == 0  # no-op


class Stop(Exception):
    """Raised by an instrumented store call to stop a run there (in process)."""


def test_a_document_changed_before_the_switch_is_rebuilt_and_a_deleted_one_dropped(indexed):
    def stop_at_switch(number: int, name: str, side: str) -> None:
        if name == "registry.register":
            raise Stop

    with pytest.raises(Stop):  # the new space is built, the switch not made
        upgrade_corpus(instrument(CorpusStore(indexed.uri), stop_at_switch))
    old = FakeEmbedder()
    docs = make_docs(N - 1)  # then the source changes: d0 revised, the last one gone; in the old space
    docs[0] = dataclasses.replace(docs[0], text=docs[0].text + " revised")
    reindex(indexed, "c", docs, old.space, lambda: old)
    report = upgrade_corpus(indexed)
    assert (report.rebuilt, report.orphans, report.resumed) == (1, 1, N - 2)
    hashes = indexed.views.hashes("c", DriftedEmbedder().space)
    stored = indexed.documents.hashes("c")
    assert set(hashes) == set(stored) == {f"d{i}" for i in range(N - 1)}
    assert all(whole(hashes[d], stored[d]) for d in stored)


def call_names(tmp_path: Path, indexed_db: Path) -> list[str]:
    """The store calls of an upgrade, in order (traced on a copy)."""
    names: list[str] = []
    uri = str(tmp_path / "trace")
    shutil.copytree(indexed_db, uri)
    upgrade_corpus(
        instrument(CorpusStore(uri), lambda n, name, side: side == "before" and names.append(name))
    )
    return names


def test_a_killed_upgrade_leaves_the_old_model_serving_and_resumes_from_the_cache(indexed, tmp_path):
    db = Path(indexed.uri)
    before = search(indexed, "dense")
    names = call_names(tmp_path, db)
    register = len(names) - names[::-1].index("registry.register")  # the switch: the last registry write
    fit_done = names.index("drifts.put") + 1
    mid_build = [i for i, n in enumerate(names, start=1) if n == "views.put"][2]
    clean = str(tmp_path / "clean")
    shutil.copytree(db, clean)
    upgrade_corpus(CorpusStore(clean))
    expected = new_views(clean)
    for number, side in ((fit_done, "after"), (mid_build, "after"), (register, "before")):
        uri = str(tmp_path / f"killed-{number}-{side}")
        shutil.copytree(db, uri)
        proc = subprocess.run(
            [sys.executable, "-m", "tests.upgrade_kill_target", uri, str(number), side],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        store = CorpusStore(uri)
        assert store.registry.corpus("c").space == FakeEmbedder().space  # the old model still serves
        assert search(store, "dense") == before
        model = DriftedEmbedder()
        report = upgrade_corpus(store, model)
        assert report.switched and new_views(uri) == expected
        assert report.fit_reused  # every kill point is past the map's commit
        if number >= mid_build:  # documents and vectors done before the kill are not done again
            assert report.resumed > 0 and len(model.encoded) < len(
                CorpusStore(clean).views.table("c", model.space)
            )


def new_views(uri: str) -> list[dict]:
    table = CorpusStore(uri).views.table("c", DriftedEmbedder().space).to_arrow()
    return table.select(["view_id", "doc_id", "kind", "vector", "doc_hash"]).sort_by("view_id").to_pylist()


def test_ingest_with_another_model_moves_an_indexed_corpus_from_the_cli(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from flows.cli import app
    from tests.conftest import zsr_home_at

    def load(space, *args):  # the corpus's first model is the fake, any other one the drifted fake
        model = FakeEmbedder(space=space) if space.model == DEFAULT_MODEL else DriftedEmbedder()
        model.space = space
        return model

    monkeypatch.setattr("tasks.workspace.load_embedder", load)
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"_id": d.doc_id, "text": d.text}) + "\n" for d in make_docs(N)))
    staged = tmp_path / "staged"  # a version of the corpus's adapted models, published as `zsr adapt` does
    staged.mkdir()
    version = publish(staged, model_manifest("v1", "2026-01-01", corpus="k"), tmp_path / "home")

    def zsr(*args: str):
        result = CliRunner().invoke(app, list(args))
        return result, json.loads(result.stdout) if result.exit_code == 0 and "--json" in args else None

    with zsr_home_at(tmp_path / "home"):
        assert zsr("ingest", str(source), "--corpus", "k")[0].exit_code == 0
        refused, _ = zsr("ingest", str(source), "--corpus", "k", "--compensate-only")
        assert refused.exit_code != 0 and "add --model NEW" in refused.output
        _, mapped = zsr(
            "ingest", str(source), "--corpus", "k", "--model", "v1", "--compensate-only", "--json"
        )
        assert mapped["upgrade"]["switched"] is False and mapped["upgrade"]["cosine_after"] > 0.99
        store = CorpusStore(str(tmp_path / "home" / "lancedb"))
        assert store.registry.corpus("k").space.model == DEFAULT_MODEL
        _, found = zsr("search", "term3 wing", "--corpus", "k", "-m", "dense(compensate=true)", "--json")
        assert found["hits"][0]["doc_id"] == "d3"
        _, moved = zsr("ingest", str(source), "--corpus", "k", "--model", "v1", "--json")
        assert moved["upgrade"]["switched"] and moved["upgrade"]["fit_reused"]
        assert store.registry.corpus("k").space.model == str(version)
        _, again = zsr("ingest", str(source), "--corpus", "k", "--json")  # no --model: the corpus's new one
        assert again["upgrade"] is None and again["unchanged"] == N
