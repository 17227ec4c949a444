"""Judges (LLM, oracle, noisy oracle), synthetic test sets end to end, agreement with human qrels."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import litellm
import pytest

import tasks.synthetic.testset as synthetic_testset
from storage.llm_cache import ResponseCache
from storage.warehouse import Warehouse
from tasks.evaluation.testsets import load
from tasks.ingest.index import reindex
from tasks.llm.client import Completion, LLMClient, LLMConfig
from tasks.llm.judge import LLMJudge, NoisyOracleJudge, OracleJudge
from tasks.methods.search import Searcher
from tasks.synthetic.generators import ExtractiveGenerator
from tests import fake_llm
from tests.fakes import make_docs, make_testset
from tests.records import run_result

TERM = re.compile(r"term(\d+)")


@pytest.fixture
def provider():
    return fake_llm.install()


def client(tmp_path, usage=None) -> LLMClient:
    return LLMClient(
        LLMConfig(model="zsr-fake/judge"),
        ResponseCache(tmp_path / "cache.sqlite"),
        usage_sink=usage,
        sleep=lambda s: None,
    )


def query_and_passage(messages) -> tuple[int, int]:
    """The term numbers of the query and of the passage in a judge prompt."""
    prompt = messages[-1]["content"]
    query = prompt.split("Query: ")[1].split("\n")[0]
    passage = prompt.split("Passage: ")[1].split("\n\nGrades:")[0]
    return int(TERM.search(query).group(1)), int(TERM.search(passage).group(1))


def test_llm_judge_parses_the_digit_and_isolates_failures(provider, tmp_path):
    bad = litellm.BadRequestError(message="context too long", llm_provider="zsr-fake", model="judge")
    answers = {0: "2", 1: "1 - partly", 2: "maybe", 3: bad}
    provider.rule = lambda messages, params: answers[query_and_passage(messages)[1]]
    usage = []
    judge = LLMJudge(client(tmp_path, usage.append))
    pairs = [("q", "term0 wing", f"d{i}", f"title {i}\nwing term{i}") for i in range(4)]
    got = judge.judge(pairs)
    assert [(j.doc_id, j.grade, j.probability) for j in got[:2]] == [("d0", 2, None), ("d1", 1, None)]
    assert got[1].raw == "1 - partly"
    assert (got[2].grade, got[2].error, got[2].raw) == (None, "unparseable: 'maybe'", "maybe")
    assert got[3].grade is None and "context too long" in got[3].error
    messages, params = provider.calls[0]
    assert "Answer with the digit only" in messages[-1]["content"]
    assert (params["temperature"], params["max_tokens"], params["top_logprobs"]) == (0.0, 1, 20)
    contexts = [json.loads(c) for t in usage for c in t["context"].to_pylist()]
    assert {"query_id": "q", "doc_id": "d0"} in contexts
    assert judge.name == "llm:zsr-fake/judge:judge-v1:graded"
    with pytest.raises(ValueError, match="no judge prompt"):
        LLMJudge(client(tmp_path), prompt_version="judge-v0")


class StubLLM:
    """Answers every request with one completion carrying first-token log-probabilities."""

    config = LLMConfig(model="stub")

    def __init__(self, text: str, probs: dict[str, float]) -> None:
        logprobs = {t: math.log(p) for t, p in probs.items()}
        self.answer = Completion(text, "stub", 10, 1, first_token_logprobs=logprobs)

    def complete_many(self, requests, purpose):
        return [self.answer for _ in requests]


def test_llm_judge_reads_first_token_probabilities():
    pair = [("q", "query", "d", "passage")]
    probs = {"1": 0.5, " 2": 0.3, "0": 0.1, "The": 0.1}  # " 2" counts as "2"; "The" is no candidate
    (graded,) = LLMJudge(StubLLM("1", probs)).judge(pair)
    assert graded.grade == 1 and graded.probability == pytest.approx(0.8 / 0.9)
    (binary,) = LLMJudge(StubLLM("1", probs), scale="binary").judge(pair)
    assert binary.grade == 1 and binary.probability == pytest.approx(0.5 / 0.6)
    (fallback,) = LLMJudge(StubLLM("0", {"The": 0.9})).judge(pair)  # no candidate: read the text
    assert (fallback.grade, fallback.probability) == (0, None)


def test_oracle_and_noisy_oracle():
    qrels = {f"q{i}": {f"d{i}": 2} for i in range(40)}
    pairs = [(f"q{i}", "", f"d{j}", "") for i in range(40) for j in range(50)]  # 2000 pairs
    truth = OracleJudge(qrels).judge(pairs)
    assert [(j.grade, j.probability) for j in truth[:2]] == [(2, 1.0), (0, 0.0)]
    assert NoisyOracleJudge(qrels, 1.0).judge(pairs) == truth
    noisy = NoisyOracleJudge(qrels, 0.7, seed=3).judge(pairs)
    flipped = [(t, n) for t, n in zip(truth, noisy, strict=True) if (t.grade > 0) != (n.grade > 0)]
    assert 0.26 < len(flipped) / len(pairs) < 0.34
    assert {n.grade for t, n in flipped} == {0, 1} and all(n.grade == 1 for t, n in flipped if t.grade == 0)
    assert NoisyOracleJudge(qrels, 0.7, seed=3).judge(pairs) == noisy  # deterministic by seed
    assert NoisyOracleJudge(qrels, 0.7, seed=4).judge(pairs) != noisy
    assert NoisyOracleJudge(qrels, 0.7, seed=3).judge(pairs[::-1]) == noisy[::-1]  # per pair, not per batch
    with pytest.raises(ValueError, match="accuracy"):
        NoisyOracleJudge(qrels, 1.5)


@pytest.fixture
def searcher(tmp_store, fake) -> Searcher:
    reindex(tmp_store, "c", make_docs(12), fake.space, lambda: fake)
    return Searcher(tmp_store, "c", lambda: fake)


def test_synthetic_testset_end_to_end(searcher, provider, tmp_path, monkeypatch):
    def rule(messages, params):
        query, passage = query_and_passage(messages)
        offset = (passage - query) % 12
        return {0: "2", 1: "1", 5: "no idea"}.get(offset, "0")  # offset 5: an unparseable answer

    provider.rule = rule
    exported = []
    real_register = synthetic_testset.register

    def spy(root, store, corpus, name, path, **kwargs):
        exported.extend(json.loads(line) for line in (path / "queries.jsonl").read_text().splitlines())
        return real_register(root, store, corpus, name, path, **kwargs)

    monkeypatch.setattr(synthetic_testset, "register", spy)
    warehouse = Warehouse(tmp_path / "warehouse")
    build = dict(
        name="synth",
        generator=ExtractiveGenerator(),
        judge=LLMJudge(client(tmp_path)),
        searcher=searcher,
        root=tmp_path / "testsets",
        n_docs=6,
        warehouse=warehouse,
    )
    report = synthetic_testset.build_synthetic_testset(searcher.store, "c", **build)
    testset = load(tmp_path / "testsets", "c", "synth")
    assert testset.kind == "synthetic" and len(testset.queries) == report.queries == 6
    rows = warehouse.query("SELECT * FROM judgements").to_pylist()
    assert len(rows) == report.pooled_pairs == report.judged + report.failed
    assert report.failed == sum(r["error"] is not None for r in rows) > 0
    for qid, text in testset.queries.items():
        source = int(TERM.search(text).group(1))
        assert testset.qrels[qid][f"d{source}"] == 2
        assert testset.qrels[qid].get(f"d{(source + 1) % 12}") == 1  # a judged non-source document
        assert f"d{(source + 5) % 12}" not in testset.qrels[qid]  # its judgement failed
        assert 0 in testset.qrels[qid].values()  # judged non-relevant stays
    assert report.relevant_pairs == 12 and report.mean_relevant_per_query == 2.0
    assert {r["source_doc"] for r in rows} == {m["metadata"]["source_doc"] for m in exported}
    assert all(r["generator"] == "extractive" and r["judge"].startswith("llm:") for r in rows)
    assert exported[0]["metadata"]["prompt_version"] == "ict-sentence-v1"

    calls = len(provider.calls)
    again = synthetic_testset.build_synthetic_testset(searcher.store, "c", **build, replace=True)
    assert len(provider.calls) == calls and again == report  # generation and judgements come from caches


def test_agreement_of_a_set_with_itself(searcher, tmp_path):
    warehouse = Warehouse(tmp_path / "warehouse")
    human = make_testset()
    result = synthetic_testset.agreement(
        warehouse, searcher, human, replace(human, name="copy"), ["bm25", "dense", "hybrid"]
    )
    assert result.kendall_tau == pytest.approx(1.0) and result.top1_agree
    assert result.human_scores == result.synthetic_scores and result.measure == "nDCG@10"
    (row,) = warehouse.query("SELECT * FROM agreements").to_pylist()
    assert (row["human_testset"], row["synthetic_testset"], row["corpus"]) == ("t", "copy", "c")
    assert json.loads(row["methods"]) == ["bm25", "dense", "hybrid"] and row["kendall_tau"] == 1.0
    run_ids = json.loads(row["run_ids"])
    assert warehouse.query("SELECT count(*) AS n FROM runs").to_pylist() == [{"n": 6}]
    assert set(run_ids["human"]) == set(run_ids["synthetic"]) == {"bm25", "dense", "hybrid"}
    with pytest.raises(ValueError, match="at least two methods"):
        synthetic_testset.agreement(warehouse, searcher, human, human, ["bm25"])


METHODS = ["bm25", "dense", "hybrid", "multiview"]


# Known rankings of four methods. Pairs: C concordant, D discordant, Tx/Ty tied on the human/synthetic side.
# tau-b = (C - D) / sqrt((6 - Tx) (6 - Ty)). Without ties scipy's p is exact: the share of the 24 orders
# with at most D discordant pairs (1, 3, 5, 6, 5, 3, 1 orders have 0..6), doubled. With ties it is the
# normal approximation: z = (C - D) / sqrt(var), var = (156 - 18 Tx - 18 Ty) / 18 + 4 Tx Ty / 24.
@pytest.mark.parametrize(
    ("human", "synthetic", "tau", "p_value", "top1"),
    [
        # one adjacent swap: C = 5, D = 1, tau = 4/6; p = 2 (1 + 3) / 24
        ([0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.1, 0.2], 2 / 3, 1 / 3, True),
        # reversed: C = 0, D = 6; p = 2 (1 / 24)
        ([0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], -1.0, 1 / 12, False),
        # a human tie (dense = hybrid): C = 5, Tx = 1, tau-b = 5 / sqrt(5 x 6) = 0.9129 (tau-c: 0.9375);
        # var = 138 / 18, z = 1.8058, p = 0.07095
        ([0.5, 0.4, 0.4, 0.1], [0.5, 0.4, 0.3, 0.2], 5 / 30**0.5, 0.07095, True),
        # a tie on each side: C = 4, Tx = Ty = 1, tau-b = 4 / sqrt(5 x 5) = 0.8 (tau-c: 0.75);
        # var = 120 / 18 + 4 / 24, z = 1.5302, p = 0.12597
        ([0.5, 0.4, 0.4, 0.1], [0.3, 0.3, 0.2, 0.1], 0.8, 0.12597, True),
        # the synthetic best is a tie of bm25 and dense: it goes to bm25, listed first; human best is dense
        ([0.4, 0.5, 0.2, 0.1], [0.5, 0.5, 0.2, 0.1], 5 / 30**0.5, 0.07095, False),
    ],
    ids=["one-swap", "reversed", "human-tie", "tie-each-side", "tied-best"],
)
def test_agreement_on_known_rankings(monkeypatch, tmp_path, human, synthetic, tau, p_value, top1):
    scores = {"t": dict(zip(METHODS, human, strict=True)), "s": dict(zip(METHODS, synthetic, strict=True))}

    def evaluate(searcher, testset, methods, warehouse, *, measures, eval_id):
        return [run_result(f"{testset.name}-{m}", m, {measures[0]: scores[testset.name][m]}) for m in methods]

    monkeypatch.setattr(synthetic_testset, "evaluate_methods", evaluate)
    warehouse = Warehouse(tmp_path / "warehouse")
    searcher = SimpleNamespace(corpus="c")
    result = synthetic_testset.agreement(warehouse, searcher, make_testset(), make_testset(name="s"), METHODS)
    assert result.kendall_tau == pytest.approx(tau)
    assert result.p_value == pytest.approx(p_value, abs=1e-5)
    assert result.top1_agree is top1
    assert (result.human_scores, result.synthetic_scores) == (scores["t"], scores["s"])
    (row,) = warehouse.query("SELECT * FROM agreements").to_pylist()
    assert row["kendall_tau"] == pytest.approx(tau) and row["p_value"] == pytest.approx(p_value, abs=1e-5)
    assert row["top1_agree"] is top1


def test_agreement_is_undefined_when_one_side_ties_every_method(monkeypatch, tmp_path):
    monkeypatch.setattr(
        synthetic_testset,
        "evaluate_methods",
        lambda searcher, testset, methods, warehouse, **kw: [
            run_result(m, m, {kw["measures"][0]: 0.2 if testset.name == "s" else i})
            for i, m in enumerate(methods)
        ],
    )
    result = synthetic_testset.agreement(
        Warehouse(tmp_path / "w"),
        SimpleNamespace(corpus="c"),
        make_testset(),
        make_testset(name="s"),
        METHODS,
    )
    assert math.isnan(result.kendall_tau) and math.isnan(result.p_value)


def test_nothing_judged_relevant_is_an_error(searcher, tmp_path):
    judge = OracleJudge({})
    with pytest.raises(ValueError, match="judged no pooled document relevant"):
        synthetic_testset.build_synthetic_testset(
            searcher.store,
            "c",
            name="none",
            generator=ExtractiveGenerator(),
            judge=judge,
            searcher=searcher,
            root=tmp_path / "testsets",
            n_docs=3,
        )
    assert not Path(tmp_path / "testsets" / "c" / "none").exists()
