"""Which ANN index a views table gets, and how it is searched, from the number of vectors it holds.

Figures behind the choice: ``bench/ann.py`` (README, "ANN at scale").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from lancedb.index import IvfFlat, IvfHnswPq, IvfHnswSq, IvfPq, IvfRq, IvfSq

IndexType = Literal["IVF_FLAT", "IVF_SQ", "IVF_PQ", "IVF_RQ", "IVF_HNSW_SQ", "IVF_HNSW_PQ"]

_CONFIGS: dict[str, Any] = {
    "IVF_FLAT": IvfFlat,
    "IVF_SQ": IvfSq,
    "IVF_PQ": IvfPq,
    "IVF_RQ": IvfRq,
    "IVF_HNSW_SQ": IvfHnswSq,
    "IVF_HNSW_PQ": IvfHnswPq,
}

Q = TypeVar("Q")


@dataclass(frozen=True)
class IndexChoice:
    """An index type with its build parameters, and the query knobs that go with it.

    ``knobs``: ``nprobes``, ``refine_factor``, ``ef``, as LanceDB's vector query builder names them; absent
    ones keep LanceDB's defaults.
    """

    index: IndexType
    params: dict[str, int] = field(default_factory=dict)
    knobs: dict[str, int] = field(default_factory=dict)

    def config(self) -> Any:
        """The LanceDB index config to build (cosine, as views are searched)."""
        return _CONFIGS[self.index](distance_type="cosine", **self.params)


def choose_index(rows: int, dim: int) -> IndexChoice:
    """The index for a views table of ``rows`` vectors of ``dim`` dimensions, and its query knobs.

    IVF_SQ at every size: int8 codes of the vectors in ~sqrt(rows) partitions, 40 of them probed, the top
    50 rescored on the stored float32 vectors (``refine_factor`` 5). In ``bench/ann.py`` (2026-12-02, README
    "ANN at scale") it reached recall@10 0.991 at 100k and 0.993 at 1M (20 probes: 0.970-0.978, too close
    to 0.95 for comfort), built in 33 s at 100k and 209 s at 1M on the shared 2 cores, and its codes take a
    quarter of the vectors' size. IVF_PQ and IVF_HNSW_SQ took 234-388 s to build at 100k for no better
    recall, IVF_FLAT copies the vectors whole, and LanceDB's default IVF_HNSW_SQ (zsr's index before)
    reached 0.872. ``dim`` does not change the choice: SQ, unlike PQ, needs no divisor of it.
    """
    parts = max(1, min(round(rows**0.5), rows // 256))  # LanceDB trains >= 256 rows a partition
    return IndexChoice("IVF_SQ", {"num_partitions": parts}, {"nprobes": min(parts, 40), "refine_factor": 5})


def search_with(query: Q, knobs: dict[str, int]) -> Q:
    """``query`` (a LanceDB vector query) with each of ``knobs`` set."""
    for name, value in knobs.items():
        query = getattr(query, name)(value)
    return query
