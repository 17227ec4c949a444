"""Query-time methods (prf, hyde, rede-rf, expand, rerank): faithfulness to their formulas with oracle judges,
per-query cost and fallbacks with the fake LLM provider."""

from __future__ import annotations

import re

import litellm
import numpy as np
import pytest

from storage.llm_cache import ResponseCache
from storage.warehouse import Warehouse
from tasks.evaluation.runs import evaluate_methods
from tasks.ingest.index import reindex
from tasks.llm.client import LLMClient, LLMConfig
from tasks.llm.judge import LLMJudge, OracleJudge
from tasks.methods.base import LLMUnavailableError
from tasks.methods.feedback import Analyzer, Rm3Params, rm3_query
from tasks.methods.registry import parse_method
from tasks.methods.search import Searcher, fts_query
from tests import fake_llm
from tests.fakes import make_docs, make_testset

QUERY = "term3 wing"


@pytest.fixture
def provider():
    return fake_llm.install()


@pytest.fixture
def store(tmp_store, fake):
    reindex(tmp_store, "c", make_docs(12), fake.space, lambda: fake)
    return tmp_store


def client(tmp_path) -> LLMClient:
    return LLMClient(
        LLMConfig(model="zsr-fake/m"), ResponseCache(tmp_path / "cache.sqlite"), sleep=lambda s: None
    )


def stored(store, doc_id: str) -> np.ndarray:
    """A document's vector straight from the views table: the normalised mean of its chunk vectors."""
    views = store.views.table("c", store.registry.corpus("c").space).to_arrow().to_pylist()
    mean = np.mean([v["vector"] for v in views if v["doc_id"] == doc_id and v["kind"] == "chunk"], axis=0)
    return mean / np.linalg.norm(mean)


def ids(ranking) -> list[str]:
    return [d for d, _ in ranking]


def prompt_of(messages) -> str:
    return messages[-1]["content"]


@pytest.mark.parametrize(
    "spec",
    [
        "prf",
        "prf(alpha=0.5, first=bm25, k=5)",
        "rm3(k=5, original=0.7, terms=20)",
        "hyde(domain=scientific, n=2)",
        "rede-rf(fallback=hyde, first=dense, max_relevant=3)",
        "rede-rf(fallback=hyde-prf)",
        "hyde(context=20, first=bm25)",
        "expand(first=dense)",
        "rerank(depth=5, first=multiview)",
        "rerank(first=hybrid(fusion=rrf))",
    ],
)
def test_method_strings_round_trip(spec):
    assert str(parse_method(spec)) == spec
    assert str(parse_method(str(parse_method(spec)))) == spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rede-rf(first=colbert)", "first: unknown method 'colbert'"),
        ("hyde(domain=poetry)", "domain"),
        ("expand(first=hybrid)", "first"),
        ("rede-rf(fallback=bm25)", "fallback"),
    ],
)
def test_bad_method_strings(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_method(spec)


def test_prf_vector_is_rocchio_over_stored_vectors(store, fake):
    searcher = Searcher(store, "c", lambda: fake)
    first = [d for d, _ in searcher.search(QUERY, "dense", k=2)]
    hits = searcher.search(QUERY, "prf(k=2, alpha=0.6, beta=0.4)", k=5)
    trace = searcher.last_trace["q"]
    query = fake.encode([QUERY], queries=True)[0]
    expected = 0.6 * query + 0.4 * np.mean([stored(store, d) for d in first], axis=0)
    np.testing.assert_allclose(trace.vector, expected, rtol=1e-5)
    # ranked by the traced vector: ``expected`` is within float rounding of it, which may swap near ties
    assert ids(hits) == ids(searcher.search_vectors(trace.vector[None, :], 5)[0])
    assert (trace.llm_calls, trace.fallback) == (0, None)


def test_rm3_query_mixes_the_relevance_model_with_the_query():
    params = Rm3Params(terms=2, original=0.5)
    feedback = [("Wing flows, flow!", 2.0), ("the heat flow", 2.0)]
    weights = rm3_query("wings lift", feedback, params, Analyzer())
    # query: wing .5, lift .5; P(w|R): flow 1/3 + 1/4, heat 1/4, wing 1/6 -> top 2 renormalised: .7, .3
    expected = {"wings": 0.25, "lift": 0.25, "flows": 0.35, "heat": 0.15}
    assert (
        weights.keys() == expected.keys()
    )  # a stem goes by the first word seen with it; "the" is a stop word
    assert all(weights[w] == pytest.approx(v) for w, v in expected.items())
    assert rm3_query("wing", feedback, Rm3Params(original=1.0), Analyzer()) == {"wing": 1.0}


def test_rm3_searches_bm25_with_the_weighted_query(store, fake):
    searcher = Searcher(store, "c", lambda: fake)
    single = dict(store.search.fts("c", "wing", 20))
    boosted = dict(store.search.fts("c", {"wing": 2.0}, 20))
    assert boosted.keys() == single.keys()
    assert all(boosted[d] == pytest.approx(2 * single[d], rel=1e-4) for d in single)  # weight x bm25

    first = searcher.search(QUERY, "bm25", k=3)
    texts = searcher.document_texts(ids(first))
    weights = rm3_query(QUERY, [(texts[d], s) for d, s in first], Rm3Params(k=3), Analyzer())
    assert "term3" in weights and len(weights) > 2  # the query's words and the expansion terms
    hits = searcher.search(QUERY, "rm3(k=3)", k=5)
    assert hits == searcher.search_terms([weights], 5)[0]
    assert searcher.last_trace["q"].fallback is None
    assert searcher.search("zzzz", "rm3", k=5) == []
    assert searcher.last_trace["q"].fallback == "bm25: no feedback document"


def test_hyde_vector_is_the_mean_of_query_and_documents(store, fake, provider, tmp_path):
    provider.rule = lambda messages, params: (
        f"passage {params['seed']} on wing lift term3 term{params['seed']}"
    )
    searcher = Searcher(store, "c", lambda: fake, llm=client(tmp_path))
    searcher.search(QUERY, "hyde", k=5)
    trace = searcher.last_trace["q"]
    docs = [f"passage {i} on wing lift term3 term{i}" for i in range(8)]
    expected = np.vstack([fake.encode([QUERY], queries=True), fake.encode(docs, queries=False)]).mean(axis=0)
    np.testing.assert_allclose(trace.vector, expected, rtol=1e-5)
    messages, params = provider.calls[0]
    assert (
        prompt_of(messages) == f"Please write a passage to answer the question.\nQuestion: {QUERY}\nPassage:"
    )
    assert (params["temperature"], params["max_tokens"], params["stop"]) == (0.7, 512, ["\n\n\n"])
    assert sorted(p["seed"] for _, p in provider.calls) == list(range(8))
    assert (trace.llm_calls, trace.cache_hits, trace.fallback, trace.llm) == (8, 0, None, "zsr-fake/m")
    assert trace.tokens_in > 0 and trace.tokens_out > 0
    searcher.search(QUERY, "hyde", k=5)  # answered from the response cache
    assert (searcher.last_trace["q"].llm_calls, searcher.last_trace["q"].cache_hits) == (8, 8)
    searcher.search(QUERY, "hyde(domain=scientific, n=1)", k=5)
    assert prompt_of(provider.calls[-1][0]).startswith("Please write a scientific paper passage to answer")


def test_hyde_prf_shows_the_first_stage_passages(store, fake, provider, tmp_path):
    provider.rule = lambda messages, params: "a passage on wing lift"
    searcher = Searcher(store, "c", lambda: fake, llm=client(tmp_path))
    first = ids(searcher.search(QUERY, "bm25", k=3))
    texts = searcher.document_texts(first)
    searcher.search(QUERY, "hyde(context=3, first=bm25, n=2)", k=5)
    shown = "\n".join(f"[{i}] {texts[d][:512]}" for i, d in enumerate(first, 1))
    hyde = f"Please write a passage to answer the question.\nQuestion: {QUERY}\nPassage:"
    expected = f"Context passages:\n{shown}\n\n{hyde}"
    assert [prompt_of(m) for m, _ in provider.calls] == [expected, expected]
    docs = fake.encode(["a passage on wing lift"] * 2, queries=False)
    query = fake.encode([QUERY], queries=True)
    np.testing.assert_allclose(
        searcher.last_trace["q"].vector, np.vstack([query, docs]).mean(axis=0), rtol=1e-5
    )

    provider.calls.clear()  # ReDE-RF's headline fallback: HyDE-PRF over its own first stage's top k
    searcher.judge = OracleJudge({})
    searcher.search(QUERY, "rede-rf(fallback=hyde-prf, first=bm25, k=3)", k=5)
    assert [prompt_of(m) for m, _ in provider.calls] == [expected] * 6  # samples 0 and 1 are cached
    assert searcher.last_trace["q"].fallback == "hyde-prf: no first-stage document judged relevant"


def test_rede_rf_vector_is_the_mean_of_query_and_judged_relevant(store, fake):
    judge = OracleJudge({"q": {"d3": 2, "d4": 1, "d7": 0}})
    searcher = Searcher(store, "c", lambda: fake, judge=judge)  # no LLM needed with an oracle
    first = [d for d, _ in searcher.search(QUERY, "hybrid", k=20)]
    query = fake.encode([QUERY], queries=True)[0]
    hits = searcher.search(QUERY, "rede-rf", k=5)
    trace = searcher.last_trace["q"]
    expected = (query + stored(store, "d3") + stored(store, "d4")) / 3
    np.testing.assert_allclose(trace.vector, expected, rtol=1e-5)
    # ranked by the traced vector: ``expected`` is within float rounding of it, which may swap near ties
    assert ids(hits) == ids(searcher.search_vectors(trace.vector[None, :], 5)[0])
    assert (trace.judge, trace.fallback, trace.llm_calls) == ("oracle", None, 0)

    searcher.search(QUERY, "rede-rf(max_relevant=1)", k=5)  # k*: the first relevant in first-stage order
    top = min(("d3", "d4"), key=first.index)
    np.testing.assert_allclose(searcher.last_trace["q"].vector, (query + stored(store, top)) / 2, rtol=1e-5)


def test_rede_rf_fallbacks_when_nothing_is_relevant(store, fake):
    searcher = Searcher(store, "c", lambda: fake, judge=OracleJudge({}))
    query = fake.encode([QUERY], queries=True)[0]
    searcher.search(QUERY, "rede-rf", k=5)
    trace = searcher.last_trace["q"]
    assert trace.fallback == "query: no first-stage document judged relevant"
    np.testing.assert_allclose(trace.vector, query, rtol=1e-6)
    hits = searcher.search(QUERY, "rede-rf(fallback=none)", k=5)
    assert hits == searcher.search(QUERY, "hybrid", k=5)
    assert searcher.last_trace["q"].fallback is None  # reset by every search
    with pytest.raises(LLMUnavailableError, match="needs an LLM"):
        searcher.search(QUERY, "rede-rf(fallback=hyde)", k=5)


def test_rerank_puts_judged_relevant_first(store, fake):
    searcher = Searcher(store, "c", lambda: fake, judge=OracleJudge({"q": {"d9": 1, "d5": 2}}))
    first = [d for d, _ in searcher.search(QUERY, "hybrid", k=12)]
    hits = searcher.search(QUERY, "rerank(depth=12)", k=12)
    relevant = sorted(["d5", "d9"], key=first.index)  # equal probability: first-stage order
    assert [d for d, _ in hits] == relevant + [d for d in first if d not in relevant]
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True) and len(
        {s for _, s in hits}
    ) == 12
    shallow = searcher.search(QUERY, "rerank(depth=2)", k=5)  # beyond depth: the first stage, in order
    assert [d for d, _ in shallow][2:] == first[2:5]


def test_expand_repeats_the_query_for_bm25(store, fake, provider, tmp_path, monkeypatch):
    provider.rule = lambda messages, params: "Lift of a wing at mach five."
    searched = []
    real = store.search.fts
    monkeypatch.setattr(
        store.search, "fts", lambda c, text, k, *where: searched.append(text) or real(c, text, k, *where)
    )
    searcher = Searcher(store, "c", lambda: fake, llm=client(tmp_path))
    searcher.search(QUERY, "expand", k=5)
    assert searched == [fts_query(" ".join([QUERY] * 5 + ["Lift of a wing at mach five."]))]
    assert provider.calls[0][1]["temperature"] == 0.0
    searcher.search(QUERY, "expand(first=dense)", k=5)
    assert fake.as_queries[-1] == f"{QUERY} [SEP] Lift of a wing at mach five."


def test_llm_methods_without_an_llm_fail_clearly(store, fake):
    searcher = Searcher(store, "c", lambda: fake)
    for method in ("hyde", "expand", "rerank", "rede-rf"):
        with pytest.raises(LLMUnavailableError, match="pass llm= or llm_factory="):
            searcher.search(QUERY, method)


def test_llm_is_built_lazily(store, fake, provider, tmp_path):
    built = []
    searcher = Searcher(store, "c", lambda: fake, llm_factory=lambda: built.append(1) or client(tmp_path))
    searcher.search(QUERY, "prf")
    assert not built
    searcher.search(QUERY, "hyde(n=1)")
    searcher.search(QUERY, "hyde(n=2)")
    assert built == [1]


def test_failing_and_junk_llm_degrades_queries_to_fallbacks(store, fake, provider, tmp_path):
    bad = litellm.BadRequestError(message="context too long", llm_provider="zsr-fake", model="m")

    def rule(messages, params):
        prompt = prompt_of(messages)
        query = re.search(r"(?:Query|Question): (term\d+)", prompt).group(1)
        if query == "term1":
            return bad  # every call for q1 fails
        if query == "term2":
            return "   "  # q2 gets junk: nothing usable
        if "Grades:" not in prompt:
            return "a passage on wing lift"
        passage = prompt.split("Passage: ")[1].split("\n\nGrades")[0]
        if query == "term4":
            return "maybe" if passage.endswith("term4") else "0"  # one unparseable judgement
        return "1" if passage.endswith(query) else "0"

    provider.rule = rule
    searcher = Searcher(store, "c", lambda: fake, llm=client(tmp_path))
    queries = {"q0": "term0 wing", "q1": "term1 wing", "q2": "term2 wing", "q4": "term4 wing"}
    searcher.search_batch(queries, "hyde(n=2)", k=5)
    traces = searcher.last_trace
    assert traces["q0"].fallback is None and traces["q0"].llm_errors == 0
    for qid in ("q1", "q2"):
        assert traces[qid].fallback == "query: no usable hypothetical document of 2"
        assert traces[qid].llm_errors == 2 and traces[qid].llm_calls == 2

    hits = searcher.search_batch(queries, "rede-rf", k=5)
    assert all(len(h) == 5 for h in hits.values())
    assert traces is not searcher.last_trace  # a fresh trace per search
    traces = searcher.last_trace
    query = fake.encode(["term0 wing"], queries=True)[0]
    np.testing.assert_allclose(traces["q0"].vector, (query + stored(store, "d0")) / 2, rtol=1e-5)
    for qid in ("q1", "q2"):
        assert traces[qid].fallback == "query: no first-stage document judged relevant (12 judgements failed)"
    assert traces["q4"].fallback == "query: no first-stage document judged relevant (1 judgements failed)"
    assert traces["q0"].judge == "llm:zsr-fake/m:judge-v1:binary" and traces["q0"].llm_calls == 12

    reranked = searcher.search_batch(queries, "rerank(depth=12)", k=12)
    assert reranked["q0"][0][0] == "d0" and searcher.last_trace["q0"].fallback is None
    assert searcher.last_trace["q4"].fallback == "first-stage: 1 of 12 judgements failed"
    assert reranked["q4"] == [
        (d, float(12 - i)) for i, (d, _) in enumerate(searcher.search("term4 wing", "hybrid", 12))
    ]

    searcher.judge = LLMJudge(searcher.llm, scale="graded")  # any judge over searcher.llm is metered
    searcher.search_batch({"q0": "term0 wing"}, "rerank(depth=12)", k=12)
    assert searcher.last_trace["q0"].llm_calls == 12 and searcher.last_trace["q0"].judge.endswith("graded")


def test_evaluation_records_cost_and_fallback_per_query(store, fake, provider, tmp_path):
    provider.rule = lambda messages, params: "" if "term1 " in prompt_of(messages) else "wing lift passage"
    searcher = Searcher(store, "c", lambda: fake, llm=client(tmp_path))
    warehouse = Warehouse(tmp_path / "warehouse")
    evaluate_methods(searcher, make_testset(), ["dense", "hyde(n=2)"], warehouse, measures=["nDCG@10"])
    rows = warehouse.query(
        """SELECT r.method, r.llm_model, q.* FROM queries q JOIN runs r USING (run_id)
           ORDER BY r.method, q.query_id"""
    ).to_pylist()
    dense, hyde = rows[:6], rows[6:]
    assert all(r["llm_calls"] == 0 and r["fallback"] is None and r["llm_model"] is None for r in dense)
    assert all(r["llm_calls"] == 2 and r["tokens_out"] > 0 for r in hyde)
    assert [r["query_id"] for r in hyde if r["fallback"]] == ["q1"]
    assert hyde[0]["llm_model"] == "zsr-fake/m" and hyde[1]["llm_errors"] == 2


def test_a_run_carries_its_fallback_share_and_llm_errors(store, fake, provider, tmp_path):
    provider.rule = lambda messages, params: "" if "term1 " in prompt_of(messages) else "wing lift passage"
    searcher = Searcher(store, "c", lambda: fake, llm=client(tmp_path))
    warehouse = Warehouse(tmp_path / "warehouse")
    dense, hyde = evaluate_methods(
        searcher, make_testset(), ["dense", "hyde(n=2)"], warehouse, measures=["nDCG@10"]
    )
    assert (dense.fallback_share, dense.llm_errors) == (0.0, 0)
    assert (hyde.fallback_share, hyde.llm_errors) == (pytest.approx(1 / 6), 2)  # q1: both samples empty
    rows = warehouse.query("SELECT method, fallback_share, llm_errors FROM runs ORDER BY method").to_pylist()
    assert [(r["method"], r["fallback_share"], r["llm_errors"]) for r in rows] == [
        ("dense", 0.0, 0),
        ("hyde(n=2)", pytest.approx(1 / 6), 2),
    ]  # the warehouse, and so the report, holds the numbers the CLI shows


def test_junk_answers_are_not_replayed_from_the_cache(store, fake, provider, tmp_path):
    """A judge answer that does not parse, or an empty passage, is asked again on the next run."""
    answered: dict[str, int] = {}

    def junk_first(messages, params):
        prompt = prompt_of(messages)
        answered[prompt] = answered.get(prompt, 0) + 1
        if answered[prompt] == 1:
            return "maybe" if "Grades:" in prompt else "   "
        return "1" if "Grades:" in prompt else "a passage on wing lift"

    provider.rule = junk_first
    searcher = Searcher(store, "c", lambda: fake, llm=client(tmp_path))
    searcher.search(QUERY, "rerank(depth=3)", k=5)
    assert searcher.last_trace["q"].fallback == "first-stage: 3 of 3 judgements failed"
    searcher.search(QUERY, "rerank(depth=3)", k=5)
    trace = searcher.last_trace["q"]
    assert (trace.fallback, trace.llm_errors, trace.cache_hits, len(provider.calls)) == (None, 0, 0, 6)
    searcher.search(QUERY, "rerank(depth=3)", k=5)  # the valid answers are cached
    assert (searcher.last_trace["q"].cache_hits, len(provider.calls)) == (3, 6)

    searcher.search(QUERY, "hyde(n=1)", k=5)
    assert searcher.last_trace["q"].fallback == "query: no usable hypothetical document of 1"
    searcher.search(QUERY, "hyde(n=1)", k=5)
    assert (searcher.last_trace["q"].fallback, searcher.last_trace["q"].cache_hits) == (None, 0)
