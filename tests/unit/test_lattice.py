"""LATTICE: the tree (every document one leaf), its summaries (cached, refreshed only over changed
documents), and the walk (a perfect simulation judge finds the relevant documents with fewer calls than
judging every leaf)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from storage.lattice import Node, Tree, attach, cluster
from storage.llm_cache import ResponseCache
from tasks.ingest.index import reindex
from tasks.ingest.lattice import build_lattice
from tasks.llm.client import LLMClient, LLMConfig
from tasks.llm.judge import Judgement, OracleJudge, Pair
from tasks.methods.lattice import LatticeParams, subtree_qrels
from tasks.methods.registry import parse_method
from tasks.methods.search import Searcher
from tests import fake_llm
from tests.fakes import make_docs

DOCS = make_docs(40)


class Counting:
    """A judge that counts the pairs it is asked per query and remembers the texts it read."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, "counting"
        self.calls: Counter[str] = Counter()
        self.texts: dict[str, str] = {}

    def judge(self, pairs: Sequence[Pair]) -> list[Judgement]:
        for qid, _, doc_id, text in pairs:
            self.calls[qid] += 1
            self.texts[doc_id] = text
        return self.inner.judge(pairs)


@pytest.fixture
def provider():
    fake = fake_llm.install()
    fake.rule = lambda messages, params: f"topics {abs(hash(messages[-1]['content'])) % 10**6}"
    return fake


@pytest.fixture
def llm(tmp_path) -> LLMClient:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    return LLMClient(LLMConfig(model="zsr-fake/m"), cache, sleep=lambda s: None)


@pytest.fixture
def store(tmp_store, fake):
    reindex(tmp_store, "c", DOCS, fake.space, lambda: fake)
    return tmp_store


def tree_of(store):
    return store.lattices.get("c", store.registry.corpus("c").space)


@pytest.mark.parametrize("branching", [2, 3, 10])
def test_every_document_is_exactly_one_leaf(branching):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(57, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"d{i}" for i in range(57)]
    tree = cluster(ids, vectors, branching)
    assert sorted(tree.doc_ids()) == sorted(ids)  # each once: a document under two nodes shows twice
    for node in tree.nodes.values():
        assert 1 <= len(node.child_nodes) + len(node.child_docs) <= branching
    assert sorted(tree.docs_under()[tree.root]) == sorted(ids)
    assert cluster(ids, vectors, branching).nodes == tree.nodes  # content-derived ids


def test_a_small_corpus_is_one_node_and_bad_input_is_refused():
    tree = cluster(["a", "b"], np.eye(2), 3)
    assert list(tree.nodes) == [tree.root] and tree.nodes[tree.root].child_docs == ("a", "b")
    with pytest.raises(ValueError, match="branching factor"):
        cluster(["a", "b"], np.eye(2), 1)


def test_attach_moves_nothing_but_the_added_and_deleted():
    tree = Tree(
        "r",
        {
            "r": Node("r", ("n1", "n2"), ("e",), "all"),
            "n1": Node("n1", (), ("a", "b"), "ab"),
            "n2": Node("n2", (), ("c",), "c"),
        },
    )
    changed = attach(tree, {"new": "n1"}, {"c", "e"})
    assert set(changed.nodes) == {"r", "n1"}  # n2, left with no child, is taken out of the root
    assert changed.nodes["r"] == Node("r", ("n1",), (), "all")
    assert changed.nodes["n1"] == Node("n1", (), ("a", "b", "new"), "ab")
    assert changed.parent("new") == "n1" and changed.path("new") == ["n1", "r"]


def test_summaries_are_written_once_cached_and_refreshed_only_over_changed_documents(
    store, fake, llm, provider
):
    first = build_lattice(store, "c", llm, branching=3)
    tree = tree_of(store)
    assert first.rebuilt and first.summarised == first.nodes == len(tree.nodes) == len(provider.calls)
    assert all(n.summary.startswith("topics") for n in tree.nodes.values())

    again = build_lattice(store, "c", llm, branching=3)
    assert (again.summarised, again.kept, len(provider.calls)) == (0, len(tree.nodes), first.nodes)

    rebuilt = build_lattice(store, "c", llm, branching=3, rebuild=True)  # new nodes, same prompts: the cache
    assert rebuilt.summarised == first.nodes and len(provider.calls) == first.nodes
    assert tree_of(store).nodes == tree.nodes

    changed = replace(DOCS[7], text=DOCS[7].text + " supersonic")
    reindex(store, "c", [changed if d is DOCS[7] else d for d in DOCS], fake.space, lambda: fake)
    refreshed = build_lattice(store, "c", llm, branching=3)
    path = tree.path("d7")
    assert refreshed.summarised == len(path) == len(provider.calls) - first.nodes
    after = tree_of(store)
    assert {n for n in tree.nodes if after.nodes[n].summary != tree.nodes[n].summary} == set(path)


def test_added_and_deleted_documents_change_only_their_paths(store, fake, llm, provider):
    build_lattice(store, "c", llm, branching=3)
    tree = tree_of(store)
    twin = replace(DOCS[5], doc_id="twin")  # the same text: its nearest kept document is d5
    reindex(store, "c", [*DOCS[1:], twin], fake.space, lambda: fake)
    asked = len(provider.calls)
    report = build_lattice(store, "c", llm, branching=3)
    after = tree_of(store)
    assert (report.added, report.deleted) == (1, 1)
    assert after.parent("twin") == tree.parent("d5") and "d0" not in after.doc_ids()
    expected = set(tree.path("d5")) | {n for n in tree.path("d0") if n in after.nodes}
    assert report.summarised == len(provider.calls) - asked == len(expected)


def test_without_an_llm_summaries_are_extracted(store):
    report = build_lattice(store, "c", None, branching=4)
    tree = tree_of(store)
    assert report.summarised == len(tree.nodes) and all(n.summary for n in tree.nodes.values())
    assert build_lattice(store, "c", None, branching=4).summarised == 0


def test_a_perfect_judge_walks_to_the_relevant_documents_with_fewer_calls(store, fake):
    build_lattice(store, "c", None, branching=4)
    tree = tree_of(store)
    qrels = {f"q{i}": {f"d{i}": 2} for i in (3, 17, 29)}
    judge = Counting(OracleJudge(subtree_qrels(tree, qrels)))
    searcher = Searcher(store, "c", lambda: fake, judge=judge)
    queries = {f"q{i}": "wing" for i in (3, 17, 29)}  # the words say nothing: only the walk can find them
    budget = 4 * max(len(tree.path(f"d{i}")) for i in (3, 17, 29))  # one node's children per level
    assert budget < len(DOCS)
    found = searcher.search_batch(queries, f"lattice(beam=1, max_calls={budget})", k=5)
    for i in (3, 17, 29):
        assert found[f"q{i}"][0][0] == f"d{i}"
        assert judge.calls[f"q{i}"] <= budget
    assert searcher.last_trace["q3"].judge == "counting"


def test_the_budget_caps_judge_calls_and_nodes_are_judged_on_their_summaries(store, fake):
    build_lattice(store, "c", None, branching=4)
    tree = tree_of(store)
    judge = Counting(OracleJudge({}))
    searcher = Searcher(store, "c", lambda: fake, judge=judge)
    ranking = searcher.search("wing", "lattice(beam=3, max_calls=10)", k=len(DOCS))
    assert 0 < judge.calls["q"] <= 10
    assert sorted(d for d, _ in ranking) == sorted(d.doc_id for d in DOCS)  # unjudged ones rank too
    node = next(n for n in judge.texts if n in tree.nodes)
    assert judge.texts[node] == tree.nodes[node].summary


def test_without_a_tree_the_error_names_the_command(store, fake):
    with pytest.raises(LookupError, match="zsr lattice c"):
        Searcher(store, "c", lambda: fake, judge=OracleJudge({})).search("wing", "lattice")


def test_method_string_round_trips():
    spec = "lattice(alpha=0.3, beam=3, first=bm25)"
    assert str(parse_method(spec)) == spec
    assert parse_method("lattice").params == LatticeParams()
