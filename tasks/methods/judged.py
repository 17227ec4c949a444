"""Methods that put the first stage's top documents before a relevance judge: rede-rf and rerank.

Each follows its paper and released code (see METHODS.md); deviations are named in the parameter model's
docstring, which ``zsr methods`` shows. A judgement that fails counts as an LLM error of its query; the
query falls back (see each method) and the run goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from tasks.llm.judge import Judgement, LLMJudge
from tasks.methods.base import FROZEN, MethodSpec, Ranking, Retriever, dense_from, mean_vector, stack
from tasks.methods.generative import PASSAGE_CHARS, Domain, HydeParams, hyde_vectors


class RedeRfParams(BaseModel):
    """ReDE-RF: mean of the query vector and the stored vectors of the judged-relevant first-stage documents.

    The judge decides each of the first stage's top k; up to max_relevant relevant ones join the query vector
    with equal weights, then dense search. Fallback when none is relevant: the plain query vector, HyDE,
    HyDE-PRF over the same first stage's top k (the paper's headline rows) or the first stage's ranking.
    """

    model_config = FROZEN
    first: MethodSpec = Field(default="hybrid", description="first-stage method, parameters and all")
    k: int = Field(default=20, ge=1, description="first-stage documents judged")
    max_relevant: int | None = Field(default=None, ge=1, description="k*: judged-relevant documents used")
    fallback: Literal["query", "hyde", "hyde-prf", "none"] = Field(
        default="query",
        description="when none is relevant: query vector, hyde, hyde-prf, or first-stage ranking",
    )
    domain: Domain = Field(default="web", description="HyDE prompt of the hyde and hyde-prf fallbacks")


class RerankParams(BaseModel):
    """Pointwise rerank of the first stage's top depth by the judge, the rest of the first stage below.

    Relevance is P(relevant) from log-probabilities where given, else the grade; ties keep first-stage
    order. Scores are rank-based (n, n-1, ...), so any evaluator keeps this order.
    """

    model_config = FROZEN
    first: MethodSpec = Field(default="hybrid", description="first-stage method, parameters and all")
    depth: int = Field(default=20, ge=1, description="first-stage documents judged and reranked")


def judge_candidates(
    retriever: Retriever, queries: Mapping[str, str], candidates: Mapping[str, list[str]]
) -> dict[str, list[Judgement]]:
    """The judge's verdict on each query's candidates, in their order.

    The default judge is ReDE-RF's: binary, one token, the passage cut to about 128 tokens, over the
    searcher's (metered) LLM; an answer it cannot read is not cached, so the next run asks again.
    """
    judge = retriever.judge or LLMJudge(
        retriever.llm, scale="binary", max_doc_chars=PASSAGE_CHARS, cache_unparseable=False
    )
    texts = retriever.document_texts(sorted({d for ds in candidates.values() for d in ds}))
    pairs = [(qid, queries[qid], d, texts.get(d, "")) for qid in queries for d in candidates[qid]]
    out: dict[str, list[Judgement]] = {qid: [] for qid in queries}
    for (qid, *_), verdict in zip(pairs, judge.judge(pairs), strict=True):
        out[qid].append(verdict)
        retriever.trace(qid).judge = judge.name
        retriever.trace(qid).llm_errors += verdict.grade is None
    return out


def retrieve_rede_rf(
    retriever: Retriever, params: RedeRfParams, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    """Dense search with the mean of each query's vector and its judged-relevant documents' vectors."""
    ids = list(queries)
    first = retriever.retrieve(
        queries, params.first, max(k, params.k)
    )  # deeper than judged, for fallback=none
    verdicts = judge_candidates(
        retriever, queries, {qid: [d for d, _ in first[qid][: params.k]] for qid in ids}
    )
    relevant = {
        qid: [v.doc_id for v in verdicts[qid] if v.grade][: params.max_relevant] for qid in ids
    }  # failed judgements (grade None) count as not relevant: false positives are what hurt ReDE-RF
    stored = retriever.document_vectors(sorted({d for ds in relevant.values() for d in ds}))
    query_vectors = retriever.encode(list(queries.values()), queries=True)
    vectors = {}
    for qid, query in zip(ids, query_vectors, strict=True):
        docs = stack(stored, relevant[qid], query.shape[0])
        if len(docs):
            vectors[qid] = mean_vector(query, docs)
            continue
        failed = sum(v.grade is None for v in verdicts[qid])
        why = "no first-stage document judged relevant" + (f" ({failed} judgements failed)" if failed else "")
        label = "first-stage" if params.fallback == "none" else params.fallback
        retriever.trace(qid).fallback = f"{label}: {why}"
        if params.fallback == "query":
            vectors[qid] = query
    unjudged = {qid: queries[qid] for qid in ids if qid not in vectors}
    if params.fallback in ("hyde", "hyde-prf") and unjudged:
        context = params.k if params.fallback == "hyde-prf" else 0
        hyde = HydeParams(domain=params.domain, context=context, first=params.first)
        hyde_vecs, reasons = hyde_vectors(retriever, hyde, unjudged)
        for qid, vector, reason in zip(unjudged, hyde_vecs, reasons, strict=True):
            vectors[qid] = vector
            if reason:
                retriever.trace(qid).fallback = f"{retriever.trace(qid).fallback}; {reason}"
    dense_ids = [qid for qid in ids if qid in vectors]
    dense = dense_from(retriever, dense_ids, np.vstack([vectors[q] for q in dense_ids]), k) if vectors else {}
    return {qid: dense[qid] if qid in dense else first[qid][:k] for qid in ids}


def relevance(verdict: Judgement) -> float:
    """P(relevant) where the judge gives it, else the grade (``None``: the judgement failed)."""
    return verdict.probability if verdict.probability is not None else float(verdict.grade or 0)


def retrieve_rerank(
    retriever: Retriever, params: RerankParams, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    """The first stage's top ``depth`` reordered by the judge's relevance, the rest of it below."""
    first = retriever.retrieve(queries, params.first, max(k, params.depth))
    verdicts = judge_candidates(
        retriever, queries, {qid: [d for d, _ in r[: params.depth]] for qid, r in first.items()}
    )
    out = {}
    for qid, ranking in first.items():
        judged = verdicts[qid]
        failed = sum(v.grade is None for v in judged)
        order = [d for d, _ in ranking]
        if failed:  # an unknown grade cannot be placed: this query keeps the first stage's order
            retriever.trace(qid).fallback = f"first-stage: {failed} of {len(judged)} judgements failed"
        else:  # sorted() is stable, so equal relevance keeps first-stage order
            order = [v.doc_id for v in sorted(judged, key=lambda v: -relevance(v))] + order[len(judged) :]
        out[qid] = [(d, float(len(order) - i)) for i, d in enumerate(order[:k])]
    return out
