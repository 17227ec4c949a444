"""Exact dense search from memory: each views table's vectors held as one matrix, reloaded when it changes.

Below the ANN threshold zsr searches exactly, and LanceDB's flat search pays a set-up per query (opening the
table, planning, scanning Arrow batches): ~25 ms at 10k views against ~0.4 ms for one matrix product on this
machine. So the first exact search of a table loads its vectors once; later ones are a matrix product.

Staleness is ruled out by the table's version, not by time: every Lance commit writes a new version, and a
held dataset's ``latest_version`` reads the version hint (microseconds on a local disk), so a search after any
commit, by this process or another, reloads. A table with a vector index is not held: it is searched by its
index (:mod:`storage.search`).

With a :class:`~storage.quantized.Quantization` other than exact, :meth:`Matrices.get` holds the table's
codes instead (:class:`QuantizedMatrix`): built from the vectors read a batch at a time, searched for
``rescore x limit`` candidates, which are rescored with their float vectors read from the table by row
position at the held version. The float vectors stay on disk.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import lance
import numpy as np
import pyarrow as pa

from storage.lance import Lance, arrow_to_vectors, is_latest
from storage.product import product
from storage.quantized import EXACT, Codes, Quantization, encode, normalise, prepare

Hits = list[tuple[str, float]]
COLUMNS = ["view_id", "doc_id", "kind", "vector"]
IDS = ["view_id", "doc_id", "kind"]
READ_BATCH = 8192  # vectors read at once while codes are built: 8192 x 384 x 4 B = 12 MiB


@dataclass(frozen=True, eq=False)
class Rows:
    """The views of one table at one version: ids and kinds, row for row (row = position in the table).

    Attributes:
        version: The table version the rows were read at.
        view_ids: Each row's view id.
        doc_ids: Each row's document id (an object array, for fancy indexing).
        kinds: Each row's view kind (``chunk``, ``title``, ``query``).
    """

    version: int
    view_ids: np.ndarray
    doc_ids: np.ndarray
    kinds: np.ndarray
    _masks: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict, repr=False, kw_only=True)

    def kind_mask(self, kinds: Sequence[str]) -> np.ndarray:
        """Rows whose kind is one of ``kinds`` (computed once per set of kinds)."""
        key = tuple(sorted(kinds))
        if key not in self._masks:
            self._masks[key] = np.isin(self.kinds, key)
        return self._masks[key]

    def rows(self, mask: np.ndarray | None) -> np.ndarray:
        """Positions of the rows within ``mask`` (all rows when ``None``)."""
        return np.arange(len(self.doc_ids)) if mask is None else np.flatnonzero(mask)


@dataclass(frozen=True, eq=False)
class ViewMatrix(Rows):
    """:class:`Rows` with their L2-normalised vectors.

    Attributes:
        vectors: ``(rows, dim)`` float32, each row of norm 1 (0 rows stay 0), so a dot product is a cosine.
    """

    vectors: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes of the searched representation (the vectors; ids and kinds are held either way)."""
        return int(self.vectors.nbytes)

    def top(self, queries: np.ndarray, limit: int, mask: np.ndarray | None = None) -> list[Hits]:
        """Per query vector, the ``limit`` best rows (within ``mask``) as ``(doc_id, cosine)``, best first."""
        rows = self.rows(mask)
        scores = product(normalise(queries), self.vectors)
        if mask is not None:
            scores = scores[:, rows]
        n = min(limit, scores.shape[1])
        if n <= 0:
            return [[] for _ in queries]
        order = best(scores, n)
        return [
            list(zip(self.doc_ids[rows[picked]].tolist(), scores[q, picked].tolist(), strict=True))
            for q, picked in enumerate(order)
        ]


@dataclass(frozen=True, eq=False)
class QuantizedMatrix(Rows):
    """:class:`Rows` with their codes; the float vectors stay in ``dataset``, read back for rescoring.

    Attributes:
        codes: The rows' codes (:mod:`storage.quantized`).
        quantization: What the codes are, and how many candidates a result rescored.
        dataset: The table at ``version``: row ``i`` of the codes is row position ``i`` there.
    """

    codes: Codes
    quantization: Quantization
    dataset: lance.LanceDataset

    def top(self, queries: np.ndarray, limit: int, mask: np.ndarray | None = None) -> list[Hits]:
        """As :meth:`ViewMatrix.top`: the codes pick ``rescore x limit`` candidates, their float vectors rank.

        The scores are the float cosines, so the result is the exact top ``limit`` whenever the exact
        neighbours are among the candidates.
        """
        rows = self.rows(mask)
        full = normalise(queries)
        scores = self.codes.scores(prepare(full, self.quantization.dims))
        if mask is not None:
            scores = scores[:, rows]
        n = min(limit, len(rows))
        if n <= 0:
            return [[] for _ in queries]
        candidates = rows[best(scores, min(len(rows), self.quantization.rescore * n))]
        out: list[Hits] = []
        # Queries in groups, so a batch's candidate vectors in memory stay ~RESCORE_ROWS rows, not the table.
        step = max(1, RESCORE_ROWS // candidates.shape[1])
        for start in range(0, len(full), step):
            group = candidates[start : start + step]
            unique, inverse = np.unique(group, return_inverse=True)
            vectors = normalise(arrow_to_vectors(self.dataset.take(unique, columns=["vector"])["vector"]))
            for query, picked in zip(full[start : start + step], inverse.reshape(group.shape), strict=True):
                exact = product(query[None], vectors[picked])[0]
                order = best(exact[None], n)[0]
                out.append(
                    list(
                        zip(self.doc_ids[unique[picked[order]]].tolist(), exact[order].tolist(), strict=True)
                    )
                )
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of the searched representation (the codes; ids and kinds are held either way)."""
        return self.codes.nbytes


RESCORE_ROWS = 16_384  # candidate vectors read back at once: 16384 x 384 x 4 B = 24 MiB


def best(scores: np.ndarray, n: int) -> np.ndarray:
    """Per row of ``scores``, the columns of its ``n`` highest, best first (ties: the lower column first)."""
    if n < scores.shape[1]:
        picked = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    else:
        picked = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, picked, axis=1), axis=1, kind="stable")
    return np.take_along_axis(picked, order, axis=1)


def load(dataset: lance.LanceDataset) -> ViewMatrix:
    """Every view of ``dataset`` (at its checked-out version) as a :class:`ViewMatrix`."""
    table = dataset.to_table(columns=COLUMNS)
    vectors = arrow_to_vectors(table["vector"]) if table.num_rows else np.zeros((0, 0), np.float32)
    return ViewMatrix(**_ids(dataset, table), vectors=normalise(vectors))


def load_quantized(dataset: lance.LanceDataset, quantization: Quantization) -> QuantizedMatrix:
    """Every view of ``dataset`` as a :class:`QuantizedMatrix`, its vectors read ``READ_BATCH`` at a time."""
    dim = dataset.schema.field("vector").type.list_size
    dims = min(quantization.dims or dim, dim)

    def batches() -> Iterator[np.ndarray]:
        for batch in dataset.to_batches(columns=["vector"], batch_size=READ_BATCH):
            yield prepare(arrow_to_vectors(pa.chunked_array([batch["vector"]])), dims)

    codes = encode(quantization.kind, batches, dims)
    ids = _ids(dataset, dataset.to_table(columns=IDS))
    return QuantizedMatrix(**ids, codes=codes, quantization=quantization, dataset=dataset)


def _ids(dataset: lance.LanceDataset, table: pa.Table) -> dict[str, Any]:
    """The :class:`Rows` fields of ``table`` (the id columns of ``dataset``)."""
    column = {name: np.asarray(table[name].to_pylist(), dtype=object) for name in IDS}
    return {
        "version": dataset.version,
        "view_ids": column["view_id"],
        "doc_ids": column["doc_id"],
        "kinds": column["kind"],
    }


@dataclass
class _Held:
    dataset: lance.LanceDataset
    matrix: ViewMatrix | QuantizedMatrix | None  # None: the table has a vector index at this version


class Matrices:
    """What each views table searched exactly holds in memory, per quantization, at its latest version.

    A :class:`ViewMatrix` by default; a :class:`QuantizedMatrix` (and no float matrix) when asked for one.
    """

    def __init__(self, lance_db: Lance) -> None:
        self.lance = lance_db
        self._held: dict[tuple[str, Quantization], _Held] = {}
        self._lock = threading.Lock()  # zsr serve searches from several threads

    @overload
    def get(self, name: str) -> ViewMatrix | None: ...
    @overload
    def get(self, name: str, quantization: Quantization) -> ViewMatrix | QuantizedMatrix | None: ...

    def get(self, name: str, quantization: Quantization = EXACT) -> ViewMatrix | QuantizedMatrix | None:
        """Table ``name`` at its latest version; ``None`` if it has a vector index or is missing.

        ``quantization``: exact (the default) holds the float vectors; any other holds only its codes.
        """
        key = (name, quantization)
        with self._lock:
            held = self._held.get(key)
            if held is not None and is_latest(held.dataset):
                return held.matrix
            try:
                dataset = self.lance.db.open_table(name).to_lance()
            except ValueError:  # no such table: the caller's own lookup says so in its words
                self._held.pop(key, None)
                return None
            indexed = any(index.field_names == ["vector"] for index in dataset.describe_indices())
            matrix: ViewMatrix | QuantizedMatrix | None = None
            if not indexed:
                matrix = load(dataset) if quantization.exact else load_quantized(dataset, quantization)
            self._held[key] = _Held(dataset, matrix)
            return matrix

    def forget(self, name: str) -> None:
        """Drop what is held of table ``name`` (it was dropped: a new table of that name restarts at 1)."""
        with self._lock:
            for key in [key for key in self._held if key[0] == name]:
                del self._held[key]
