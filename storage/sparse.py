"""Sparse vectors beside dense ones in a views table, and their exact dot-product search.

A views table may carry a sparse vector per view as two list columns, ``terms`` (int32 token ids) and
``weights`` (float32), as PromptReps' views do (:mod:`tasks.ingest.promptreps`); the table is an ordinary
views table of its own vector space otherwise, so it follows the corpus store wherever it lives, is dropped
with its corpus and kept by ``zsr gc`` as any views table is.

Search is exact: the first search of a table version reads every view's terms and weights into one sparse
matrix (scipy CSR, views x vocabulary), held until the table changes (its version, as :mod:`storage.matrix`
holds dense vectors); a query's score for a view is the dot product of their weights over shared terms.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lance
import lancedb
import numpy as np
import pyarrow as pa
from scipy import sparse as sp

from storage.lance import Lance, batches, is_latest, sql_list
from storage.matrix import Hits, best
from storage.vector_space import VectorSpace
from storage.views import views_table

SPARSE_COLUMNS = ["doc_id", "kind", "terms", "weights"]


def sparse_columns(vectors: Sequence[Mapping[int, float]]) -> tuple[pa.Array, pa.Array]:
    """The ``terms`` and ``weights`` columns of ``{token id: weight}`` vectors, token ids ascending."""
    ids = [sorted(v) for v in vectors]
    terms = pa.array(ids, pa.list_(pa.int32()))
    weights = pa.array(
        [[v[t] for t in row] for v, row in zip(vectors, ids, strict=True)], pa.list_(pa.float32())
    )
    return terms, weights


def chunk_views(table: lancedb.table.Table, doc_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The chunk views of ``doc_ids`` in a views table, in document order: ids, text, hashes, no vector."""
    columns = ["view_id", "doc_id", "ordinal", "text", "content_hash", "doc_hash"]
    rows: list[dict[str, Any]] = []
    for part in batches(list(doc_ids)):
        found = (
            table.search()
            .where(f"kind = 'chunk' AND doc_id IN ({sql_list(part)})")
            .select(columns)
            .limit(None)
            .to_arrow()
        )
        rows += found.to_pylist()
    return sorted(rows, key=lambda r: (r["doc_id"], r["ordinal"]))


@dataclass(frozen=True, eq=False)
class SparseMatrix:
    """The sparse vectors of one views table at one version, row for row with its ``doc_ids``/``kinds``."""

    doc_ids: np.ndarray
    kinds: np.ndarray
    weights: sp.csr_matrix  # (views, vocabulary)

    def top(self, queries: Sequence[Mapping[int, float]], limit: int, kinds: Sequence[str]) -> list[Hits]:
        """Per query, the ``limit`` best views of ``kinds`` by dot product: ``(doc_id, score)``, best first.

        Views sharing no term with the query (score 0) are left out.
        """
        rows = np.flatnonzero(np.isin(self.kinds, list(kinds)))
        vocabulary = self.weights.shape[1]
        query = _csr(queries, vocabulary)
        scores = (query @ self.weights[rows].T).toarray()
        n = min(limit, len(rows))
        if n <= 0:
            return [[] for _ in queries]
        out = []
        for q, picked in enumerate(best(scores, n)):
            kept = picked[scores[q, picked] > 0]
            out.append(list(zip(self.doc_ids[rows[kept]].tolist(), scores[q, kept].tolist(), strict=True)))
        return out


def _csr(vectors: Sequence[Mapping[int, float]], vocabulary: int) -> sp.csr_matrix:
    """``{token id: weight}`` vectors as CSR rows; ids outside ``vocabulary`` match nothing: left out."""
    indptr, indices, data = [0], [], []
    for vector in vectors:
        kept = sorted(t for t in vector if 0 <= t < vocabulary)
        indices += kept
        data += [vector[t] for t in kept]
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.asarray(data, np.float32), np.asarray(indices, np.int64), indptr), (len(vectors), vocabulary)
    )


def load_sparse(dataset: lance.LanceDataset) -> SparseMatrix:
    """Every view's sparse vector of ``dataset`` (at its checked-out version) as one CSR matrix."""
    table = dataset.to_table(columns=SPARSE_COLUMNS)
    terms, weights = table["terms"].combine_chunks(), table["weights"].combine_chunks()
    indices = terms.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    data = weights.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    indptr = terms.offsets.to_numpy() - terms.offsets[0].as_py() if table.num_rows else np.zeros(1, np.int64)
    vocabulary = int(indices.max()) + 1 if len(indices) else 1
    return SparseMatrix(
        doc_ids=np.asarray(table["doc_id"].to_pylist(), dtype=object),
        kinds=np.asarray(table["kind"].to_pylist(), dtype=object),
        weights=sp.csr_matrix((data, indices, indptr), (table.num_rows, vocabulary)),
    )


@dataclass
class _Held:
    dataset: lance.LanceDataset
    matrix: SparseMatrix


class SparseSearch:
    """Exact sparse search over the views tables that carry sparse vectors, each held per table version."""

    def __init__(self, lance_db: Lance) -> None:
        self.lance = lance_db
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()  # zsr serve searches from several threads

    def exists(self, corpus: str, space: VectorSpace) -> bool:
        """Whether ``corpus`` has a views table in ``space`` carrying sparse vectors."""
        name = views_table(corpus, space)
        return self.lance.exists(name) and "terms" in self.lance.db.open_table(name).schema.names

    def count(self, corpus: str, space: VectorSpace) -> int:
        """Views of ``corpus`` in ``space``; 0 where it has none."""
        return self.lance.count(views_table(corpus, space))

    def top(
        self,
        corpus: str,
        space: VectorSpace,
        queries: Sequence[Mapping[int, float]],
        limit: int,
        kinds: Sequence[str] = ("chunk",),
    ) -> list[Hits]:
        """Best views of ``kinds`` per sparse query by dot product: per query ``(doc_id, score)``, best first.

        Raises:
            LookupError: ``corpus`` has no sparse vectors in ``space``.
        """
        return self._matrix(corpus, space).top(queries, limit, kinds)

    def _matrix(self, corpus: str, space: VectorSpace) -> SparseMatrix:
        name = views_table(corpus, space)
        with self._lock:
            held = self._held.get(name)
            if held is not None and is_latest(held.dataset):
                return held.matrix
            if not self.exists(corpus, space):
                raise LookupError(f"corpus {corpus!r} has no sparse vectors in vector space {space.key}")
            dataset = self.lance.db.open_table(name).to_lance()
            self._held[name] = _Held(dataset, load_sparse(dataset))
            return self._held[name].matrix

    def forget(self, name: str) -> None:
        """Drop what is held for table ``name`` (it was dropped: a new table of that name restarts at 1)."""
        with self._lock:
            self._held.pop(name, None)
