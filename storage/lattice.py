"""LATTICE's semantic tree of a corpus: its shape (bottom-up agglomerative clustering) and its table.

The tree is cut from a Ward dendrogram over the documents' unit vectors (scipy's ``linkage``): from the
top, each node takes its dendrogram cluster and splits the loosest part (the highest merge) until it has
``branching`` parts, each a document (a leaf) or a child node cut the same way. Every document is exactly
one leaf. Ward needs the full distance matrix, ``n^2 / 2`` floats: fine for the tens of thousands of
documents it is meant for, not for millions.

A node's id is the hash of the documents under it when it was built, so a rebuild over the same documents
gives the same ids (and the same summary inputs, which the LLM cache answers). Each node is one row of
``<corpus>__lattice__<space key>``: its children, its summary and the hash of what the summary was written
from (``input_hash``), which is how a refresh knows which summaries are stale. The whole tree is written in
one commit, so a reader sees the old tree or the new one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from storage.ids import content_hash
from storage.lance import Lance, now
from storage.vector_space import VectorSpace

SCHEMA = pa.schema(
    [
        pa.field("node_id", pa.string()),
        pa.field("child_nodes", pa.list_(pa.string())),
        pa.field("child_docs", pa.list_(pa.string())),
        pa.field("summary", pa.string()),
        pa.field("input_hash", pa.string()),  # of the prompt the summary answers; "" when none was written
        pa.field("is_root", pa.bool_()),
        pa.field("built_at", pa.timestamp("us", tz="UTC")),
    ]
)
_LATTICE_TABLE = re.compile(r"^(.+)__lattice__[0-9a-f]{16}$")


def lattice_table(corpus: str, space: VectorSpace) -> str:
    """Name of the table holding the LATTICE tree of ``corpus`` in ``space``."""
    return f"{corpus}__lattice__{space.key}"


def corpus_of_lattice_table(table: str) -> str | None:
    """The corpus a lattice table (of any space) belongs to; ``None`` for any other table."""
    match = _LATTICE_TABLE.match(table)
    return match.group(1) if match else None


@dataclass(frozen=True)
class Node:
    """An internal node: child nodes and child documents, and the summary of what lies under it."""

    node_id: str
    child_nodes: tuple[str, ...] = ()
    child_docs: tuple[str, ...] = ()
    summary: str = ""
    input_hash: str = ""


@dataclass
class Tree:
    """A rooted tree whose leaves are documents; ``nodes`` by id, the root among them."""

    root: str
    nodes: dict[str, Node]
    _parent: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for node in self.nodes.values():
            for child in (*node.child_nodes, *node.child_docs):
                self._parent[child] = node.node_id

    def parent(self, child: str) -> str | None:
        """The node holding ``child`` (a node or document id); ``None`` for the root and strangers."""
        return self._parent.get(child)

    def path(self, child: str) -> list[str]:
        """The nodes above ``child``, nearest first, the root last."""
        out = []
        node = self.parent(child)
        while node is not None:
            out.append(node)
            node = self.parent(node)
        return out

    def doc_ids(self) -> list[str]:
        """Every document, each once, in tree order."""
        return [d for node in self.top_down() for d in self.nodes[node].child_docs]

    def docs_under(self) -> dict[str, list[str]]:
        """The documents under each node."""
        out: dict[str, list[str]] = {}
        for node_id in self.bottom_up():
            node = self.nodes[node_id]
            out[node_id] = [*node.child_docs, *(d for c in node.child_nodes for d in out[c])]
        return out

    def top_down(self) -> Iterator[str]:
        """Node ids, every parent before its children."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(self.nodes[node].child_nodes))

    def bottom_up(self) -> list[str]:
        """Node ids, every child before its parent."""
        return list(self.top_down())[::-1]

    def levels(self) -> list[list[str]]:
        """Node ids by height (1: only documents below), lowest first: each level's children are done."""
        height: dict[str, int] = {}
        for node_id in self.bottom_up():
            height[node_id] = 1 + max((height[c] for c in self.nodes[node_id].child_nodes), default=0)
        out: list[list[str]] = [[] for _ in range(max(height.values()))]
        for node_id, h in height.items():
            out[h - 1].append(node_id)
        return out

    def with_node(self, node: Node) -> Tree:
        """A copy with ``node`` put in (replacing the node of its id)."""
        return Tree(self.root, {**self.nodes, node.node_id: node})


def cluster(doc_ids: Sequence[str], vectors: np.ndarray, branching: int) -> Tree:
    """The tree of ``doc_ids`` (unit ``vectors``, one row each), at most ``branching`` children a node.

    Raises:
        ValueError: no documents, a branching factor below 2, or ids and vectors that do not pair up.
    """
    from scipy.cluster.hierarchy import linkage

    n = len(doc_ids)
    if n == 0 or branching < 2 or len(vectors) != n:
        raise ValueError(
            f"a tree needs documents and a branching factor of at least 2; got {n} documents, "
            f"{len(vectors)} vectors, branching {branching}"
        )
    merges = linkage(np.asarray(vectors, np.float64), method="ward") if n > 1 else np.zeros((0, 4))
    # Dendrogram cluster c < n is document c; c >= n is merge row c - n, joining two clusters at a height.
    members: list[list[int]] = [[i] for i in range(n)]
    for a, b, _, _ in merges:
        members.append(members[int(a)] + members[int(b)])

    def split(c: int) -> list[int]:
        parts = [c]
        while len(parts) < branching:
            loose = [p for p in parts if p >= n]
            if not loose:
                break
            top = max(loose, key=lambda p: (merges[p - n, 2], p))  # the loosest merge splits first
            parts.remove(top)
            parts += [int(merges[top - n, 0]), int(merges[top - n, 1])]
        return sorted(parts)

    nodes: dict[str, Node] = {}

    def node_id(c: int) -> str:
        return content_hash("lattice-node", *sorted(doc_ids[i] for i in members[c]))

    stack = [len(members) - 1]
    while stack:
        c = stack.pop()
        parts = split(c) if c >= n else [c]
        inner = [p for p in parts if p >= n]
        nodes[node_id(c)] = Node(
            node_id(c), tuple(node_id(p) for p in inner), tuple(doc_ids[p] for p in parts if p < n)
        )
        stack.extend(inner)
    return Tree(node_id(len(members) - 1), nodes)


def attach(tree: Tree, added: dict[str, str], deleted: set[str]) -> Tree:
    """The tree with ``deleted`` documents taken out and each ``added`` one put under the node it names.

    A node left with no child is taken out of its parent in turn (the root stays). Node ids and summaries
    are kept: the refresh that calls this re-summarises whatever changed under them.
    """
    nodes = dict(tree.nodes)
    for node_id, node in tree.nodes.items():
        kept = tuple(d for d in node.child_docs if d not in deleted)
        new = tuple(sorted(d for d, parent in added.items() if parent == node_id))
        nodes[node_id] = replace(node, child_docs=kept + new)
    for node_id in Tree(tree.root, nodes).bottom_up():
        node = nodes[node_id]
        kept_nodes = tuple(c for c in node.child_nodes if c in nodes)
        nodes[node_id] = replace(node, child_nodes=kept_nodes)
        if node_id != tree.root and not kept_nodes and not node.child_docs:
            del nodes[node_id]
    return Tree(tree.root, nodes)


class Lattices:
    """The lattice tables: read and replace a corpus's tree in one vector space."""

    def __init__(self, lance: Lance) -> None:
        self.lance = lance

    def get(self, corpus: str, space: VectorSpace) -> Tree | None:
        """The stored tree of ``corpus`` in ``space``; ``None`` when none was built."""
        name = lattice_table(corpus, space)
        if not self.lance.exists(name):
            return None
        rows = self.lance.db.open_table(name).to_arrow().to_pylist()
        if not rows:
            return None
        nodes = {
            r["node_id"]: Node(
                r["node_id"], tuple(r["child_nodes"]), tuple(r["child_docs"]), r["summary"], r["input_hash"]
            )
            for r in rows
        }
        return Tree(next(r["node_id"] for r in rows if r["is_root"]), nodes)

    def put(self, corpus: str, space: VectorSpace, tree: Tree) -> None:
        """Store ``tree`` as the tree of ``corpus`` in ``space``, replacing any before (one commit)."""
        at = now()
        rows = [
            {
                "node_id": n.node_id,
                "child_nodes": list(n.child_nodes),
                "child_docs": list(n.child_docs),
                "summary": n.summary,
                "input_hash": n.input_hash,
                "is_root": n.node_id == tree.root,
                "built_at": at,
            }
            for n in (tree.nodes[i] for i in tree.top_down())
        ]
        name = lattice_table(corpus, space)
        mode = "overwrite" if self.lance.exists(name) else "create"  # as Whitenings.put: no Lance warning
        self.lance.db.create_table(name, pa.Table.from_pylist(rows, SCHEMA), mode=mode)
