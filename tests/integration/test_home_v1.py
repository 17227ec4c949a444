"""A home written by the previous format, migrated, then searched and evaluated with the real model: the
archived runs' rankings and metrics come back exactly (``tests/unit/test_home_format.py`` covers the rest)."""

from __future__ import annotations

import duckdb
import pytest

from storage.corpus_store import CorpusStore
from storage.home import check_format, migrate
from storage.warehouse import Warehouse
from tasks.evaluation.runs import evaluate_methods
from tasks.evaluation.testsets import load
from tasks.ingest.embed import installed_space, load_embedder
from tasks.methods.search import Searcher
from tests.home_fixture import unpack_home_v1

pytestmark = pytest.mark.slow
METHODS = ("dense", "bm25", "multiview")


def test_a_migrated_home_searches_and_evaluates_as_before(tmp_path):
    home, _ = unpack_home_v1(tmp_path)
    migrate(home, space_of=installed_space)
    check_format(home)
    archived = duckdb.sql(
        f"SELECT r.method, r.depth, k.query_id, k.doc_id, k.score, m.measure, m.value "
        f"FROM read_parquet('{home.warehouse}/runs/*.parquet') r "
        f"JOIN read_parquet('{home.warehouse}/rankings/*.parquet') k USING (run_id) "
        f"JOIN read_parquet('{home.warehouse}/metrics/*.parquet') m USING (run_id) "
        "ORDER BY r.method, k.query_id, k.rank"
    ).fetchall()
    depth = {method: d for method, d, *_ in archived}
    metrics = {(method, measure): value for method, _, _, _, _, measure, value in archived}
    store = CorpusStore(home.lancedb)
    space = store.registry.corpus("tiny").space
    searcher = Searcher(store, "tiny", lambda: load_embedder(space))  # refused if the model's files differ
    testset = load(home.testsets, "tiny", "human")

    for method in METHODS:
        stored: dict[str, list[tuple[str, float]]] = {}
        for m, _, query_id, doc_id, score, measure, _ in archived:
            if m == method and measure == "nDCG@10":  # one row per ranked document
                stored.setdefault(query_id, []).append((doc_id, score))
        ranked = searcher.search_batch(testset.queries, method, depth[method])
        assert ranked.keys() == stored.keys()
        for query_id, hits in ranked.items():
            assert [d for d, _ in hits] == [d for d, _ in stored[query_id]], (method, query_id)
            expected = [s for _, s in stored[query_id]]
            assert [s for _, s in hits] == pytest.approx(expected, abs=1e-6), (method, query_id)

    runs = evaluate_methods(searcher, testset, list(METHODS), Warehouse(home.warehouse))
    for run in runs:
        assert run.metrics == {m: metrics[(run.method, m)] for m in run.metrics}, run.method
