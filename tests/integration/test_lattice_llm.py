"""LATTICE end to end with the bundled LLM: it writes every node's summary, a rebuild is answered from the
LLM cache, and the lattice method walks the tree with the LLM judge, its calls counted per query."""

from __future__ import annotations

import pytest

from tests.fakes import fake_workspace

pytestmark = pytest.mark.slow


def calls(ws) -> list[bool]:
    """Whether each summary request so far was answered from the LLM cache, oldest first."""
    ws.llm.flush()  # usage rows go to the warehouse in batches
    frame = ws.sql("SELECT cache_hit FROM llm_calls WHERE purpose = 'lattice-summary' ORDER BY created_at")
    return frame["cache_hit"].to_list()


def test_bundled_llm_summarises_the_tree_and_judges_the_walk(tmp_path, monkeypatch):
    with fake_workspace(tmp_path, monkeypatch) as ws:
        assert ws.llm.config.model == "zsr-local/smollm2"
        built = ws.build_lattice("c", branching=10)  # 3 nodes: the root and two below it
        tree = ws.searcher("c").lattice()
        assert built.rebuilt and built.failed == 0 and built.summarised == built.nodes == len(tree.nodes)
        assert all(n.summary.strip() and n.input_hash for n in tree.nodes.values())  # none extractive
        assert calls(ws) == [False] * built.nodes  # each asked once, none from the cache

        again = ws.build_lattice("c", branching=10, rebuild=True)  # same clusters, same prompts
        assert again.summarised == built.nodes and calls(ws) == [False] * built.nodes + [True] * built.nodes

        engine = ws.searcher("c")
        ranking = engine.search("term3 wing", "lattice(max_calls=12)", k=12)
        trace = engine.last_trace["q"]
        assert sorted(d for d, _ in ranking) == sorted(f"d{i}" for i in range(12))
        assert 0 < trace.llm_calls <= 12 and trace.judge.startswith("llm:zsr-local/smollm2")
