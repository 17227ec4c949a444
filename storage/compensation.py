"""Query drift compensation: a linear map from a new model's embeddings into the old model's space.

While a corpus moves to a new model (:mod:`tasks.ingest.upgrade`), its index still holds the old model's
vectors. A query encoded by the new model can search that index once mapped back: ``q_old ~ q_new W``, with
``W`` learned from pairs of (new, old) embeddings of the same texts, the corpus's views (chunks, titles and
kept synthetic queries), as the query drift compensation of continual retrieval learning does
(``METHODS.md``, "Part 2 seeds"). Two fits:

- ``lstsq``: ridge least squares, ``W = (X^T X + lambda I)^-1 X^T Y``; any linear drift, any two dimensions;
- ``procrustes``: the orthogonal ``W = U V^T`` of ``svd(X^T Y)`` (Schoenemann 1966), a rotation only: it
  keeps the new model's cosines, which suits drifts that are close to a rotation and needs fewer pairs.

A mapped vector is normalised, as every search compares unit vectors. Each map is one row of
``<corpus>__drift``, keyed by the pair of spaces it maps between, with the new space in full and its held-out
fit; the row of a corpus's active space as the *old* one is its pending upgrade's map.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
import pyarrow as pa

from storage.lance import Lance, arrow_to_vectors, now, sql_list
from storage.vector_space import VectorSpace
from storage.views import views_table

log = logging.getLogger(__name__)

DriftFit = Literal["lstsq", "procrustes"]
RIDGE = 1e-4  # lstsq's lambda, as a share of X^T X's mean diagonal: keeps rank-poor fits finite
HELD_OUT = 10  # every 10th pair is held out to measure the fit (never fit on)
SCHEMA = pa.schema(
    [
        pa.field("old_key", pa.string(), nullable=False),
        pa.field("new_key", pa.string(), nullable=False),
        pa.field("new_space", pa.string()),  # VectorSpace.to_json of the new space
        pa.field("method", pa.string()),
        pa.field("new_dim", pa.int32()),
        pa.field("old_dim", pa.int32()),
        pa.field("matrix", pa.list_(pa.float32())),  # W, (new_dim, old_dim) row-major
        pa.field("pairs", pa.int64()),  # (new, old) pairs fit on
        pa.field("cosine_before", pa.float64()),  # held-out mean cosine of new and old (NaN: dims differ)
        pa.field("cosine_after", pa.float64()),  # held-out mean cosine of mapped new and old
        pa.field("fitted_at", pa.timestamp("us", tz="UTC")),
    ]
)


def drift_table(corpus: str) -> str:
    """Name of the table holding ``corpus``'s drift maps."""
    return f"{corpus}__drift"


@dataclass(frozen=True, eq=False)
class DriftMap:
    """A learned map from ``new_space``'s vectors into ``old_space``'s: ``x -> normalise(x @ matrix)``.

    Attributes:
        old_key: Key of the space the map leads into (the one the index holds).
        new_space: The space the map leads from (the new model's).
        method: ``lstsq`` or ``procrustes``.
        matrix: ``(new_dim, old_dim)`` W.
        pairs: How many (new, old) pairs it was fit on.
        cosine_before: Held-out mean cosine of a text's new and old vectors, unmapped (NaN when the
            dimensions differ).
        cosine_after: Held-out mean cosine of a text's mapped new vector and its old vector.
        fitted_at: When it was fit.
    """

    old_key: str
    new_space: VectorSpace
    method: str
    matrix: np.ndarray
    pairs: int
    cosine_before: float
    cosine_after: float
    fitted_at: datetime

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """New-model ``vectors`` mapped into the old space, each of unit length."""
        return project(vectors, self.matrix)


def project(vectors: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``vectors @ matrix``, each row of unit length (a zero row stays zero)."""
    mapped = vectors.astype(np.float64) @ matrix
    norms = np.linalg.norm(mapped, axis=1, keepdims=True)
    return (mapped / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def fit_matrix(new: np.ndarray, old: np.ndarray, method: DriftFit = "lstsq") -> np.ndarray:
    """W minimising ``||new W - old||`` (rows pair the same text), as ``method`` constrains it.

    Raises:
        ValueError: the rows do not pair up, or there are fewer than two pairs.
    """
    if len(new) != len(old) or len(new) < 2:
        raise ValueError(f"a drift map needs at least 2 (new, old) pairs, got {len(new)} and {len(old)}")
    x, y = new.astype(np.float64), old.astype(np.float64)
    if method == "procrustes":
        u, _, vt = np.linalg.svd(x.T @ y, full_matrices=False)
        return (u @ vt).astype(np.float32)
    gram = x.T @ x
    ridge = RIDGE * float(np.trace(gram)) / len(gram)
    return np.linalg.solve(gram + ridge * np.eye(len(gram)), x.T @ y).astype(np.float32)


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape or not len(a):
        return float("nan")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.sum(a * b, axis=1)))


def fit(
    new: np.ndarray, old: np.ndarray, old_key: str, new_space: VectorSpace, method: DriftFit = "lstsq"
) -> DriftMap:
    """Fit the map on all but every :data:`HELD_OUT`-th pair, measure it on those, then refit on all.

    Raises:
        ValueError: fewer than two pairs to fit on (see :func:`fit_matrix`).
    """
    held = np.arange(len(new)) % HELD_OUT == HELD_OUT - 1
    train = ~held if held.any() and (~held).sum() >= 2 else np.ones(len(new), bool)
    trial = fit_matrix(new[train], old[train], method)
    before, after = _mean_cosine(new[held], old[held]), _mean_cosine(project(new[held], trial), old[held])
    return DriftMap(old_key, new_space, method, fit_matrix(new, old, method), len(new), before, after, now())


class Drifts:
    """Each corpus's drift maps, one row per (old space, new space) in ``<corpus>__drift``."""

    def __init__(self, lance: Lance) -> None:
        self.lance = lance

    def put(self, corpus: str, drift: DriftMap) -> None:
        """Insert or replace the map between its two spaces (one commit)."""
        new_dim, old_dim = drift.matrix.shape
        row = {
            "old_key": drift.old_key,
            "new_key": drift.new_space.key,
            "new_space": drift.new_space.to_json(),
            "method": drift.method,
            "new_dim": new_dim,
            "old_dim": old_dim,
            "matrix": drift.matrix.astype(np.float32).ravel().tolist(),
            "pairs": drift.pairs,
            "cosine_before": drift.cosine_before,
            "cosine_after": drift.cosine_after,
            "fitted_at": drift.fitted_at,
        }
        table = self.lance.open_or_create(drift_table(corpus), SCHEMA)
        rows = pa.Table.from_pylist([row], SCHEMA)
        table.merge_insert(
            ["old_key", "new_key"]
        ).when_matched_update_all().when_not_matched_insert_all().execute(rows)

    def maps(self, corpus: str, old: VectorSpace) -> list[DriftMap]:
        """Every map of ``corpus`` into ``old``, the latest fit last."""
        name = drift_table(corpus)
        if not self.lance.exists(name):
            return []
        found = self.lance.db.open_table(name).search().where(f"old_key = {sql_list([old.key])}").limit(None)
        rows = sorted(found.to_arrow().to_pylist(), key=lambda r: r["fitted_at"])
        return [
            DriftMap(
                r["old_key"],
                VectorSpace.from_json(r["new_space"]),
                r["method"],
                np.asarray(r["matrix"], np.float32).reshape(r["new_dim"], r["old_dim"]),
                r["pairs"],
                r["cosine_before"],
                r["cosine_after"],
                r["fitted_at"],
            )
            for r in rows
        ]

    def get(self, corpus: str, old: VectorSpace, new: VectorSpace) -> DriftMap | None:
        """The map of ``corpus`` from ``new`` into ``old``, or ``None``."""
        return next((m for m in self.maps(corpus, old) if m.new_space == new), None)

    def pending(self, corpus: str, active: VectorSpace) -> DriftMap:
        """The map of ``corpus``'s pending upgrade: the latest fit into its active space.

        Raises:
            LookupError: no upgrade of the corpus was started from its active space.
        """
        maps = self.maps(corpus, active)
        if not maps:
            raise LookupError(
                f"corpus {corpus!r} has no model upgrade in progress, so there is no drift map into its "
                f"space {active.key} ({active.model}); start one with `zsr ingest SOURCE --corpus {corpus} "
                "--model NEW --compensate-only`, or search without compensate=true"
            )
        return maps[-1]

    def training_pairs(
        self, corpus: str, space: VectorSpace, limit: int
    ) -> tuple[list[str], list[bool], np.ndarray]:
        """Up to ``limit`` of the corpus's views in ``space``: texts, whether each is a query, vectors.

        The views sorted by id (content hashes, so a spread over documents and kinds that reruns repeat)
        and cut at ``limit``; query views are the kept synthetic queries, the rest passages.
        """
        table = self.lance.db.open_table(views_table(corpus, space))
        found = table.search().select(["view_id", "kind", "text", "vector"]).limit(None).to_arrow()
        found = found.sort_by("view_id").slice(0, limit)
        queries = [kind == "query" for kind in found["kind"].to_pylist()]  # tasks.ingest.views.QUERY
        return found["text"].to_pylist(), queries, arrow_to_vectors(found["vector"])
