"""Whitening (WhiteningBERT, Huang et al. 2021): a corpus's chunk vectors made zero-mean, unit covariance.

The fit of a corpus in a vector space is the mean ``mu`` of its chunk vectors and ``W = U diag(1 / sqrt(s))``
from the SVD ``U diag(s) U^T`` of their covariance; a vector ``x`` maps to ``(x - mu) W`` (its first ``k``
columns: the ``k`` directions of most variance), then to unit length, and whitened search ranks by the
cosine there. Directions along which the corpus does not vary (``s`` below :data:`RANK_TOLERANCE` of the
largest: a corpus of fewer chunks than dimensions has ``d - n + 1`` of them) are left out, as ``1 / sqrt(0)``
would only blow up rounding noise.

Each fit is one row of ``<corpus>__whitening__<space key>``, with what it was fit on (the views table's
version and the ids of its chunk views), so it follows the corpus to object storage and is dropped with it.
The fit is made at index time (``Workspace.ingest`` calls :meth:`Whitenings.refresh`) and redone once the
chunk views have changed by more than a share of those it was fit on (:meth:`Whitening.churn`); a corpus
indexed before zsr fit one gets its fit on its first whitened search.

Whitened search is exact: documents' vectors are whitened once per (views table version, fit, ``k``) from
the table's :class:`~storage.matrix.ViewMatrix` and held, also for tables with a vector index (whose index
is in the unwhitened space).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import lance
import numpy as np
import pyarrow as pa

from storage.lance import Lance, is_latest, now
from storage.matrix import Hits, ViewMatrix, load
from storage.search import Search
from storage.vector_space import VectorSpace
from storage.views import views_table

log = logging.getLogger(__name__)

RANK_TOLERANCE = 1e-6  # a direction whose variance is below this share of the largest is not whitened
SCHEMA = pa.schema(
    [
        pa.field("views_version", pa.int64()),
        pa.field("mean", pa.list_(pa.float32())),
        pa.field("variances", pa.list_(pa.float32())),  # s, largest first: one per whitened direction
        pa.field("transform", pa.list_(pa.float32())),  # W, (dim, len(variances)) row-major
        pa.field("view_ids", pa.list_(pa.string())),  # the chunk views fit on
        pa.field("fitted_at", pa.timestamp("us", tz="UTC")),
    ]
)


def whitening_table(corpus: str, space: VectorSpace) -> str:
    """Name of the table holding the whitening fit of ``corpus`` in ``space``."""
    return f"{corpus}__whitening__{space.key}"


_WHITENING_TABLE = re.compile(r"^(.+)__whitening__[0-9a-f]{16}$")


def corpus_of_whitening_table(table: str) -> str | None:
    """The corpus a whitening table (of any space) belongs to; ``None`` for any other table."""
    match = _WHITENING_TABLE.match(table)
    return match.group(1) if match else None


@dataclass(frozen=True, eq=False)
class Whitening:
    """One fit: ``x -> (x - mean) @ transform[:, :k]``, then normalised.

    Attributes:
        mean: ``(dim,)`` the mean chunk vector.
        transform: ``(dim, r)`` W, its columns by decreasing variance; ``r`` is the covariance's rank.
        variances: ``(r,)`` the variance along each column's direction (the covariance's eigenvalues).
        views_version: The views table version the chunk vectors were read at.
        view_ids: The ids of the chunk views fit on, sorted.
    """

    mean: np.ndarray
    transform: np.ndarray
    variances: np.ndarray
    views_version: int
    view_ids: np.ndarray

    @property
    def rows(self) -> int:
        """How many chunk vectors the fit was made on."""
        return len(self.view_ids)

    def apply(self, vectors: np.ndarray, dims: int | None = None) -> np.ndarray:
        """``vectors`` whitened, keeping the ``dims`` directions of most variance (``None``: all), normalised.

        ``dims`` beyond the fit's rank keeps every whitened direction.
        """
        whitened = (vectors.astype(np.float64) - self.mean) @ self.transform[:, :dims]
        norms = np.linalg.norm(whitened, axis=1, keepdims=True)
        return (whitened / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    def churn(self, view_ids: Sequence[str] | np.ndarray) -> float:
        """How far the chunk views moved since the fit: (added + deleted) / the views fit on.

        View ids are content-derived, so a changed chunk counts twice: its old view out, its new one in.
        """
        now_ids = np.unique(np.asarray(view_ids, dtype=object).astype(str))
        fit_ids = self.view_ids.astype(str)
        moved = len(np.setdiff1d(now_ids, fit_ids)) + len(np.setdiff1d(fit_ids, now_ids))
        return moved / max(self.rows, 1)


def fit(vectors: np.ndarray, view_ids: Sequence[str] | np.ndarray, views_version: int) -> Whitening:
    """The whitening of ``vectors`` (one row per chunk view, ids in ``view_ids``).

    Raises:
        ValueError: fewer than two vectors, or all equal: there is no covariance to whiten.
    """
    data = np.asarray(vectors, dtype=np.float64)
    if len(data) < 2:
        raise ValueError(f"whitening needs at least 2 chunk vectors, got {len(data)}")
    mean = data.mean(axis=0)
    u, s, _ = np.linalg.svd(np.cov(data - mean, rowvar=False), hermitian=True)
    rank = int(np.sum(s > s[0] * RANK_TOLERANCE)) if s[0] > 0 else 0
    if rank == 0:
        raise ValueError("whitening needs chunk vectors that differ: all of them are equal")
    return Whitening(
        mean=mean,
        transform=u[:, :rank] / np.sqrt(s[:rank]),
        variances=s[:rank],
        views_version=views_version,
        view_ids=np.sort(np.asarray(view_ids, dtype=object).astype(str)),
    )


@dataclass
class _Held:
    dataset: lance.LanceDataset
    fit: Whitening


@dataclass
class _Whitened:
    # The views whitened: the ViewMatrix held by Matrices (one object per table version, equal only to
    # itself), or the version of a table Matrices does not hold.
    source: ViewMatrix | int
    fit: Whitening
    matrix: ViewMatrix


class Whitenings:
    """The whitening fit of each (corpus, space), stored in LanceDB, and whitened search over it."""

    def __init__(self, lance_db: Lance, search: Search) -> None:
        self.lance = lance_db
        self.search = search
        self.matrices = search.matrices
        self._fits: dict[str, _Held] = {}
        self._whitened: dict[tuple[str, int | None], _Whitened] = {}
        self._lock = threading.Lock()  # zsr serve searches from several threads

    def get(self, corpus: str, space: VectorSpace) -> Whitening | None:
        """The stored fit of ``corpus`` in ``space``; ``None`` when it has none."""
        name = whitening_table(corpus, space)
        with self._lock:
            held = self._fits.get(name)
            if held is not None and is_latest(held.dataset):
                return held.fit
            self._fits.pop(name, None)
            if not self.lance.exists(name):
                return None
            dataset = self.lance.db.open_table(name).to_lance()
            row = dataset.to_table().to_pylist()[0]
            variances = np.asarray(row["variances"], dtype=np.float64)
            whitening = Whitening(
                mean=np.asarray(row["mean"], dtype=np.float64),
                transform=np.asarray(row["transform"], dtype=np.float64).reshape(-1, len(variances)),
                variances=variances,
                views_version=row["views_version"],
                view_ids=np.asarray(row["view_ids"], dtype=object),
            )
            self._fits[name] = _Held(dataset, whitening)
            return whitening

    def put(self, corpus: str, space: VectorSpace, whitening: Whitening) -> None:
        """Store ``whitening`` as the fit of ``corpus`` in ``space``, replacing any before (one commit)."""
        row = {
            "views_version": whitening.views_version,
            "mean": whitening.mean.astype(np.float32),
            "variances": whitening.variances.astype(np.float32),
            "transform": whitening.transform.astype(np.float32).ravel(),
            "view_ids": whitening.view_ids.tolist(),
            "fitted_at": now(),
        }
        name = whitening_table(corpus, space)
        # "overwrite" on a missing table works too, but Lance logs a warning for it
        mode = "overwrite" if self.lance.exists(name) else "create"
        self.lance.db.create_table(name, pa.Table.from_pylist([row], SCHEMA), mode=mode)

    def refresh(self, corpus: str, space: VectorSpace, share: float) -> Whitening | None:
        """Fit ``corpus``'s chunk vectors if it has no fit or their :meth:`Whitening.churn` exceeds ``share``.

        Returns the new fit; ``None`` when the stored one is kept, or when there is nothing to fit (fewer
        than two chunks, or no views table yet).
        """
        name = views_table(corpus, space)
        if not self.lance.exists(name):
            return None
        current = self.get(corpus, space)
        if current is not None:
            dataset = self.lance.db.open_table(name).to_lance()
            chunks = dataset.to_table(columns=["view_id"], filter="kind = 'chunk'")["view_id"].to_pylist()
            churn = current.churn(chunks)
            if churn <= share:
                return None
            log.info(
                "%s: chunk views moved by %.1f%% since the whitening fit: refitting", corpus, 100 * churn
            )
        views = self._views(name)
        chunk = views.kind_mask(["chunk"])
        if chunk.sum() < 2:
            return None
        whitening = fit(views.vectors[chunk], views.view_ids[chunk], views.version)
        self.put(corpus, space, whitening)
        log.info(
            "%s: whitening fit on %d chunk vectors (rank %d)",
            corpus,
            whitening.rows,
            len(whitening.variances),
        )
        return whitening

    def dense(
        self,
        corpus: str,
        space: VectorSpace,
        vectors: np.ndarray,
        limit: int,
        kinds: Sequence[str] = ("chunk",),
        where: str | None = None,
        dims: int | None = None,
    ) -> list[Hits]:
        """As :meth:`storage.search.Search.dense`, by the cosine of whitened vectors (``dims`` kept).

        A corpus without a fit (indexed before zsr fit them) is fit first, and the fit stored.

        Raises:
            LookupError: the corpus has fewer than two chunk views, too few to whiten.
        """
        whitening = self.get(corpus, space) or self.refresh(corpus, space, share=0.0)
        if whitening is None:
            raise LookupError(
                f"corpus {corpus!r} has too few chunks to whiten (at least 2 are needed): search it with "
                "dense, without whiten"
            )
        name = views_table(corpus, space)
        matrix = self._whitened_views(name, whitening, dims)
        mask = matrix.kind_mask(kinds)
        if where:  # the held rows carry no metadata: the filter's rows, as unwhitened search keeps them
            mask = mask & self.search.filter_mask(name, matrix, where)
        return matrix.top(whitening.apply(vectors, dims), limit, mask)

    def _whitened_views(self, name: str, whitening: Whitening, dims: int | None) -> ViewMatrix:
        """Every view of table ``name`` whitened by ``whitening`` (``dims`` kept), held per table version."""
        views = self.matrices.get(name)
        source: ViewMatrix | int  # what the held rows were whitened from (see _Whitened)
        if views is not None:
            source, read = views, (lambda: views)
        else:  # a table with a vector index is not held by Matrices (its index is of unwhitened vectors)
            dataset = self.lance.db.open_table(name).to_lance()
            source, read = dataset.version, partial(load, dataset)
        with self._lock:
            held = self._whitened.get((name, dims))
            if held is not None and held.source == source and held.fit is whitening:
                return held.matrix
        raw = read()
        whitened = ViewMatrix(
            raw.version, raw.view_ids, raw.doc_ids, raw.kinds, whitening.apply(raw.vectors, dims)
        )
        with self._lock:
            self._whitened[(name, dims)] = _Whitened(source, whitening, whitened)
        return whitened

    def _views(self, name: str) -> ViewMatrix:
        """The views of table ``name`` at its latest version, from Matrices or, with a vector index, read."""
        return self.matrices.get(name) or load(self.lance.db.open_table(name).to_lance())

    def forget(self, name: str) -> None:
        """Drop what is held for table ``name`` (it was dropped: a new table of that name restarts at 1)."""
        with self._lock:
            self._fits.pop(name, None)
            for key in [key for key in self._whitened if key[0] == name]:
                del self._whitened[key]
