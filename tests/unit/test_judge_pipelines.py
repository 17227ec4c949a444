"""Judge pipelines (issue 18 items 1-4): nested provenance, rerank interpolation, votes, shared judgements and
the per-query judge budget, with oracle judges and a judge that counts what it is asked."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.warehouse import SCHEMAS, Warehouse
from tasks.evaluation.provenance import method_from_tree, method_tree
from tasks.evaluation.runs import evaluate_methods
from tasks.ingest.index import reindex
from tasks.llm.client import LLMConfig
from tasks.llm.judge import (
    Judgement,
    LLMJudge,
    NoisyOracleJudge,
    OracleJudge,
    Pair,
    aggregate,
    settled,
    voter,
)
from tasks.methods.first_stage import score_fusion
from tasks.methods.registry import parse_method
from tasks.methods.search import Searcher
from tests.fakes import make_docs, make_testset

QUERY = "term3 wing"


@pytest.fixture
def store(tmp_store, fake):
    reindex(tmp_store, "c", make_docs(12), fake.space, lambda: fake)
    return tmp_store


class Counting:
    """Wraps a judge and records every pair it is asked, per voter name."""

    def __init__(self, inner: OracleJudge, asked: Counter | None = None) -> None:
        self.inner, self.name = inner, inner.name
        self.asked: Counter = Counter() if asked is None else asked

    def judge(self, pairs: Sequence[Pair]) -> list[Judgement]:
        self.asked.update((self.name, q, d) for q, _, d, _ in pairs)
        return self.inner.judge(pairs)

    def vote(self, index: int) -> Counting:
        return Counting(self.inner.vote(index), self.asked)


class Graded:
    """A judge with a fixed P(relevant) per document (the LLM judge's soft scores)."""

    name = "graded"

    def __init__(self, probability: dict[str, float]) -> None:
        self.probability = probability

    def judge(self, pairs: Sequence[Pair]) -> list[Judgement]:
        return [
            Judgement(q, d, int(self.probability.get(d, 0) > 0.5), self.probability.get(d, 0.0))
            for q, _, d, _ in pairs
        ]


def ids(ranking) -> list[str]:
    return [d for d, _ in ranking]


@pytest.mark.parametrize(
    "spec",
    [
        "rerank(first=rede-rf(first=hybrid(fusion=score), k=20), depth=30)",
        "rerank(alpha=0.3, first=rede-rf(votes=3, first=prf(first=bm25)), budget=40)",
        "rede-rf(first=hyde(first=dense), fallback=none)",
        "dense",
    ],
)
def test_a_method_tree_holds_every_default_and_rebuilds_the_method(spec):
    method = parse_method(spec)
    tree = json.loads(json.dumps(method_tree(method)))  # as stored in runs.params, and read back
    assert method_from_tree(tree) == method and str(method_from_tree(tree)) == str(method)
    if spec.startswith("rerank(first=rede-rf"):
        inner = tree["params"]["first"]["params"]["first"]
        assert inner == {"method": "hybrid", "params": parse_method("hybrid").params.model_dump()}


def test_a_nested_pipelines_run_stores_its_whole_tree(store, fake, tmp_path):
    spec = "rerank(first=rede-rf(first=hybrid(fusion=rrf), k=5), depth=8)"
    searcher = Searcher(store, "c", lambda: fake, judge=OracleJudge(make_testset().qrels))
    warehouse = Warehouse(tmp_path / "warehouse")
    (run,) = evaluate_methods(searcher, make_testset(), [spec], warehouse, measures=["nDCG@10"])
    (row,) = warehouse.query("SELECT method, method_name, params FROM runs").to_pylist()
    tree = {"method": row["method_name"], "params": json.loads(row["params"])}
    assert str(method_from_tree(tree)) == row["method"] == str(parse_method(spec)) == run.method
    assert tree["params"]["first"]["params"]["first"]["params"]["rrf_k"] == 60  # a default, on record


def test_rerank_alpha_zero_is_the_first_stage_and_one_is_pure_rerank(store, fake):
    probability = {"d9": 0.9, "d5": 0.6, "d2": 0.2}
    searcher = Searcher(store, "c", lambda: fake, judge=Graded(probability))
    first = searcher.search(QUERY, "hybrid", k=12)
    assert ids(searcher.search(QUERY, "rerank(alpha=0, depth=12)", k=12)) == ids(first)
    pure = sorted(ids(first), key=lambda d: -probability.get(d, 0.0))  # stable: ties in first-stage order
    assert ids(searcher.search(QUERY, "rerank(alpha=1, depth=12)", k=12)) == pure
    assert ids(searcher.search(QUERY, "rerank(depth=12)", k=12)) == pure  # alpha=1 is the default
    prior = score_fusion([first], [1.0])  # min-max normalised first-stage scores
    mixed = sorted(ids(first), key=lambda d: -(0.4 * probability.get(d, 0.0) + 0.6 * prior[d]))
    assert mixed not in (ids(first), pure)  # the case tells the weights apart
    assert ids(searcher.search(QUERY, "rerank(alpha=0.4, depth=12)", k=12)) == mixed


def test_votes_of_a_perfect_oracle_change_nothing(store, fake):
    qrels = {"q": {"d9": 1, "d5": 2, "d3": 1}}
    for judge in (OracleJudge(qrels), NoisyOracleJudge(qrels, 1.0, correlated=0.5)):
        searcher = Searcher(store, "c", lambda: fake, judge=judge)
        for method in ("rerank(depth=12)", "rede-rf(k=12)"):
            one = searcher.search(QUERY, method, k=12)
            for votes in (3, 4, 5):
                for how in ("majority", "mean"):
                    voted = method.replace("(", f"(votes={votes}, aggregate={how}, ")
                    assert searcher.search(QUERY, voted, k=12) == one, (judge.name, voted)


def pairs_of(n: int) -> tuple[dict[str, dict[str, int]], list[Pair]]:
    """``n`` pairs, half of them relevant."""
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(0, n, 2)}
    return qrels, [(f"q{i}", "", f"d{i}", "") for i in range(n)]


def accuracy(qrels, verdicts: list[Judgement]) -> float:
    return sum((v.grade or 0) == qrels.get(v.query_id, {}).get(v.doc_id, 0) for v in verdicts) / len(verdicts)


def majority(judge, pairs, n: int) -> list[Judgement]:
    votes = [voter(judge, i).judge(pairs) for i in range(n)]
    return [aggregate(list(each), "majority") for each in zip(*votes, strict=True)]


def test_votes_with_independent_noise_follow_binomial_arithmetic():
    qrels, pairs = pairs_of(20_000)
    judge = NoisyOracleJudge(qrels, 0.9, seed=7)
    assert accuracy(qrels, judge.judge(pairs)) == pytest.approx(0.9, abs=0.006)
    assert accuracy(qrels, voter(judge, 2).judge(pairs)) == pytest.approx(0.9, abs=0.006)
    # majority of 3 at p = 0.9: p^3 + 3 p^2 (1 - p) = 0.972; of 5: 0.99144
    assert accuracy(qrels, majority(judge, pairs, 3)) == pytest.approx(0.972, abs=0.004)
    assert accuracy(qrels, majority(judge, pairs, 5)) == pytest.approx(0.99144, abs=0.003)


def test_correlated_noise_shares_its_errors_across_votes():
    qrels, pairs = pairs_of(20_000)
    judge = NoisyOracleJudge(qrels, 0.9, seed=7, correlated=0.5)
    votes = [voter(judge, i).judge(pairs) for i in range(3)]
    for each in votes:  # every vote keeps its accuracy
        assert accuracy(qrels, each) == pytest.approx(0.9, abs=0.006)
    truth = [qrels.get(q, {}).get(d, 0) for q, _, d, _ in pairs]
    all_wrong = sum(all(v[i].grade != truth[i] for v in votes) for i in range(len(pairs))) / len(pairs)
    assert all_wrong >= 0.05 - 0.005  # the shared half of the 10% errors, plus chance agreement
    own = 0.05 / 0.95  # each vote's own error rate where no shared error
    expected = 1 - (0.05 + 0.95 * (3 * own**2 * (1 - own) + own**3))  # 0.942, not independent noise's 0.972
    assert accuracy(qrels, majority(judge, pairs, 3)) == pytest.approx(expected, abs=0.005)


def test_majority_asks_a_voter_only_while_the_verdict_is_open():
    def verdicts(*grades):
        return [Judgement("q", "d", g, None) for g in grades]

    assert settled(verdicts(1, 1), 3, "majority") and not settled(verdicts(1, 0), 3, "majority")
    assert not settled(verdicts(1, 1), 3, "mean") and settled(verdicts(1, 0, 0), 3, "mean")
    assert not settled(verdicts(1, None), 3, "majority")  # a failed vote decides nothing
    assert aggregate(verdicts(1, 0), "majority").grade == 0  # a tie goes to the lower grade
    assert aggregate(verdicts(1, 0, 1), "majority").probability == pytest.approx(2 / 3)
    assert aggregate(verdicts(None, None), "mean").grade is None


def test_shared_judgements_are_asked_once(store, fake):
    qrels = {"q": {"d9": 1, "d5": 2, "d3": 1}}
    judge = Counting(OracleJudge(qrels))
    searcher = Searcher(store, "c", lambda: fake, judge=judge)
    rede = searcher.search(QUERY, "rede-rf(k=6)", k=12)
    rede_calls = searcher.last_trace["q"].judge_calls
    judge.asked.clear()
    searcher.search(QUERY, "rerank(first=rede-rf(k=6), depth=10)", k=12)
    trace = searcher.last_trace["q"]
    assert set(judge.asked.values()) == {1}  # no pair asked twice
    overlap = len(set(ids(rede[:10])) & set(ids(searcher.search(QUERY, "hybrid", k=6))))
    assert trace.judge_calls == len(judge.asked) == rede_calls + 10 - overlap


def test_votes_reuse_the_first_stages_vote_and_count_each_call(store, fake):
    qrels = {"q": {"d9": 1, "d5": 2, "d3": 1}}
    judge = Counting(NoisyOracleJudge(qrels, 1.0))
    searcher = Searcher(store, "c", lambda: fake, judge=judge)
    searcher.search(QUERY, "rerank(votes=3, depth=6)", k=6)
    assert searcher.last_trace["q"].judge_calls == len(judge.asked) == 12  # two agreeing votes settle each
    judge.asked.clear()
    searcher.search(QUERY, "rerank(votes=3, depth=6, first=rede-rf(k=6))", k=6)
    assert set(judge.asked.values()) == {1}


def test_confirmed_votes_ask_again_only_where_the_first_vote_accepts(store, fake):
    qrels = {"q": {"d9": 1, "d5": 2, "d3": 1}}
    judge = Counting(NoisyOracleJudge(qrels, 1.0))
    searcher = Searcher(store, "c", lambda: fake, judge=judge)
    top = ids(searcher.search(QUERY, "hybrid", k=6))
    accepted = [d for d in top if d in qrels["q"]]
    assert 0 < len(accepted) < 6  # the case tells confirmation apart from asking everything again
    searcher.search(QUERY, "rerank(votes=3, confirm=true, depth=6)", k=6)
    assert searcher.last_trace["q"].judge_calls == 6 + len(accepted)  # the second vote agrees: settled
    assert sorted(d for name, _, d in judge.asked if name != judge.name) == sorted(accepted)


def test_a_budget_caps_a_whole_pipeline(store, fake):
    qrels = {"q": {"d9": 1, "d5": 2, "d3": 1}}
    judge = Counting(OracleJudge(qrels))
    searcher = Searcher(store, "c", lambda: fake, judge=judge)
    searcher.search(QUERY, "rerank(first=rede-rf(k=10), depth=10, budget=4)", k=12)
    assert searcher.last_trace["q"].judge_calls == len(judge.asked) == 4  # rede-rf spent it all
    searcher.search(QUERY, "rerank(first=rede-rf(k=10, budget=8), depth=10, budget=4)", k=12)
    assert searcher.last_trace["q"].judge_calls == 4  # the tighter cap wins, the outer one here
    judge.asked.clear()
    first = ids(searcher.search(QUERY, "hybrid", k=12))
    hits = searcher.search(QUERY, "rerank(depth=10, budget=3)", k=12)
    assert [d for _, _, d in judge.asked] == first[:3]  # the budget judges a shorter top
    assert ids(hits)[3:] == first[3:]
    searcher.search(QUERY, "rerank(votes=3, depth=10, budget=7)", k=12)
    assert searcher.last_trace["q"].judge_calls == 7


def test_the_queries_view_records_judge_calls_and_older_runs_read_null(store, fake, tmp_path):
    searcher = Searcher(store, "c", lambda: fake, judge=OracleJudge(make_testset().qrels))
    warehouse = Warehouse(tmp_path / "warehouse")
    evaluate_methods(searcher, make_testset(), ["rerank(depth=5)"], warehouse, measures=["nDCG@10"])
    old = pq.read_table(next((tmp_path / "warehouse" / "queries").glob("[!_]*.parquet")))
    older = old.drop_columns(["judge_calls"]).set_column(0, "run_id", pa.array(["old"] * old.num_rows))
    pq.write_table(older, tmp_path / "warehouse" / "queries" / "old.parquet")  # a file from before the column
    runs = pq.read_table(next((tmp_path / "warehouse" / "runs").glob("[!_]*.parquet")))
    pq.write_table(
        runs.set_column(0, "run_id", pa.array(["old"])), tmp_path / "warehouse" / "runs" / "old.parquet"
    )
    rows = warehouse.query("SELECT run_id, judge_calls FROM queries ORDER BY run_id").to_pylist()
    assert {r["judge_calls"] for r in rows if r["run_id"] != "old"} == {5}
    assert {r["judge_calls"] for r in rows if r["run_id"] == "old"} == {None}
    assert "judge_calls" in SCHEMAS["queries"].names


def test_llm_votes_read_a_longer_cut_and_are_cached_apart():
    class Client:
        config = LLMConfig(model="zsr-fake/m")

        def complete_many(self, requests, purpose):
            raise AssertionError("not called")

    judge = LLMJudge(Client(), scale="binary", max_doc_chars=10)
    passage = "x" * 40
    first, second = (
        judge.request("q", "query", "d", passage),
        judge.vote(1).request("q", "query", "d", passage),
    )
    assert "x" * 10 in first.messages[0]["content"] and "x" * 11 not in first.messages[0]["content"]
    assert "x" * 15 in second.messages[0]["content"] and "x" * 16 not in second.messages[0]["content"]
    assert first.params() != second.params() and second.params()["seed"] == 1
    assert judge.vote(0).name == judge.name != judge.vote(1).name


def test_a_judge_that_cannot_vote_says_so():
    with pytest.raises(ValueError, match="cannot vote: use votes=1"):
        voter(Graded({}), 1)
