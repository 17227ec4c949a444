"""Pseudo-relevance feedback without an LLM: prf (Rocchio in embedding space) and rm3 (for bm25).

Each follows its paper and released code (see METHODS.md); deviations are named in the parameter model's
docstring, which ``zsr methods`` shows.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, Field

from tasks.methods.base import FROZEN, MethodSpec, Ranking, Retriever, dense_from, stack


class PrfParams(BaseModel):
    """Rocchio in embedding space: alpha x query + beta x mean of the top k first-stage documents' vectors.

    The documents' stored vectors (each the normalised mean of its chunks) feed back; then dense search.
    """

    model_config = FROZEN
    first: MethodSpec = Field(default="dense", description="first-stage method, parameters and all")
    k: int = Field(default=3, ge=1, description="feedback documents")
    alpha: float = Field(default=1.0, ge=0, description="weight of the query vector")
    beta: float = Field(default=0.75, ge=0, description="weight of the feedback documents' mean vector")


class Rm3Params(BaseModel):
    """RM3 for bm25: the relevance model of the top k bm25 documents, mixed with the query, as Anserini does.

    P(w|R) sums P(w|d) over the feedback documents weighted by their share of the bm25 scores; its top
    ``terms`` words, renormalised, mix with the query's own word distribution (weight ``original``) into one
    weighted bm25 query. Words are analysed like the index's (Snowball English stems, stop words dropped).
    """

    model_config = FROZEN
    k: int = Field(default=10, ge=1, description="feedback documents")
    terms: int = Field(default=10, ge=1, description="expansion terms")
    original: float = Field(default=0.5, ge=0, le=1, description="weight of the query's own terms")


def rocchio(query: np.ndarray, docs: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """``alpha q + beta mean(docs)``; the query alone when there is no feedback document."""
    return alpha * query + beta * docs.mean(axis=0) if len(docs) else query


def retrieve_prf(
    retriever: Retriever, params: PrfParams, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    """Dense search with each query's Rocchio vector over its first stage's top k stored vectors."""
    ids = list(queries)
    first = retriever.retrieve(queries, params.first, params.k)
    stored = retriever.document_vectors(sorted({d for r in first.values() for d, _ in r}))
    query_vectors = retriever.encode(list(queries.values()), queries=True)
    vectors = []
    for qid, query in zip(ids, query_vectors, strict=True):
        docs = stack(stored, [d for d, _ in first[qid]], query.shape[0])
        if not len(docs):
            retriever.trace(qid).fallback = "query: the first stage found no document"
        vectors.append(rocchio(query, docs, params.alpha, params.beta))
    return dense_from(retriever, ids, np.vstack(vectors), k)


WORD = re.compile(r"[^\W_]+")  # runs of letters and digits: the full-text index's simple tokenizer


class Analyzer:
    """Lower-case alphanumeric words, stop words and single characters and numbers dropped, Snowball-stemmed.

    The same Snowball English stemmer as the full-text index, so a stem here is a term there; the stop list is
    scikit-learn's (the index's own list is not exposed).
    """

    def __init__(self) -> None:
        import Stemmer
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        self.stemmer, self.stop = Stemmer.Stemmer("english"), ENGLISH_STOP_WORDS

    def terms(self, text: str) -> list[tuple[str, str]]:
        """``(stem, word)`` for each kept word, in order."""
        words = [
            w for w in WORD.findall(text.lower()) if len(w) > 1 and not w.isdigit() and w not in self.stop
        ]
        return list(zip(self.stemmer.stemWords(words), words, strict=True))


def rm3_query(
    query: str, feedback: Sequence[tuple[str, float]], params: Rm3Params, analyzer: Analyzer
) -> dict[str, float]:
    """RM3's weighted query, ``{word: weight}``, from the query and its ``(text, bm25 score)`` feedback.

    Each stem is queried through the first word seen with it (the query's own first), which the index
    stems back to it.
    """
    words: dict[str, str] = {}

    def distribution(text: str) -> dict[str, float]:
        counts: Counter[str] = Counter()
        for stem, word in analyzer.terms(text):
            counts[stem] += 1
            words.setdefault(stem, word)
        total = sum(counts.values())
        return {stem: n / total for stem, n in counts.items()}

    own = distribution(query)
    total = sum(score for _, score in feedback)
    model: dict[str, float] = defaultdict(float)
    for text, score in feedback:
        for stem, p in distribution(text).items():
            model[stem] += p * score / total
    top = dict(sorted(model.items(), key=lambda item: (-item[1], item[0]))[: params.terms])
    mass = sum(top.values())
    mixed = {
        stem: params.original * own.get(stem, 0.0) + (1 - params.original) * top.get(stem, 0.0) / mass
        for stem in own.keys() | top.keys()
    }
    return {words[stem]: weight for stem, weight in sorted(mixed.items()) if weight > 0}


def retrieve_rm3(
    retriever: Retriever, params: Rm3Params, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    """bm25 with each query's RM3 expansion over its top k bm25 documents."""
    first = retriever.retrieve(queries, "bm25", params.k)
    texts = retriever.document_texts(sorted({d for r in first.values() for d, _ in r}))
    analyzer, expanded = Analyzer(), {}
    for qid, query in queries.items():
        if first[qid]:  # bm25 scores are positive
            feedback = [(texts.get(d, ""), score) for d, score in first[qid]]
            expanded[qid] = rm3_query(query, feedback, params, analyzer)
        else:  # bm25 found nothing, so neither would its expansion
            retriever.trace(qid).fallback = "bm25: no feedback document"
    rankings = dict(zip(expanded, retriever.search_terms(list(expanded.values()), k), strict=True))
    return {qid: rankings.get(qid, []) for qid in queries}
