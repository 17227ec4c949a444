"""PromptReps search (Zhuang et al., 2024): a query's prompted dense and sparse vectors against the corpus's.

The index is built by :func:`tasks.ingest.promptreps.index_promptreps` (``zsr promptreps index``); a chunk is
the paper's passage, and a document scores as its best chunk in each representation. ``hybrid`` fuses the two
rankings as the paper does (ranx ``fuse(norm="min-max", method="wsum")``): each min-max normalised, then
``alpha`` x dense + (1 - ``alpha``) x sparse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, Field

from tasks.methods.base import FROZEN, Ranking, Retriever, rank
from tasks.methods.first_stage import score_fusion


class PromptRepsParams(BaseModel):
    """PromptReps: a causal LM's prompted one-word representations (ZSR_PROMPTREPS_MODEL; needs its index).

    ``dense``: the cosine of the last hidden states; ``sparse``: the dot product of next-token weights over
    the text's own words; ``hybrid``: both, min-max normalised and summed with weights ``alpha`` and
    ``1 - alpha``. Build the index first: ``zsr promptreps index CORPUS`` (or ``zsr ingest --promptreps``).
    """

    model_config = FROZEN
    mode: Literal["dense", "sparse", "hybrid"] = Field(default="hybrid", description="which representation")
    alpha: float = Field(default=0.5, ge=0, le=1, description="hybrid: weight of dense (sparse: 1 - alpha)")
    depth: int = Field(default=1000, ge=1, description="hybrid: hits taken from each ranking before fusion")


def retrieve_promptreps(
    retriever: Retriever, params: PromptRepsParams, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    """Dense, sparse or both PromptReps rankings of each query; both are fused by min-max weighted sum."""
    texts = list(queries.values())
    if params.mode != "hybrid":
        dense, sparse = retriever.search_promptreps(
            texts, k, dense=params.mode == "dense", sparse=params.mode == "sparse"
        )
        return dict(zip(queries, dense or sparse, strict=True))
    dense, sparse = retriever.search_promptreps(texts, max(k, params.depth), dense=True, sparse=True)
    weights = (params.alpha, 1 - params.alpha)
    fused = [rank(score_fusion(pair, weights), k) for pair in zip(dense, sparse, strict=True)]
    return dict(zip(queries, fused, strict=True))
