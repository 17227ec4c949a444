"""Methods that put the first stage's top documents before a relevance judge: rede-rf and rerank.

Each follows its paper and released code (see METHODS.md); deviations are named in the parameter model's
docstring, which ``zsr methods`` shows. A judgement that fails counts as an LLM error of its query; the
query falls back (see each method) and the run goes on.

Both take the judge's knobs of :class:`JudgedParams`: ``votes`` (each pair asked of that many voters,
their verdicts aggregated), and ``budget`` (judge calls a query may make, its first stage's included). In
a pipeline (``rerank(first=rede-rf)``) a pair is judged once per search and its verdict reused
(:class:`~tasks.llm.judge.JudgementMemo`), so rerank pays only for the documents rede-rf did not judge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from tasks.llm.judge import Aggregate, Judge, Judgement, LLMJudge, Pair, aggregate, settled, voter
from tasks.methods.base import FROZEN, MethodSpec, Ranking, Retriever, dense_from, mean_vector, stack
from tasks.methods.first_stage import score_fusion
from tasks.methods.generative import PASSAGE_CHARS, Domain, HydeParams, hyde_vectors


class JudgedParams(BaseModel):
    """The judge's knobs every judged method takes."""

    model_config = FROZEN
    votes: int = Field(default=1, ge=1, description="voters asked per pair (each call counts)")
    aggregate: Aggregate = Field(
        default="majority", description="votes to one verdict: majority, or mean P(relevant) above 1/2"
    )
    confirm: bool = Field(
        default=False, description="later votes only where the first found the pair relevant"
    )
    budget: int | None = Field(
        default=None, ge=1, description="judge calls a query may make, its first stage's included (none)"
    )


class RedeRfParams(JudgedParams):
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


class RerankParams(JudgedParams):
    """Pointwise rerank of the first stage's top depth by the judge, the rest of the first stage below.

    Relevance is P(relevant) from log-probabilities where given, else the grade (with votes: the share of
    votes, or their mean P). The order is by alpha x relevance + (1 - alpha) x the first-stage score
    min-max normalised over the top depth: alpha 1, the paper's pure rerank; 0, the first stage. Ties
    keep first-stage order. Scores are rank-based (n, n-1, ...), so any evaluator keeps this order. A
    budget that runs out judges a shorter top (the first stage's order below it).
    """

    first: MethodSpec = Field(default="hybrid", description="first-stage method, parameters and all")
    depth: int = Field(default=20, ge=1, description="first-stage documents judged and reranked")
    alpha: float = Field(
        default=1.0, ge=0.0, le=1.0, description="weight of the judge against the first stage"
    )


def judge_candidates(
    retriever: Retriever,
    params: JudgedParams,
    queries: Mapping[str, str],
    candidates: Mapping[str, list[str]],
) -> dict[str, list[Judgement]]:
    """The judge's verdict on each query's candidates, in their order, within the search's budget.

    Voters are asked in rounds: the first judges every candidate the query can afford (a prefix of them:
    the budget stops it at the first it cannot pay for), each next voter only the pairs the votes so far
    leave open (majority: a side could still win; mean: always), so majority of 3 costs about 2 calls a
    pair when votes mostly agree, with the same verdicts as asking all 3. A budget that runs out in a later
    round leaves the rest of the query's pairs with the votes they have. ``confirm``: a pair the first
    voter rejects stays rejected and only its accepted pairs get more votes, since false positives are
    what hurt (a budget then reaches deeper). A pair a voter judged earlier in this search (the first
    stage of a pipeline) is reused and costs nothing.

    The default judge is ReDE-RF's: binary, one token, the passage cut to about 128 tokens, over the
    searcher's (metered) LLM; an answer it cannot read is not cached, so the next run asks again.
    """
    judge: Judge = retriever.judge or LLMJudge(
        retriever.llm, scale="binary", max_doc_chars=PASSAGE_CHARS, cache_unparseable=False
    )
    memo = retriever.judgements
    votes: dict[tuple[str, str], list[Judgement]] = {}
    afforded: dict[str, list[str]] = {qid: [] for qid in queries}
    texts: dict[str, str] = {}
    for index in range(params.votes):
        vote = voter(judge, index)
        consulted: list[tuple[str, str]] = []  # the pairs this voter's verdict counts for
        asks: list[Pair] = []
        for qid in queries:
            trace = retriever.trace(qid)
            for doc in candidates[qid] if index == 0 else afforded[qid]:
                if index and (
                    (params.confirm and not votes[qid, doc][0].grade)
                    or settled(votes[qid, doc], params.votes, params.aggregate)
                ):
                    continue
                known = (vote.name, qid, doc) in memo.seen
                if not known and memo.budget is not None and trace.judge_calls >= memo.budget:
                    break
                consulted.append((qid, doc))
                if not known:
                    trace.judge_calls += 1
                    asks.append((qid, queries[qid], doc, ""))
        new = sorted({d for _, _, d, _ in asks} - set(texts))
        texts.update(retriever.document_texts(new) if new else {})
        pairs = [(q, text, d, texts.get(d, "")) for q, text, d, _ in asks]
        for (qid, _, doc, _), verdict in zip(pairs, vote.judge(pairs), strict=True):
            memo.seen[vote.name, qid, doc] = verdict
            retriever.trace(qid).llm_errors += verdict.grade is None
        for qid, doc in consulted:
            votes.setdefault((qid, doc), []).append(memo.seen[vote.name, qid, doc])
            if index == 0:
                afforded[qid].append(doc)
    out = {}
    for qid, docs in afforded.items():
        retriever.trace(qid).judge = judge.name
        out[qid] = [aggregate(votes[qid, d], params.aggregate) for d in docs]
    return out


def retrieve_rede_rf(
    retriever: Retriever, params: RedeRfParams, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    """Dense search with the mean of each query's vector and its judged-relevant documents' vectors."""
    ids = list(queries)
    with retriever.judgements.capped(params.budget):
        first = retriever.retrieve(queries, params.first, max(k, params.k))  # deeper, for fallback=none
        verdicts = judge_candidates(
            retriever, params, queries, {qid: [d for d, _ in first[qid][: params.k]] for qid in ids}
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
    """The first stage's top ``depth`` reordered by the judge's relevance (and alpha), the rest below."""
    with retriever.judgements.capped(params.budget):
        first = retriever.retrieve(queries, params.first, max(k, params.depth))
        verdicts = judge_candidates(
            retriever, params, queries, {qid: [d for d, _ in r[: params.depth]] for qid, r in first.items()}
        )
    out = {}
    for qid, ranking in first.items():
        judged = verdicts[qid]
        failed = sum(v.grade is None for v in judged)
        order = [d for d, _ in ranking]
        if failed:  # an unknown grade cannot be placed: this query keeps the first stage's order
            retriever.trace(qid).fallback = f"first-stage: {failed} of {len(judged)} judgements failed"
        else:  # sorted() is stable, so equal scores keep first-stage order
            prior = score_fusion([ranking[: len(judged)]], [1.0])  # min-max over the judged top
            score = {
                v.doc_id: params.alpha * relevance(v) + (1 - params.alpha) * prior[v.doc_id] for v in judged
            }
            order = sorted(order[: len(judged)], key=lambda d: -score[d]) + order[len(judged) :]
        out[qid] = [(d, float(len(order) - i)) for i, d in enumerate(order[:k])]
    return out
