from __future__ import annotations

import pytest

from tasks.methods.base import rank
from tasks.methods.first_stage import HybridParams, rrf, score_fusion
from tasks.methods.registry import parse_method
from tasks.methods.search import fts_query


def test_rank_breaks_ties_on_doc_id():
    assert rank({"b": 1.0, "a": 1.0, "c": 2.0}) == [("c", 2.0), ("a", 1.0), ("b", 1.0)]
    assert rank({"b": 1.0, "a": 1.0, "c": 2.0}, k=2) == [("c", 2.0), ("a", 1.0)]


def test_rrf_matches_the_formula():
    fused = rrf([[("a", 9.0), ("b", 1.0)], [("b", 5.0), ("c", 4.0)]], weights=(1.0, 2.0), k=60)
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 2 / 61)
    assert fused["c"] == pytest.approx(2 / 62)


def test_score_fusion_min_max_normalises_each_ranking():
    fused = score_fusion([[("a", 10.0), ("b", 0.0)], [("b", 0.9), ("c", 0.5)]], weights=(0.5, 0.5))
    assert fused == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.0})


def test_parse_method_names_and_params():
    method = parse_method("hybrid(fusion=rrf, dense_weight=0.7, rrf_k=10)")
    assert isinstance(method.params, HybridParams)
    assert (method.params.fusion, method.params.dense_weight, method.params.rrf_k) == ("rrf", 0.7, 10)
    assert str(method) == "hybrid(dense_weight=0.7, fusion=rrf, rrf_k=10)"
    assert str(parse_method("dense")) == "dense"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("colbert", "unknown method 'colbert'"),
        ("hybrid(fusion=max)", "fusion"),
        ("hybrid(bogus=1)", "bogus"),
        ("hybrid(depth)", "key=value"),
        ("dense(k=3)", "k"),
        ("hybrid(fusion=rrf", r"parentheses that end the method \(found 1 '\(' and 0 '\)'\)"),
        ("hybrid(fusion=rrf))", "found 1 '.' and 2 '.'"),
        ("hybrid(fusion=rrf) x", "parentheses that end the method"),
        ("hybrid(fusion=rrf, dense_weight=0, bm25_weight=0)", "both 0"),
        ("hybrid(dense_weight=0, bm25_weight=0)", "both 0"),
    ],
)
def test_parse_method_rejects_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_method(spec)


def test_fts_query_drops_punctuation():
    assert fts_query('what is "mach"-number (M)?') == "what is mach number M"
