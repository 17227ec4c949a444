from __future__ import annotations

import numpy as np
import pytest

import storage.search
from storage.ann import IndexChoice, choose_index, search_with
from storage.corpus_store import CorpusStore
from tasks.ingest.index import reindex
from tests.fakes import FakeEmbedder, make_docs

SIZES = (256, 5_000, 99_999, 100_000, 250_000, 1_000_000, 10_000_000)


@pytest.mark.parametrize("dim", [32, 384, 768, 1024])
@pytest.mark.parametrize("rows", SIZES)
def test_the_choice_builds_and_searches_at_every_size(rows, dim):
    choice = choose_index(rows, dim)
    config = choice.config()  # LanceDB accepts the type and its parameters
    assert config.distance_type == "cosine"
    assert 1 <= choice.params.get("num_partitions", 1) <= rows // 256 or rows < 512
    if "num_sub_vectors" in choice.params:
        assert dim % choice.params["num_sub_vectors"] == 0
    if "ef" in choice.knobs:  # LanceDB refuses an ef below the candidates it must return
        assert choice.knobs["ef"] >= 10 * choice.knobs.get("refine_factor", 1)
    assert choice.knobs.get("nprobes", 1) <= choice.params.get("num_partitions", 1)


def test_partitions_grow_with_the_corpus():
    parts = [choose_index(rows, 384).params.get("num_partitions", 1) for rows in SIZES]
    assert parts == sorted(parts) and parts[-1] > parts[0]


def test_search_with_sets_each_knob():
    calls = []

    class Query:
        def __getattr__(self, name):
            return lambda value: calls.append((name, value)) or self

    search_with(Query(), {"nprobes": 3, "refine_factor": 5})
    assert calls == [("nprobes", 3), ("refine_factor", 5)]


def index_of(store: CorpusStore, fake: FakeEmbedder) -> dict:
    table = store.views.table("c", fake.space)
    (index,) = [i for i in table.list_indices() if i.columns == ["vector"]]
    return table.to_lance().stats.index_stats(index.name)


def test_a_table_past_the_threshold_gets_the_chosen_index_and_its_knobs(tmp_store, fake, monkeypatch):
    reindex(tmp_store, "c", make_docs(3_000), fake.space, lambda: fake, ann_min_rows=1_000)
    table = tmp_store.views.table("c", fake.space)
    chosen = choose_index(table.count_rows(), fake.dim)
    stats = index_of(tmp_store, fake)
    assert stats["index_type"] == chosen.index
    (built,) = stats["indices"]
    assert built["num_partitions"] == chosen.params.get("num_partitions", built["num_partitions"])
    for name in ("m", "ef_construction"):
        if name in chosen.params:
            assert built["sub_index"]["params"][name] == chosen.params[name]
    if "num_sub_vectors" in chosen.params:
        assert built["sub_index"]["num_sub_vectors"] == chosen.params["num_sub_vectors"]
    # the kind prefilter of every dense search reads an index, not the whole column
    assert [i.index_type for i in table.list_indices() if i.columns == ["kind"]] == ["Bitmap"]

    applied = []
    monkeypatch.setattr(
        storage.search, "search_with", lambda q, knobs: applied.append(knobs) or search_with(q, knobs)
    )
    stored = table.search().where("kind = 'chunk'").select(["doc_id", "vector"]).limit(40).to_list()
    hits = tmp_store.search.dense("c", fake.space, np.array([r["vector"] for r in stored], np.float32), 10)
    assert applied == [chosen.knobs]
    # each query is a stored vector: the exact top hit is at cosine 1 (its document, or one of the same words)
    assert [h[0][1] for h in hits] == [pytest.approx(1.0, abs=1e-3)] * len(stored)


def test_growth_into_another_index_type_rebuilds(tmp_store, fake, monkeypatch):
    first, later = (
        IndexChoice("IVF_FLAT", {"num_partitions": 2}),
        IndexChoice("IVF_SQ", {"num_partitions": 2}),
    )
    monkeypatch.setattr("storage.views.choose_index", lambda rows, dim: first if rows < 2_000 else later)
    reindex(tmp_store, "c", make_docs(1_200), fake.space, lambda: fake, ann_min_rows=1_000)
    assert index_of(tmp_store, fake)["index_type"] == "IVF_FLAT"
    reindex(tmp_store, "c", make_docs(2_400), fake.space, lambda: fake, ann_min_rows=1_000)
    assert index_of(tmp_store, fake)["index_type"] == "IVF_SQ"
