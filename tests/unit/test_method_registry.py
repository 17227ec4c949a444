"""The method registry: one entry adds a method everywhere; nested method strings parse, print and run."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import numpy as np
import pytest
from pydantic import BaseModel, Field

from tasks.ingest.index import reindex
from tasks.llm.judge import OracleJudge
from tasks.methods import registry
from tasks.methods.base import FROZEN, MethodSpec, Ranking, Retriever, rank
from tasks.methods.registry import REGISTRY, MethodEntry, calls_llm, parse_method, split_methods
from tasks.methods.search import Searcher
from tests.fakes import make_docs

QUERY = "term3 wing"
ORDER = [
    *("dense", "bm25", "hybrid", "multiview", "d2q", "prf", "rm3", "hyde", "rede-rf", "expand", "rerank"),
    "promptreps",
    "lattice",
]


@pytest.fixture
def store(tmp_store, fake):
    reindex(tmp_store, "c", make_docs(12), fake.space, lambda: fake)
    return tmp_store


class ToyParams(BaseModel):
    """Toy: the first stage's ranking upside down.

    A second paragraph that listings leave out.
    """

    model_config = FROZEN
    first: MethodSpec = Field(default="bm25", description="first-stage method, parameters and all")
    depth: int = Field(default=5, ge=1, description="first-stage documents turned over")


def retrieve_toy(
    retriever: Retriever, params: ToyParams, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    first = retriever.retrieve(queries, params.first, params.depth)
    for qid in queries:
        retriever.trace(qid).fallback = "none: a toy"
    return {qid: rank({d: -s for d, s in ranking}, k) for qid, ranking in first.items()}


@pytest.fixture
def toy(monkeypatch):
    """``toy`` registered for one test: one entry, nothing else."""
    entry = MethodEntry("toy", ToyParams, retrieve_toy, calls_llm=True)
    monkeypatch.setitem(registry.REGISTRY, "toy", entry)  # type: ignore[index]
    return entry


def test_the_registry_lists_every_method_in_order():
    assert list(REGISTRY) == ORDER
    assert all(name == entry.name for name, entry in REGISTRY.items())
    assert {name for name, entry in REGISTRY.items() if entry.calls_llm} == {
        "hyde",
        "rede-rf",
        "expand",
        "rerank",
        "lattice",
    }
    assert REGISTRY["hybrid"].summary == "Fusion of dense and bm25 rankings, each cut at ``depth``."
    assert all(e.summary and "\n" not in e.summary for e in REGISTRY.values())


def test_one_registration_adds_a_method(toy, store, fake):
    assert toy.summary == "Toy: the first stage's ranking upside down."
    method = parse_method("toy(depth=3, first=hybrid(fusion=rrf))")
    assert isinstance(method.params, ToyParams) and str(method) == "toy(depth=3, first=hybrid(fusion=rrf))"
    assert str(parse_method("prf(first=toy(first=dense))")) == "prf(first=toy(first=dense))"
    assert calls_llm("toy") and calls_llm("prf(first=toy)") and not calls_llm("prf(first=hybrid)")

    searcher = Searcher(store, "c", lambda: fake)
    hybrid = searcher.search(QUERY, "hybrid(fusion=rrf)", k=3)
    hits = searcher.search(QUERY, method, k=3)
    assert [d for d, _ in hits] == [d for d, _ in hybrid][::-1]
    assert searcher.last_trace["q"].fallback == "none: a toy"
    with pytest.raises(ValueError, match="toy has no parameter 'k'"):
        parse_method("toy(k=3)")


def test_an_unregistered_method_is_unknown_again():
    assert "toy" not in REGISTRY  # the fixture's entry went with its test
    with pytest.raises(ValueError, match="unknown method 'toy'"):
        parse_method("toy")


@pytest.mark.parametrize(
    ("spec", "canonical", "first"),
    [
        (
            "rerank(first=hybrid(fusion=rrf), depth=30)",
            "rerank(depth=30, first=hybrid(fusion=rrf))",
            "hybrid(fusion=rrf)",
        ),
        ("prf(first=rede-rf(first=hybrid))", "prf(first=rede-rf)", "rede-rf"),  # rede-rf's default first
        ("prf(first=rede-rf(first=bm25))", "prf(first=rede-rf(first=bm25))", "rede-rf(first=bm25)"),
        (
            "rerank( first = hybrid ( rrf_k=10 , fusion=rrf ) )",
            "rerank(first=hybrid(fusion=rrf, rrf_k=10))",
            "hybrid(fusion=rrf, rrf_k=10)",
        ),
        ("prf(first='hybrid(fusion=rrf)')", "prf(first=hybrid(fusion=rrf))", "hybrid(fusion=rrf)"),
        ("prf(first=dense())", "prf", "dense"),  # the default, spelled out, is left out
        ("hyde(context=3, first=prf(first=bm25, k=2))", None, "prf(first=bm25, k=2)"),
        (
            "rerank(first=prf(first=rerank(depth=5, first=hybrid(depth=50))))",
            None,
            "prf(first=rerank(depth=5, first=hybrid(depth=50)))",
        ),
    ],
)
def test_nested_methods_round_trip(spec, canonical, first):
    method = parse_method(spec)
    canonical = canonical or spec
    assert str(method) == canonical
    assert str(parse_method(str(method))) == canonical
    # Run provenance stores the parameters' JSON: the nested method is there as its canonical string.
    assert json.loads(method.params.model_dump_json())["first"] == first


def test_nested_first_stages_rank_as_the_inner_method_does(store, fake):
    judge = OracleJudge({"q": {"d9": 1, "d5": 2}})
    searcher = Searcher(store, "c", lambda: fake, judge=judge)
    assert searcher.search(QUERY, "rerank(first=hybrid)", k=8) == searcher.search(QUERY, "rerank", k=8)
    assert searcher.search(QUERY, "rerank(first=hybrid())", k=8) == searcher.search(QUERY, "rerank", k=8)

    first = [d for d, _ in searcher.search(QUERY, "hybrid(fusion=rrf, rrf_k=5)", k=12)]
    hits = searcher.search(QUERY, "rerank(depth=12, first=hybrid(fusion=rrf, rrf_k=5))", k=12)
    relevant = sorted(["d5", "d9"], key=first.index)
    assert [d for d, _ in hits] == relevant + [d for d in first if d not in relevant]

    feedback = [d for d, _ in searcher.search(QUERY, "rerank(depth=12, first=bm25)", k=3)]
    searcher.search(QUERY, "prf(first=rerank(depth=12, first=bm25))", k=5)
    query = fake.encode([QUERY], queries=True)[0]
    vectors = searcher.document_vectors(feedback)
    expected = query + 0.75 * np.mean([vectors[d] for d in feedback], axis=0)
    np.testing.assert_allclose(searcher.last_trace["q"].vector, expected, rtol=1e-5)
    assert searcher.last_trace["q"].judge == "oracle"  # the nested stage records into the same trace


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("dense", False),
        ("rm3", False),
        ("prf", False),
        ("prf(first=hybrid)", False),
        ("prf(first=hyde)", True),
        ("prf(first=prf(first=rerank(first=bm25)))", True),
        ("hyde(first=bm25)", True),
        ("rerank(first=dense)", True),
        ("expand", True),
    ],
)
def test_calls_llm_looks_through_nested_methods(method, expected):
    assert calls_llm(method) is expected
    assert calls_llm(parse_method(method)) is expected


def test_split_methods_keeps_nested_commas():
    text = "dense, rerank(first=hybrid(fusion=rrf, rrf_k=10), depth=30),prf(first=rede-rf(first=hybrid)) ,"
    assert split_methods(text) == [
        "dense",
        "rerank(first=hybrid(fusion=rrf, rrf_k=10), depth=30)",
        "prf(first=rede-rf(first=hybrid))",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        # unbalanced parentheses: the counts, the column of the culprit, the fix
        (
            "rerank(first=hybrid(fusion=rrf)",
            r"found 2 '\(' and 1 '\)'\): the '\(' \(column 7\) is never closed",
        ),
        ("hybrid(fusion=rrf))", r"the '\)' \(column 19\) closes nothing; remove it"),
        ("hybrid)", r"found 0 '\(' and 1 '\)'"),
        # a missing '=', at the top or nested
        ("rerank(first=hybrid(depth))", r"parameter 'depth' \(column 21\) must be written key=value"),
        # unknown methods, nested too: the path, the column, the list and `zsr methods`
        (
            "colbert",
            r"^unknown method 'colbert'; available: dense, bm25, .*promptreps, lattice "
            r"\(see `zsr methods`\)$",
        ),
        (
            "rede-rf(first=colbert)",
            r"first: unknown method 'colbert' \(column 15\); available: dense, .*zsr methods",
        ),
        ("prf(first=rede-rf(first=splade(x=1)))", r"first\.first: unknown method 'splade' \(column 25\)"),
        ("prf(first=)", r"first: the method name is missing \(column 11\)"),
        # unknown parameters: which method, its parameters
        (
            "rerank(first=hybrid(bogus=1))",
            r"first: hybrid has no parameter 'bogus' \(column 21\); its parameters: fusion",
        ),
        ("prf(first=bm25(k=3))", r"first: bm25 takes no parameters \(column 16\); write bm25 alone"),
        # bad values: pydantic's message under the parameter's path, nested path included
        (
            "rerank(first=hybrid(fusion=max), depth=30)",
            r"first\.fusion: Input should be 'score' or 'rrf', got 'max' \(column 28\)",
        ),
        ("rerank(depth=0)", r"depth: Input should be greater than or equal to 1, got '0' \(column 14\)"),
        (
            "prf(first=hybrid(dense_weight=0, bm25_weight=0))",
            r"first: dense_weight and bm25_weight are both 0.* \(column 11\)",
        ),
        # text after the closing parenthesis, at the top or nested
        ("rerank(first=hybrid) x", r"but 'x' follows the '\)' \(column 22\); remove it"),
        ("rerank(first=hybrid(fusion=rrf) x)", r"but 'x' follows the '\)' \(column 33\)"),
    ],
)
def test_syntax_errors_point_at_the_fault(spec, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_method(spec)
    text = str(error.value)
    assert "\n" not in text  # the CLI prints it on one line
    assert spec == "colbert" or text.startswith(f"method {spec!r}: ")
    column = re.search(r"\(column (\d+)\)", text)
    assert column is None or 0 < int(column.group(1)) <= len(spec)
