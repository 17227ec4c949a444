"""Exact dense search from memory: each views table's vectors held as one matrix, reloaded when it changes.

Below the ANN threshold zsr searches exactly, and LanceDB's flat search pays a set-up per query (opening the
table, planning, scanning Arrow batches): ~25 ms at 10k views against ~0.4 ms for one matrix product on this
machine. So the first exact search of a table loads its vectors once; later ones are a matrix product.

Staleness is ruled out by the table's version, not by time: every Lance commit writes a new version, and a
held dataset's ``latest_version`` reads the version hint (microseconds on a local disk), so a search after any
commit, by this process or another, reloads. A table with a vector index is not held: it is searched by its
index (:mod:`storage.search`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import lance
import numpy as np

from storage.lance import Lance, arrow_to_vectors

Hits = list[tuple[str, float]]
COLUMNS = ["view_id", "doc_id", "kind", "vector"]


@dataclass(frozen=True, eq=False)
class ViewMatrix:
    """The views of one table at one version: ids, kinds and L2-normalised vectors, row for row.

    Attributes:
        version: The table version the rows were read at.
        view_ids: Each row's view id.
        doc_ids: Each row's document id (an object array, for fancy indexing).
        kinds: Each row's view kind (``chunk``, ``title``, ``query``).
        vectors: ``(rows, dim)`` float32, each row of norm 1 (0 rows stay 0), so a dot product is a cosine.
    """

    version: int
    view_ids: np.ndarray
    doc_ids: np.ndarray
    kinds: np.ndarray
    vectors: np.ndarray
    _masks: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict, repr=False)

    def kind_mask(self, kinds: Sequence[str]) -> np.ndarray:
        """Rows whose kind is one of ``kinds`` (computed once per set of kinds)."""
        key = tuple(sorted(kinds))
        if key not in self._masks:
            self._masks[key] = np.isin(self.kinds, key)
        return self._masks[key]

    def top(self, queries: np.ndarray, limit: int, mask: np.ndarray | None = None) -> list[Hits]:
        """Per query vector, the ``limit`` best rows (within ``mask``) as ``(doc_id, cosine)``, best first."""
        norms = np.linalg.norm(queries, axis=1, keepdims=True)
        scores = (queries / np.where(norms > 0, norms, 1.0)).astype(np.float32) @ self.vectors.T
        rows = np.arange(len(self.doc_ids)) if mask is None else np.flatnonzero(mask)
        if mask is not None:
            scores = scores[:, rows]
        n = min(limit, scores.shape[1])
        if n <= 0:
            return [[] for _ in queries]
        best = np.argpartition(-scores, n - 1, axis=1)[:, :n] if n < scores.shape[1] else None
        out: list[Hits] = []
        for q in range(len(queries)):
            picked = np.arange(scores.shape[1]) if best is None else best[q]
            order = picked[np.argsort(-scores[q, picked], kind="stable")]
            out.append(list(zip(self.doc_ids[rows[order]].tolist(), scores[q, order].tolist(), strict=True)))
        return out


def load(dataset: lance.LanceDataset) -> ViewMatrix:
    """Every view of ``dataset`` (at its checked-out version) as a :class:`ViewMatrix`."""
    table = dataset.to_table(columns=COLUMNS)
    vectors = arrow_to_vectors(table["vector"]) if table.num_rows else np.zeros((0, 0), np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return ViewMatrix(
        version=dataset.version,
        view_ids=np.asarray(table["view_id"].to_pylist(), dtype=object),
        doc_ids=np.asarray(table["doc_id"].to_pylist(), dtype=object),
        kinds=np.asarray(table["kind"].to_pylist(), dtype=object),
        vectors=np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1.0), dtype=np.float32),
    )


@dataclass
class _Held:
    dataset: lance.LanceDataset
    matrix: ViewMatrix | None  # None: the table has a vector index at this version, so it is not held


class Matrices:
    """The :class:`ViewMatrix` of each views table searched exactly, one per table, at its latest version."""

    def __init__(self, lance_db: Lance) -> None:
        self.lance = lance_db
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()  # zsr serve searches from several threads

    def get(self, name: str) -> ViewMatrix | None:
        """Table ``name``'s matrix at its latest version; ``None`` if it has a vector index or is missing."""
        with self._lock:
            held = self._held.get(name)
            if held is not None and _latest(held.dataset) == _version_of(held):
                return held.matrix
            try:
                dataset = self.lance.db.open_table(name).to_lance()
            except ValueError:  # no such table: the caller's own lookup says so in its words
                self._held.pop(name, None)
                return None
            indexed = any(index.field_names == ["vector"] for index in dataset.describe_indices())
            held = _Held(dataset, None if indexed else load(dataset))
            self._held[name] = held
            return held.matrix

    def forget(self, name: str) -> None:
        """Drop table ``name``'s matrix (the table was dropped: a new table of that name restarts at 1)."""
        with self._lock:
            self._held.pop(name, None)


def _version_of(held: _Held) -> int:
    return held.dataset.version


def _latest(dataset: lance.LanceDataset) -> int | None:
    """The dataset's latest version; ``None`` when it cannot be read (the table was dropped)."""
    try:
        return dataset.latest_version
    except (OSError, ValueError):
        return None
