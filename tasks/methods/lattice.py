"""LATTICE (LLM-guided hierarchical retrieval): a beam search down the corpus's semantic tree.

The tree and its node summaries are built offline (:mod:`tasks.ingest.lattice`). Online, the judge scores
the children of the nodes on the beam, a node by its summary and a document by its text, and each scored
child gets a path relevance: ``alpha x`` its parent's ``+ (1 - alpha) x`` the judge's P(relevant) for it,
the root at 1 (the paper's path relevance, with its momentum ``alpha``). Each step expands the ``beam``
scored, unexpanded nodes of highest path relevance, anywhere in the tree (so a branch that turns out
poor gives way to a better one scored earlier), until the per-query judge budget would be passed or
nothing is left to expand. Every query of a batch advances one step at a time, so each step's judgements
go to the judge together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import BaseModel, Field

from storage.lattice import Tree
from storage.types import Qrels
from tasks.methods.base import FROZEN, MethodSpec, Ranking, Retriever
from tasks.methods.judged import JudgedParams, judge_candidates, relevance

# A walk asks one voter per node and keeps its own count against max_calls (a pair judged earlier in the
# search, e.g. by a first stage, is reused from the search's memo all the same).
ONE_VOTE = JudgedParams()


class LatticeParams(BaseModel):
    """LATTICE: the judge walks the corpus's semantic tree (beam search), documents ranked by path relevance.

    Path relevance = alpha x the parent's + (1 - alpha) x the judge's P(relevant) for the node (a grade
    counts as 1 when relevant), the root at 1. Documents the walk never judged score as judged not relevant
    under their deepest judged node; ties follow the first stage. Deviation from the paper: its
    calibration (scoring known nodes of other branches in each slate and fitting a latent score per node)
    is left out: the judge's probabilities are taken as calibrated. Needs the corpus's tree (`zsr
    lattice`); with the LLM judge a node is judged on its summary, with the passage prompt.
    """

    model_config = FROZEN
    beam: int = Field(default=2, ge=1, description="nodes expanded per step")
    alpha: float = Field(default=0.5, ge=0.0, lt=1.0, description="weight of the parent's path relevance")
    max_calls: int = Field(default=40, ge=1, description="judge calls per query, at most")
    first: MethodSpec = Field(default="dense", description="breaks ties among equal path relevance")


@dataclass
class Walk:
    """One query's walk: the path relevance of every judged node and document, and what is left to expand."""

    score: dict[str, float]
    unexpanded: set[str]
    calls: int = 0
    steps: list[list[str]] = field(default_factory=list)  # the nodes expanded, step by step


def step(tree: Tree, walk: Walk, beam: int, max_calls: int) -> list[str]:
    """The nodes the next step expands: the best unexpanded ones, as many as ``beam`` and the budget allow."""
    chosen: list[str] = []
    cost = walk.calls
    for node in sorted(walk.unexpanded, key=lambda n: (-walk.score[n], n)):
        size = len(tree.nodes[node].child_nodes) + len(tree.nodes[node].child_docs)
        if len(chosen) == beam or cost + size > max_calls:
            break
        chosen.append(node)
        cost += size
    return chosen


def walk_tree(
    retriever: Retriever, tree: Tree, queries: Mapping[str, str], params: LatticeParams
) -> dict[str, Walk]:
    """Each query's walk down ``tree``, every step's judgements asked of the judge in one batch."""
    walks = {qid: Walk({tree.root: 1.0}, {tree.root}) for qid in queries}
    judged_by = _Summaries(retriever, tree)
    while True:
        expand = {qid: step(tree, w, params.beam, params.max_calls) for qid, w in walks.items()}
        expand = {qid: nodes for qid, nodes in expand.items() if nodes}
        if not expand:
            return walks
        children = {
            qid: [c for n in nodes for c in (*tree.nodes[n].child_nodes, *tree.nodes[n].child_docs)]
            for qid, nodes in expand.items()
        }
        verdicts = judge_candidates(
            cast(Retriever, judged_by), ONE_VOTE, {q: queries[q] for q in expand}, children
        )
        for qid, nodes in expand.items():
            walk = walks[qid]
            walk.unexpanded -= set(nodes)
            walk.steps.append(nodes)
            walk.calls += len(children[qid])
            for verdict in verdicts[qid]:
                child = verdict.doc_id
                parent = walk.score[str(tree.parent(child))]
                local = min(1.0, relevance(verdict))  # a failed judgement (grade None) counts as not relevant
                walk.score[child] = params.alpha * parent + (1 - params.alpha) * local
                if child in tree.nodes:
                    walk.unexpanded.add(child)


def rank_documents(tree: Tree, walk: Walk, alpha: float, first: Mapping[str, float], k: int) -> Ranking:
    """Every document by path relevance, the unjudged as judged not relevant; ties by ``first``, then id.

    Scores are rank-based (n, n-1, ...), as rerank's, so any evaluator keeps this order.
    """
    inherited: dict[str, float] = {}  # the path relevance of each node's deepest judged node, itself included
    scores: dict[str, float] = {}
    for node_id in tree.top_down():
        above = tree.parent(node_id)
        inherited[node_id] = walk.score.get(node_id, inherited[above] if above else 1.0)
        for doc in tree.nodes[node_id].child_docs:
            scores[doc] = walk.score.get(doc, alpha * inherited[node_id])
    order = sorted(scores, key=lambda d: (-scores[d], -first.get(d, float("-inf")), d))[:k]
    return [(d, float(len(order) - i)) for i, d in enumerate(order)]


def retrieve_lattice(
    retriever: Retriever, params: LatticeParams, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    """Each query's walk down the corpus's tree, its documents ranked by path relevance."""
    tree = retriever.lattice()
    walks = walk_tree(retriever, tree, queries, params)
    first = retriever.retrieve(queries, params.first, k)
    return {qid: rank_documents(tree, walks[qid], params.alpha, dict(first[qid]), k) for qid in queries}


def subtree_qrels(tree: Tree, qrels: Qrels) -> Qrels:
    """``qrels`` with every node graded as the best document under it: the simulation judge's truth.

    An oracle judge over these finds a node relevant exactly when a relevant document lies under it.
    """
    under = tree.docs_under()
    out: Qrels = {}
    for qid, grades in qrels.items():
        nodes = {n: max((grades.get(d, 0) for d in docs), default=0) for n, docs in under.items()}
        out[qid] = {**grades, **{n: g for n, g in nodes.items() if g > 0}}
    return out


class _Summaries:
    """The retriever as the judge sees it during a walk: a node's text is its summary."""

    def __init__(self, retriever: Retriever, tree: Tree) -> None:
        self._retriever, self._tree = retriever, tree

    def __getattr__(self, name: str) -> Any:
        return getattr(self._retriever, name)

    def document_texts(self, doc_ids: list[str]) -> dict[str, str]:
        """Title and text of each document, and the summary of each node."""
        nodes = self._tree.nodes
        texts = self._retriever.document_texts([d for d in doc_ids if d not in nodes])
        return {**texts, **{n: nodes[n].summary for n in doc_ids if n in nodes}}
