"""LATTICE's offline phase: a corpus's semantic tree, each internal node summarised by the LLM.

The tree is built once (:func:`storage.lattice.cluster`, bottom-up agglomerative over document vectors)
and then kept in step with the corpus: a refresh takes deleted documents out, puts each new document
under the node of its nearest kept document, and re-summarises only the nodes whose summary input changed.
A node's input is its children's texts (a document's title and text, cut to :data:`CHILD_CHARS`; a child
node's summary), so a changed document changes its parent's input, whose new summary changes the
grandparent's, and so on: exactly the path above the document is asked again, the rest is kept.

Summaries go through the LLM client (cached by prompt, so a rebuild over unchanged documents asks
nothing). A summary the LLM fails to write is replaced by the children's opening words and left stale
(empty ``input_hash``), so the next refresh asks again. Without an LLM every node gets that extractive
summary: enough for a simulation judge, which reads only node ids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from storage.corpus_store import CorpusStore
from storage.ids import content_hash
from storage.lattice import Tree, attach, cluster
from tasks.llm.client import Completion, Request
from tasks.llm.judge import Completer
from tasks.synthetic.generate import document_vectors

log = logging.getLogger(__name__)

BRANCHING = 10
CHILD_CHARS = 200  # of each child in a summary prompt: ten children stay near 600 tokens
SUMMARY_TOKENS = 96
EXTRACT_CHARS = 60  # of each child in an extractive summary
# Versioned: change the text, add a version.
PROMPTS = {
    "lattice-v1": (
        "Below are the items of one group in a collection of documents: documents, or summaries of smaller "
        "groups. Write one or two sentences naming the topics the group covers, so that a reader can tell "
        "which questions its documents answer.\n\nItems:\n{items}\n\nSummary:"
    )
}
PROMPT = "lattice-v1"


@dataclass
class LatticeReport:
    """What a build or refresh did: the tree's size, and which summaries were written or kept."""

    corpus: str
    documents: int
    nodes: int
    rebuilt: bool
    added: int = 0
    deleted: int = 0
    summarised: int = 0  # summaries asked of the LLM (or extracted, without one)
    kept: int = 0  # summaries whose input had not changed
    failed: int = 0  # the LLM failed: an extractive stand-in, asked again on the next refresh


def build_lattice(
    store: CorpusStore,
    corpus: str,
    llm: Completer | None,
    *,
    branching: int = BRANCHING,
    rebuild: bool = False,
) -> LatticeReport:
    """Build ``corpus``'s tree (first time, or ``rebuild``) or refresh it, and store it.

    Raises:
        ValueError: the corpus has no documents, or ``branching`` is below 2.
    """
    space = store.registry.corpus(corpus).space
    ids, vectors = document_vectors(store, corpus)
    if not ids:
        raise ValueError(f"corpus {corpus!r} has no documents: ingest some before building its LATTICE tree")
    before = None if rebuild else store.lattices.get(corpus, space)
    kept = set(before.doc_ids()) if before else set()
    current = set(ids)
    survivors = [d for d in ids if d in kept]
    if before is None or not survivors:
        tree, added, deleted = cluster(ids, vectors, branching), 0, 0
    else:
        row = {d: i for i, d in enumerate(ids)}
        new = [d for d in ids if d not in kept]
        gone = kept - current
        tree = attach(before, _nearest_parents(before, survivors, new, vectors, row), gone)
        added, deleted = len(new), len(gone)
    texts = _texts(store, corpus, ids)
    tree, summarised, failed = summarise(tree, texts, llm)
    store.lattices.put(corpus, space, tree)
    report = LatticeReport(
        corpus,
        len(ids),
        len(tree.nodes),
        rebuilt=before is None,
        added=added,
        deleted=deleted,
        summarised=summarised,
        kept=len(tree.nodes) - summarised,
        failed=failed,
    )
    log.info("%s: LATTICE tree %s", corpus, report)
    return report


def _nearest_parents(
    tree: Tree, survivors: list[str], new: list[str], vectors: np.ndarray, row: dict[str, int]
) -> dict[str, str]:
    """Each new document's parent-to-be: the node holding its most similar kept document."""
    if not new:
        return {}
    near = (vectors[[row[d] for d in new]] @ vectors[[row[d] for d in survivors]].T).argmax(axis=1)
    return {d: str(tree.parent(survivors[j])) for d, j in zip(new, near, strict=True)}


def _texts(store: CorpusStore, corpus: str, doc_ids: list[str]) -> dict[str, str]:
    rows = store.documents.fetch(corpus, doc_ids, ["doc_id", "title", "text"])
    return {r["doc_id"]: " ".join(filter(None, (r["title"], r["text"]))) for r in rows}


def summary_prompt(tree: Tree, node_id: str, texts: dict[str, str]) -> str:
    """The prompt asking for ``node_id``'s summary: its child nodes' summaries, then its documents."""
    node = tree.nodes[node_id]
    items = [tree.nodes[c].summary for c in node.child_nodes] + [texts.get(d, "") for d in node.child_docs]
    lines = "\n".join(f"- {' '.join(item.split())[:CHILD_CHARS]}" for item in items)
    return PROMPTS[PROMPT].format(items=lines)


def summarise(tree: Tree, texts: dict[str, str], llm: Completer | None) -> tuple[Tree, int, int]:
    """The tree with every stale summary rewritten, lowest level first; and how many were written, failed.

    A summary is stale when the hash of its prompt (and model) differs from the one it was written from.
    """
    model = llm.config.model if llm else "extractive"
    written = failed = 0
    for level in tree.levels():
        prompts = {n: summary_prompt(tree, n, texts) for n in level}
        hashes = {n: content_hash(PROMPT, model, p) for n, p in prompts.items()}
        stale = [n for n in level if tree.nodes[n].input_hash != hashes[n]]
        answers: list[Completion | Exception | None] = [None] * len(stale)
        if llm and stale:
            requests = [
                Request(
                    [{"role": "user", "content": prompts[n]}],
                    max_tokens=SUMMARY_TOKENS,
                    context={"lattice_node": n},
                    accept=lambda answer: bool(answer.text.strip()),
                )
                for n in stale
            ]
            answers = list(llm.complete_many(requests, purpose="lattice-summary"))
        for node_id, answer in zip(stale, answers, strict=True):
            text = answer.text.strip() if isinstance(answer, Completion) else ""
            ok = bool(text) or llm is None
            summary = text or _extract(prompts[node_id])
            tree = tree.with_node(
                replace(tree.nodes[node_id], summary=summary, input_hash=hashes[node_id] if ok else "")
            )
            written += 1
            failed += not ok
    if failed:
        log.warning("%d LATTICE summaries failed; extractive stand-ins until the next refresh", failed)
    return tree, written, failed


def _extract(prompt: str) -> str:
    """The opening words of each item of a summary prompt, as a stand-in summary."""
    items = prompt.split("Items:\n", 1)[1].rsplit("\n\nSummary:", 1)[0].splitlines()
    return "; ".join(item.removeprefix("- ")[:EXTRACT_CHARS] for item in items)
