"""Methods where the LLM writes text for the query: hyde (hypothetical documents) and expand (query2doc).

Each follows its paper and released code (see METHODS.md); deviations are named in the parameter model's
docstring, which ``zsr methods`` shows. A passage the LLM fails to write, or writes empty, counts as an LLM
error of its query, which falls back to the plain query.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from tasks.llm.client import Completion, Request
from tasks.methods.base import FROZEN, MethodSpec, Ranking, Retriever, dense_from, mean_vector

Domain = Literal["web", "claim", "scientific", "finance", "argument", "news"]
# HyDE's released promptor.py, verbatim (ReDE-RF reuses them): web/general, scientific claim, scientific or
# medical question, finance, argument, news.
HYDE_PROMPTS: dict[str, str] = {
    "web": "Please write a passage to answer the question.\nQuestion: {}\nPassage:",
    "claim": "Please write a scientific paper passage to support/refute the claim.\nClaim: {}\nPassage:",
    "scientific": "Please write a scientific paper passage to answer the question.\nQuestion: {}\nPassage:",
    "finance": "Please write a financial article passage to answer the question.\nQuestion: {}\nPassage:",
    "argument": "Please write a counter argument for the passage.\nPassage: {}\nCounter Argument:",
    "news": "Please write a news passage about the topic.\nTopic: {}\nPassage:",
}
# HyDE-PRF shows the first stage's passages before HyDE's prompt. ReDE-RF's paper describes the method, not
# this wording, which is ours: the numbered passages, then the domain's HyDE prompt unchanged.
PRF_CONTEXT = "Context passages:\n{}\n\n"
STOP = ("\n\n\n",)  # HyDE's stop sequence
PASSAGE_CHARS = 512  # about the 128 tokens ReDE-RF cuts each judged or context passage to


class HydeParams(BaseModel):
    """HyDE: mean of the query embedding and n LLM-written hypothetical documents embedded as passages.

    With context > 0 it is HyDE-PRF (ReDE-RF's baseline and fallback): the first stage's top passages, each
    cut to about 128 tokens, precede the prompt. The context wording is zsr's; the papers do not give it.
    """

    model_config = FROZEN
    n: int = Field(default=8, ge=1, description="hypothetical documents per query")
    domain: Domain = Field(default="web", description="prompt template (HyDE's per-task prompts)")
    temperature: float = Field(default=0.7, ge=0, description="sampling temperature")
    max_tokens: int = Field(default=512, ge=1, description="tokens per hypothetical document")
    context: int = Field(default=0, ge=0, description="first-stage passages in the prompt (0: plain HyDE)")
    first: MethodSpec = Field(default="hybrid", description="first stage of the context passages (HyDE-PRF)")


class ExpandParams(BaseModel):
    """query2doc: the LLM writes a passage that expands the query for bm25 or dense.

    bm25 searches the query repeated ``repeat`` times plus the passage; dense embeds query [SEP] passage.
    Zero-shot HyDE prompts, not query2doc's few-shot ones.
    """

    model_config = FROZEN
    first: Literal["bm25", "dense"] = Field(default="bm25", description="method run on the expanded query")
    repeat: int = Field(default=5, ge=1, description="query copies before the passage (bm25 only)")
    domain: Domain = Field(default="web", description="prompt template (HyDE's per-task prompts)")
    temperature: float = Field(default=0.0, ge=0, description="sampling temperature")
    max_tokens: int = Field(default=128, ge=1, description="tokens of the generated passage")


def generate(
    retriever: Retriever, prompts: Mapping[str, str], n: int, purpose: str, **request: Any
) -> dict[str, list[str]]:
    """``n`` non-empty LLM passages per query id from its prompt (fewer where calls fail or are empty)."""
    requests = [
        Request(
            [{"role": "user", "content": prompt}],
            stop=STOP,
            seed=sample,  # tells the samples of one prompt apart (and apart in the cache)
            context={"query_id": qid, "sample": sample},
            accept=_has_text,  # an empty passage is not cached: the next run asks again
            **request,
        )
        for qid, prompt in prompts.items()
        for sample in range(n)
    ]
    answers = retriever.llm.complete_many(requests, purpose=purpose)
    out: dict[str, list[str]] = {qid: [] for qid in prompts}
    for req, answer in zip(requests, answers, strict=True):
        qid = req.context["query_id"]
        text = answer.text.strip() if isinstance(answer, Completion) else ""
        if text:
            out[qid].append(text)
        else:
            retriever.trace(qid).llm_errors += 1
    return out


def _has_text(answer: Completion) -> bool:
    return bool(answer.text.strip())


def hyde_vectors(
    retriever: Retriever, params: HydeParams, queries: Mapping[str, str]
) -> tuple[np.ndarray, list[str | None]]:
    """HyDE's query vectors, and per query why it fell back to the query vector (``None``: it did not)."""
    template = HYDE_PROMPTS[params.domain]
    prompts = {qid: template.format(text) for qid, text in queries.items()}
    if params.context:
        first = retriever.retrieve(queries, params.first, params.context)
        texts = retriever.document_texts(sorted({d for r in first.values() for d, _ in r}))
        for qid, ranking in first.items():
            shown = [texts.get(d, "")[:PASSAGE_CHARS] for d, _ in ranking]
            numbered = "\n".join(f"[{i}] {text}" for i, text in enumerate(shown, 1))
            prompts[qid] = PRF_CONTEXT.format(numbered) + prompts[qid]
    passages = generate(
        retriever, prompts, params.n, "hyde", temperature=params.temperature, max_tokens=params.max_tokens
    )
    query_vectors = retriever.encode(list(queries.values()), queries=True)
    flat = [p for ps in passages.values() for p in ps]
    # One encoder call for every query's documents, as passages (HyDE's documents stand in for the corpus).
    encoded = retriever.encode(flat, queries=False) if flat else np.empty((0, query_vectors.shape[1]))
    vectors, reasons, start = [], [], 0
    for query, docs in zip(query_vectors, passages.values(), strict=True):
        vectors.append(mean_vector(query, encoded[start : start + len(docs)]))
        reasons.append(None if docs else f"query: no usable hypothetical document of {params.n}")
        start += len(docs)
    return np.vstack(vectors), reasons


def retrieve_hyde(
    retriever: Retriever, params: HydeParams, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    """Dense search with each query's HyDE vector."""
    vectors, reasons = hyde_vectors(retriever, params, queries)
    for qid, reason in zip(queries, reasons, strict=True):
        retriever.trace(qid).fallback = reason
    return dense_from(retriever, list(queries), vectors, k)


def retrieve_expand(
    retriever: Retriever, params: ExpandParams, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    """bm25 or dense over each query expanded with one LLM passage (the plain query where none came)."""
    template = HYDE_PROMPTS[params.domain]
    passages = generate(
        retriever, {qid: template.format(text) for qid, text in queries.items()}, 1, "expand",
        temperature=params.temperature, max_tokens=params.max_tokens,
    )  # fmt: skip
    expanded = {}
    for qid, query in queries.items():
        if not passages[qid]:
            retriever.trace(qid).fallback = f"{params.first}: no usable passage"
            expanded[qid] = query
        elif (
            params.first == "bm25"
        ):  # query2doc: repeats balance the long passage's terms against the query's
            expanded[qid] = " ".join([query] * params.repeat + passages[qid])
        else:
            expanded[qid] = f"{query} [SEP] {passages[qid][0]}"
    return retriever.retrieve(expanded, params.first, k)
