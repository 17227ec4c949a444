"""Synthetic query generation: parsing, filters, diverse sampling, resumability, with a fake provider."""

from __future__ import annotations

import litellm
import numpy as np
import pytest

from storage.llm_cache import ResponseCache
from tasks.ingest.index import reindex
from tasks.llm.client import LLMClient, LLMConfig, LLMError
from tasks.methods.search import Searcher
from tasks.synthetic.generate import Filters, copy_score, sample_documents, synthesize
from tasks.synthetic.generators import ExtractiveGenerator, LLMGenerator, parse_query
from tests import fake_llm
from tests.fakes import make_docs


@pytest.mark.parametrize(
    ("raw", "text", "reason"),
    [
        ("What is the lift of a wing?", "What is the lift of a wing?", None),
        ('Query: "shock wave drag"\nmore text', "shock wave drag", None),
        ("1. how do boundary layers separate", "how do boundary layers separate", None),
        ('{"query": "heat transfer at mach 5"}', "heat transfer at mach 5", None),
        ("", "", "empty output"),
        ("   \n  ", "", "empty output"),
        ("I'm sorry, I can't help with that.", "I'm sorry, I can't help with that.", "refusal"),
    ],
)
def test_parse_query(raw, text, reason):
    assert parse_query(raw) == (text, reason)


def test_copy_score():
    passage = "The boundary layer separates near the trailing edge of the wing."
    assert copy_score("boundary layer separates near the trailing edge", passage) == 1.0
    assert copy_score("where does the boundary layer separate", passage) == pytest.approx(3 / 6)
    assert copy_score("", passage) == 0.0


def test_sampling_draws_one_document_per_cluster():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8)
    vectors = np.vstack([c + 0.01 * rng.normal(size=(10, 8)) for c in centres])
    ids = [f"c{i // 10}-{i % 10}" for i in range(40)]
    chosen = sample_documents(ids, vectors, 4, seed=1)
    assert sorted(c.split("-")[0] for c in chosen) == ["c0", "c1", "c2", "c3"]
    assert chosen == sample_documents(ids, vectors, 4, seed=1)  # reproducible
    assert sample_documents(ids[:3], vectors[:3], 5) == ids[:3]


@pytest.fixture
def corpus(tmp_store, fake):
    reindex(tmp_store, "c", make_docs(8), fake.space, lambda: fake)
    return tmp_store, Searcher(tmp_store, "c", lambda: fake)


@pytest.fixture
def provider():
    return fake_llm.install()


def client(tmp_path, **config) -> LLMClient:
    return LLMClient(
        LLMConfig(model="zsr-fake/m", **config),
        ResponseCache(tmp_path / "cache.sqlite"),
        sleep=lambda s: None,
    )


def doc_of(messages) -> int:
    return int(messages[-1]["content"].split("term")[1].split()[0])


def test_llm_queries_are_parsed_filtered_and_stored(corpus, provider, tmp_path):
    store, searcher = corpus
    answers = {
        0: "Query: term0 wing?",  # fine
        1: "",  # nothing
        2: "I'm sorry, I cannot do that.",  # refusal
        3: "wing flow heat shock boundary layer",  # copied from the document
        4: "term4 wing?",
        5: "term4 wing?",  # exists for another document: fails the round trip
        6: "x",  # too short
        7: '{"query": "what about term7 and drag"}',
    }
    provider.rule = lambda messages, params: answers[doc_of(messages)]
    report = synthesize(
        store,
        "c",
        LLMGenerator(client(tmp_path)),
        search=searcher.search_batch,
        # bm25: term matches decide (the fake embedder's hashed vectors weigh stop words)
        filters=Filters(roundtrip_k=1, roundtrip_method="bm25"),
    )
    rows = {r["doc_id"]: r for r in store.synthetic.table("c").to_arrow().to_pylist()}
    assert {d: r["kept"] for d, r in rows.items()} == {
        "d0": True,
        "d1": False,
        "d2": False,
        "d3": False,
        "d4": True,
        "d5": False,
        "d6": False,
        "d7": True,
    }
    assert rows["d1"]["reason"] == "empty output" and rows["d2"]["reason"] == "refusal"
    assert rows["d3"]["reason"].startswith("copied") and rows["d3"]["copy_score"] == 1.0
    assert rows["d5"]["reason"].startswith("round-trip") and rows["d5"]["roundtrip_rank"] is None
    assert rows["d6"]["reason"].startswith("length")
    assert rows["d0"]["roundtrip_rank"] == 1 and rows["d0"]["raw"] == "Query: term0 wing?"
    assert rows["d7"]["text"] == "what about term7 and drag"
    assert report.kept == 3 and report.generated == 8 and report.llm_calls == 8
    assert report.rejected == {
        "empty output": 1,
        "refusal": 1,
        "copied from the document": 1,
        "round-trip": 1,
        "length": 1,
    }
    assert all(params["temperature"] == 0.7 for _, params in provider.calls)


def test_samples_differ_and_duplicates_are_flagged(corpus, provider, tmp_path):
    store, _ = corpus
    provider.rule = lambda messages, params: (
        "what is term1 about" if params.get("seed", 0) < 2 else "term1 wing drag"
    )
    synthesize(
        store,
        "c",
        LLMGenerator(client(tmp_path)),
        per_doc=3,
        doc_ids=["d1"],
        filters=Filters(roundtrip_k=None),
    )
    rows = sorted(store.synthetic.table("c").to_arrow().to_pylist(), key=lambda r: r["sample"])
    assert [r["kept"] for r in rows] == [True, False, True]
    assert rows[1]["reason"].startswith("near-duplicate") and rows[1]["duplicate_of"] == rows[0]["query_id"]
    assert sorted(p["seed"] for _, p in provider.calls) == [0, 1, 2]


def test_permanent_failure_stops_keeps_progress_and_resumes_without_repeats(corpus, provider, tmp_path):
    store, _ = corpus
    bad = litellm.BadRequestError(message="model not loaded", llm_provider="zsr-fake", model="m")
    provider.rule = lambda messages, params: (
        bad if doc_of(messages) >= 4 else f"question about term{doc_of(messages)}"
    )
    with pytest.raises(LLMError, match=r"zsr-fake/m: BadRequestError.*model not loaded"):
        synthesize(store, "c", LLMGenerator(client(tmp_path)), batch=4, filters=Filters(roundtrip_k=None))
    assert store.synthetic.table("c").count_rows() == 4  # the first batch is safe
    provider.calls.clear()
    provider.rule = lambda messages, params: f"question about term{doc_of(messages)}"
    report = synthesize(
        store, "c", LLMGenerator(client(tmp_path)), batch=4, filters=Filters(roundtrip_k=None)
    )
    assert sorted(doc_of(m) for m, _ in provider.calls) == [4, 5, 6, 7]  # only what was missing
    assert (report.already_done, report.generated, report.kept) == (4, 4, 8)


def test_retries_ride_out_rate_limits(corpus, provider, tmp_path):
    store, _ = corpus
    failures = {"left": 3}

    def rule(messages, params):
        if failures["left"]:
            failures["left"] -= 1
            return litellm.RateLimitError(message="429", llm_provider="zsr-fake", model="m")
        return f"question about term{doc_of(messages)}"

    provider.rule = rule
    report = synthesize(
        store,
        "c",
        LLMGenerator(client(tmp_path, concurrency=1)),
        doc_ids=["d2"],
        filters=Filters(roundtrip_k=None),
    )
    assert report.kept == 1 and len(provider.calls) == 4


def test_extractive_generator_needs_no_llm(corpus):
    store, searcher = corpus
    report = synthesize(
        store,
        "c",
        ExtractiveGenerator(),
        per_doc=2,
        search=searcher.search_batch,
    )
    rows = store.synthetic.table("c").to_arrow().to_pylist()
    assert len(rows) == 16 and report.generator == "extractive"
    assert not any((r["reason"] or "").startswith("copied") for r in rows)  # copying is its design
    assert all(r["copy_score"] == 1.0 for r in rows)  # and the score is still stored
    assert all(r["generator"] == "extractive" and r["prompt_version"] == "ict-sentence-v1" for r in rows)
    again = synthesize(store, "c", ExtractiveGenerator(), per_doc=2)
    assert again.generated == 0 and again.already_done == 16


def test_unknown_documents_and_styles(corpus, tmp_path, provider):
    store, _ = corpus
    with pytest.raises(ValueError, match="not in corpus"):
        synthesize(store, "c", ExtractiveGenerator(), doc_ids=["nope"])
    with pytest.raises(ValueError, match="unknown style"):
        LLMGenerator(client(tmp_path), style="haiku")
