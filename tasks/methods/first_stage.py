"""Methods that search the index straight from the query: dense, bm25, hybrid, multiview, d2q.

They are the first stages the query-time methods build on. Chunk hits aggregate to documents by their best
chunk (max).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from tasks.methods.base import FROZEN, Ranking, Retriever, rank

PASSAGE_KINDS, QUERY_KINDS = ("chunk", "title"), ("query",)


class DenseParams(BaseModel):
    """Bi-encoder cosine similarity over chunk vectors; a document scores as its best chunk.

    ``whiten``: the cosine after whitening queries and chunks alike with the corpus's fit (WhiteningBERT,
    :mod:`storage.whitening`), keeping the ``dims`` directions of most variance. ``compensate``: the query
    encoded by the model of the corpus's pending upgrade and mapped into its index's space (query drift
    compensation, :mod:`storage.compensation`).
    """

    model_config = FROZEN
    whiten: bool = Field(default=False, description="whiten queries and chunks with the corpus's fit")
    dims: int | None = Field(
        default=None, ge=1, description="whitened dimensions kept, most variance first (default: all)"
    )
    compensate: bool = Field(
        default=False, description="encode with the pending upgrade's new model, mapped into the old index"
    )

    @model_validator(mode="after")
    def _dims_whiten(self) -> DenseParams:
        if self.dims is not None and not self.whiten:
            raise ValueError("dims applies to whitened search only: add whiten=true")
        return self


PLAIN = DenseParams()  # plain dense: the first stage of hybrid, multiview and the query methods


class Bm25Params(BaseModel):
    """BM25 over title + text with LanceDB's native full-text index (English stemming, stop words)."""

    model_config = FROZEN


# Each fusion's weights when none are given: min-max score fusion at 0.7 dense / 0.3 bm25 is the default,
# chosen on the dev collections by bench/fusion.py's rule (README, "Fusion default"); RRF stays unweighted
# as Cormack et al. define it, so ``hybrid(fusion=rrf)`` reproduces the figures measured before the switch.
DEFAULT_WEIGHTS = {"score": (0.7, 0.3), "rrf": (1.0, 1.0)}


class HybridParams(BaseModel):
    """Fusion of dense and bm25 rankings, each cut at ``depth``."""

    model_config = FROZEN
    fusion: Literal["score", "rrf"] = Field(
        default="score", description="min-max score fusion or reciprocal rank fusion"
    )
    rrf_k: int = Field(default=60, ge=1, description="RRF constant: score = sum w / (rrf_k + rank)")
    dense_weight: float | None = Field(
        default=None, ge=0, description="weight of the dense ranking (default: 0.7 for score, 1 for rrf)"
    )
    bm25_weight: float | None = Field(
        default=None, ge=0, description="weight of the bm25 ranking (default: 0.3 for score, 1 for rrf)"
    )
    depth: int = Field(default=1000, ge=1, description="hits taken from each ranking before fusion")

    @property
    def weights(self) -> tuple[float, float]:
        """(dense, bm25): each as given, or the fusion's default."""
        dense, bm25 = DEFAULT_WEIGHTS[self.fusion]
        return (
            dense if self.dense_weight is None else self.dense_weight,
            bm25 if self.bm25_weight is None else self.bm25_weight,
        )

    @model_validator(mode="after")
    def _some_weight(self) -> HybridParams:
        if self.weights == (0, 0):
            raise ValueError("dense_weight and bm25_weight are both 0: every document would score 0")
        return self


class MultiviewParams(BaseModel):
    """Dense search over every view of a document: chunks, title and kept synthetic queries.

    ``max``: a document scores as its best view of any kind. ``weighted``: (1 - query_weight) x its best
    passage (chunk or title) score + query_weight x its best synthetic-query score.
    """

    model_config = FROZEN
    agg: Literal["max", "weighted"] = Field(default="max", description="how view scores combine per document")
    query_weight: float = Field(
        default=0.3, ge=0, le=1, description="weight of the best query view (weighted)"
    )
    depth: int = Field(default=200, ge=1, description="documents taken from each view kind before combining")


class D2qParams(BaseModel):
    """BM25 over documents expanded with their kept synthetic queries (doc2query / doc2query--)."""

    model_config = FROZEN


def rrf(rankings: Sequence[Ranking], weights: Sequence[float], k: int) -> dict[str, float]:
    """Reciprocal rank fusion (Cormack et al. 2009): ``sum_i w_i / (k + rank_i)``, ranks from 1."""
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for position, (doc_id, _) in enumerate(ranking, start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + weight / (k + position)
    return fused


def score_fusion(rankings: Sequence[Ranking], weights: Sequence[float]) -> dict[str, float]:
    """Weighted sum of min-max normalised scores; a document missing from a ranking gets 0 there."""
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        if not ranking:
            continue
        scores = [s for _, s in ranking]
        low, span = min(scores), max(scores) - min(scores)
        for doc_id, score in ranking:
            norm = (score - low) / span if span > 0 else 1.0
            fused[doc_id] = fused.get(doc_id, 0.0) + weight * norm
    return fused


def combine(passages: Ranking, queries: Ranking, params: MultiviewParams) -> dict[str, float]:
    """Per-document score from the best passage view and the best query view (see MultiviewParams)."""
    best_p, best_q = dict(passages), dict(queries)
    if params.agg == "max":
        return {d: max(best_p.get(d, -1.0), best_q.get(d, -1.0)) for d in best_p.keys() | best_q.keys()}
    # A document missing from one list scores there as the list's lowest: a bound, not a guess of zero.
    floor_p = min(best_p.values(), default=0.0)
    floor_q = min(best_q.values(), default=0.0)
    w = params.query_weight
    return {
        d: (1 - w) * best_p.get(d, floor_p) + w * best_q.get(d, floor_q)
        for d in best_p.keys() | best_q.keys()
    }


def dense(
    retriever: Retriever,
    texts: list[str],
    k: int,
    kinds: tuple[str, ...] = ("chunk",),
    params: DenseParams = PLAIN,
) -> list[Ranking]:
    """Top ``k`` documents of each text by its query embedding, over the views of ``kinds``."""
    if not texts:
        return []
    vectors = retriever.compensated(texts) if params.compensate else retriever.encode(texts, queries=True)
    return retriever.search_vectors(vectors, k, kinds, whiten=params.whiten, dims=params.dims)


def retrieve_dense(
    retriever: Retriever, params: DenseParams, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    """Dense search (whitened with ``params.whiten``), the query encoded in one batch with the others."""
    return dict(zip(queries, dense(retriever, list(queries.values()), k, params=params), strict=True))


def retrieve_bm25(
    retriever: Retriever, params: Bm25Params, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    """bm25 over title and text."""
    return dict(zip(queries, retriever.search_text(list(queries.values()), k), strict=True))


def retrieve_d2q(
    retriever: Retriever, params: D2qParams, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    """bm25 over the documents expanded with their synthetic queries."""
    return dict(zip(queries, retriever.search_text(list(queries.values()), k, expanded=True), strict=True))


def retrieve_hybrid(
    retriever: Retriever, params: HybridParams, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    """Dense and bm25, each to ``depth``, fused by reciprocal rank or by min-max normalised score.

    The legs run side by side: dense waits on the model (torch), bm25 on Lance (Rust), both outside the GIL.
    """
    texts = list(queries.values())
    with ThreadPoolExecutor(1, thread_name_prefix="zsr-dense") as pool:
        dense_leg = pool.submit(dense, retriever, texts, params.depth)
        bm25 = retriever.search_text(texts, params.depth)
        pairs = zip(dense_leg.result(), bm25, strict=True)
    weights = params.weights
    rankings = [
        rank(rrf(pair, weights, params.rrf_k) if params.fusion == "rrf" else score_fusion(pair, weights), k)
        for pair in pairs
    ]
    return dict(zip(queries, rankings, strict=True))


def retrieve_multiview(
    retriever: Retriever, params: MultiviewParams, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    """Dense over passage views and over query views, each to ``depth``, combined per document."""
    texts = list(queries.values())
    passages = dense(retriever, texts, max(k, params.depth), PASSAGE_KINDS)
    asked = dense(retriever, texts, max(k, params.depth), QUERY_KINDS)
    rankings = [rank(combine(p, q, params), k) for p, q in zip(passages, asked, strict=True)]
    return dict(zip(queries, rankings, strict=True))
