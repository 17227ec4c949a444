"""Golden values for the metrics (hand-computed), their agreement with pytrec_eval, and tie handling."""

from __future__ import annotations

import math

import pytest
import pytrec_eval

from tasks.evaluation.measures import parse_measures, rank_scores, score_queries

QRELS = {"q1": {"a": 1, "c": 2, "z": 0}, "q2": {"x": 1}}
RANKINGS = {"q1": [("a", 3.0), ("b", 2.0), ("c", 1.0)], "q2": [("y", 1.0)]}


def test_golden_values():
    aggregate, per_query = score_queries(RANKINGS, QRELS, ["nDCG@10", "P@10", "RR@10", "R@100", "AP@100"])
    idcg = 2 + 1 / math.log2(3)
    expected_q1 = {"nDCG@10": 2 / idcg, "P@10": 0.2, "RR@10": 1.0, "R@100": 1.0, "AP@100": (1 + 2 / 3) / 2}
    got_q1 = {m: v for q, m, v in per_query if q == "q1"}
    assert got_q1 == pytest.approx(expected_q1)
    assert {m: v for q, m, v in per_query if q == "q2"} == pytest.approx(dict.fromkeys(expected_q1, 0.0))
    assert aggregate == pytest.approx({m: v / 2 for m, v in expected_q1.items()})
    assert list(aggregate) == ["nDCG@10", "P@10", "RR@10", "R@100", "AP@100"]  # the order asked for


def test_agrees_with_pytrec_eval():
    evaluator = pytrec_eval.RelevanceEvaluator(QRELS, {"ndcg_cut.10", "recip_rank", "map_cut.100"})
    direct = evaluator.evaluate(rank_scores(RANKINGS, QRELS))
    _, per_query = score_queries(RANKINGS, QRELS, ["nDCG@10", "AP@100"])
    ours = {(q, m): v for q, m, v in per_query}
    for qid in QRELS:
        assert ours[(qid, "nDCG@10")] == pytest.approx(direct[qid]["ndcg_cut_10"])
        assert ours[(qid, "AP@100")] == pytest.approx(direct[qid]["map_cut_100"])


def test_ties_are_scored_in_the_order_we_return():
    # trec_eval would put "b" first (ties broken on doc id descending); we return "a" first, and the metric
    # must describe the ranking a user actually sees.
    tied = {"q": [("a", 1.0), ("b", 1.0)]}
    aggregate, _ = score_queries(tied, {"q": {"b": 1}}, ["RR@10"])
    assert aggregate["RR@10"] == pytest.approx(0.5)


def test_queries_without_results_count_as_zero():
    aggregate, per_query = score_queries({"q1": [("a", 1.0)]}, {"q1": {"a": 1}, "q2": {"x": 1}}, ["P@1"])
    assert aggregate["P@1"] == pytest.approx(0.5)
    assert ("q2", "P@1", 0.0) in per_query


def test_unknown_measures_are_named():
    with pytest.raises(ValueError, match="'ndgc@10', 'Bogus@5'"):
        parse_measures(["nDCG@10", "ndgc@10", "Bogus@5"])
    assert [str(m) for m in parse_measures(["nDCG@20", "R@1000", "Judged@10"])] == [
        "nDCG@20",
        "R@1000",
        "Judged@10",
    ]


@pytest.mark.parametrize("name", ["nDCG@0", "P(cutoff=0)", "RR@0"])
def test_a_cutoff_below_one_is_refused_before_any_work(name):
    # pytrec_eval would abort the whole process (exit 134) on it, after every query was retrieved
    with pytest.raises(ValueError, match=r"cutoff must be a whole number >= 1"):
        parse_measures(["nDCG@10", name])
