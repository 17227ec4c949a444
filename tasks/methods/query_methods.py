"""Query-time methods over a first stage, an LLM or a judge: prf, rm3, hyde, rede-rf, expand, rerank.

Each follows its paper and released code (see METHODS.md); deviations are named in the parameter model's
docstring, which ``zsr methods`` shows. A method records what each query cost (LLM calls, tokens, cache
hits), the query vector it searched with, and whether it fell back and why, in a :class:`QueryTrace`. An LLM
that fails or answers junk for a query degrades that query to the method's fallback; it never fails the run.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tasks.llm.client import Completion, LLMConfig, LLMError, Request
from tasks.llm.judge import Completer, Judgement, LLMJudge

if TYPE_CHECKING:
    from tasks.methods.search import Ranking, Searcher

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
_FROZEN = ConfigDict(extra="forbid", frozen=True)


class PrfParams(BaseModel):
    """Rocchio in embedding space: alpha x query + beta x mean of the top k first-stage documents' vectors.

    The documents' stored vectors (each the normalised mean of its chunks) feed back; then dense search.
    """

    model_config = _FROZEN
    first: str = Field(default="dense", description="first-stage method (a registered name)")
    k: int = Field(default=3, ge=1, description="feedback documents")
    alpha: float = Field(default=1.0, ge=0, description="weight of the query vector")
    beta: float = Field(default=0.75, ge=0, description="weight of the feedback documents' mean vector")


class Rm3Params(BaseModel):
    """RM3 for bm25: the relevance model of the top k bm25 documents, mixed with the query, as Anserini does.

    P(w|R) sums P(w|d) over the feedback documents weighted by their share of the bm25 scores; its top
    ``terms`` words, renormalised, mix with the query's own word distribution (weight ``original``) into one
    weighted bm25 query. Words are analysed like the index's (Snowball English stems, stop words dropped).
    """

    model_config = _FROZEN
    k: int = Field(default=10, ge=1, description="feedback documents")
    terms: int = Field(default=10, ge=1, description="expansion terms")
    original: float = Field(default=0.5, ge=0, le=1, description="weight of the query's own terms")


class HydeParams(BaseModel):
    """HyDE: mean of the query embedding and n LLM-written hypothetical documents embedded as passages.

    With context > 0 it is HyDE-PRF (ReDE-RF's baseline and fallback): the first stage's top passages, each
    cut to about 128 tokens, precede the prompt. The context wording is zsr's; the papers do not give it.
    """

    model_config = _FROZEN
    n: int = Field(default=8, ge=1, description="hypothetical documents per query")
    domain: Domain = Field(default="web", description="prompt template (HyDE's per-task prompts)")
    temperature: float = Field(default=0.7, ge=0, description="sampling temperature")
    max_tokens: int = Field(default=512, ge=1, description="tokens per hypothetical document")
    context: int = Field(default=0, ge=0, description="first-stage passages in the prompt (0: plain HyDE)")
    first: str = Field(default="hybrid", description="first stage of the context passages (HyDE-PRF)")


class RedeRfParams(BaseModel):
    """ReDE-RF: mean of the query vector and the stored vectors of the judged-relevant first-stage documents.

    The judge decides each of the first stage's top k; up to max_relevant relevant ones join the query vector
    with equal weights, then dense search. Fallback when none is relevant: the plain query vector, HyDE,
    HyDE-PRF over the same first stage's top k (the paper's headline rows) or the first stage's ranking.
    """

    model_config = _FROZEN
    first: str = Field(default="hybrid", description="first-stage method (a registered name)")
    k: int = Field(default=20, ge=1, description="first-stage documents judged")
    max_relevant: int | None = Field(default=None, ge=1, description="k*: judged-relevant documents used")
    fallback: Literal["query", "hyde", "hyde-prf", "none"] = Field(
        default="query",
        description="when none is relevant: query vector, hyde, hyde-prf, or first-stage ranking",
    )
    domain: Domain = Field(default="web", description="HyDE prompt of the hyde and hyde-prf fallbacks")


class ExpandParams(BaseModel):
    """query2doc: the LLM writes a passage that expands the query for bm25 or dense.

    bm25 searches the query repeated ``repeat`` times plus the passage; dense embeds query [SEP] passage.
    Zero-shot HyDE prompts, not query2doc's few-shot ones.
    """

    model_config = _FROZEN
    first: Literal["bm25", "dense"] = Field(default="bm25", description="method run on the expanded query")
    repeat: int = Field(default=5, ge=1, description="query copies before the passage (bm25 only)")
    domain: Domain = Field(default="web", description="prompt template (HyDE's per-task prompts)")
    temperature: float = Field(default=0.0, ge=0, description="sampling temperature")
    max_tokens: int = Field(default=128, ge=1, description="tokens of the generated passage")


class RerankParams(BaseModel):
    """Pointwise rerank of the first stage's top depth by the judge, the rest of the first stage below.

    Relevance is P(relevant) from log-probabilities where given, else the grade; ties keep first-stage
    order. Scores are rank-based (n, n-1, ...), so any evaluator keeps this order.
    """

    model_config = _FROZEN
    first: str = Field(default="hybrid", description="first-stage method (a registered name)")
    depth: int = Field(default=20, ge=1, description="first-stage documents judged and reranked")


QUERY_METHODS: dict[str, type[BaseModel]] = {
    "prf": PrfParams,
    "rm3": Rm3Params,
    "hyde": HydeParams,
    "rede-rf": RedeRfParams,
    "expand": ExpandParams,
    "rerank": RerankParams,
}


@dataclass
class QueryTrace:
    """What one query cost and how its method ran; ``fallback`` is ``"<what ran instead>: <why>"``."""

    llm_calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cache_hits: int = 0
    llm_errors: int = 0  # LLM answers that failed or could not be used (junk, empty, unparseable)
    fallback: str | None = None
    llm: str | None = None  # the model that answered, where one was called
    judge: str | None = None
    vector: np.ndarray | None = None  # the vector of the final dense search, where the method builds one

    def add_cost(self, other: QueryTrace) -> None:
        """Add another trace's counts (calls, tokens, cache hits) to this one."""
        for name in ("llm_calls", "tokens_in", "tokens_out", "cache_hits"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def counts(self) -> dict[str, Any]:
        """The per-query columns of the warehouse's ``queries`` table."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("llm", "judge", "vector")
        }


class LLMUnavailableError(RuntimeError):
    """A method needs an LLM and the searcher has none."""


class Meter:
    """A :class:`~tasks.llm.judge.Completer` that counts calls, tokens and cache hits per query id.

    Requests name their query in ``context["query_id"]`` (the LLM judge's do too), so a judge built over
    ``searcher.llm`` is metered like the methods' own calls.
    """

    def __init__(self, inner: Completer) -> None:
        self.inner = inner
        self.config: LLMConfig = inner.config
        self._costs: dict[str, QueryTrace] = {}

    def complete_many(self, requests: Sequence[Request], purpose: str) -> list[Completion | LLMError]:
        """Answer through the wrapped client, counting each answer against its query."""
        answers = self.inner.complete_many(requests, purpose)
        for request, answer in zip(requests, answers, strict=True):
            cost = self._costs.setdefault(str(request.context.get("query_id", "")), QueryTrace())
            cost.llm_calls += 1
            if isinstance(answer, Completion):
                cost.tokens_in += answer.prompt_tokens
                cost.tokens_out += answer.completion_tokens
                cost.cache_hits += answer.cache_hit
        return answers

    def take(self) -> dict[str, QueryTrace]:
        """The counts since the last call, by query id."""
        costs, self._costs = self._costs, {}
        return costs


def rocchio(query: np.ndarray, docs: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """``alpha q + beta mean(docs)``; the query alone when there is no feedback document."""
    return alpha * query + beta * docs.mean(axis=0) if len(docs) else query


def mean_vector(query: np.ndarray, others: np.ndarray) -> np.ndarray:
    """``(q + sum others) / (n + 1)``: HyDE's and ReDE-RF's equal-weight mean, the query included."""
    return np.vstack([query[None, :], others]).mean(axis=0)


def run_query_method(
    searcher: Searcher, name: str, params: BaseModel, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    """Run the query method ``name`` for each query, recording into ``searcher.last_trace``."""
    return _RUNNERS[name](searcher, params, queries, k)


def _dense_from(searcher: Searcher, ids: list[str], vectors: np.ndarray, k: int) -> dict[str, Ranking]:
    for qid, vector in zip(ids, vectors, strict=True):
        searcher.last_trace[qid].vector = vector
    return dict(zip(ids, searcher.search_vectors(vectors, k), strict=True))


def _stack(vectors: Mapping[str, np.ndarray], doc_ids: Sequence[str], dim: int) -> np.ndarray:
    found = [
        vectors[d] for d in doc_ids if d in vectors
    ]  # a document deleted since the first stage drops out
    return np.vstack(found) if found else np.empty((0, dim), np.float32)


def _prf(searcher: Searcher, params: PrfParams, queries: Mapping[str, str], k: int) -> dict[str, Ranking]:
    ids = list(queries)
    first = searcher.run(queries, params.first, params.k)
    stored = searcher.document_vectors(sorted({d for r in first.values() for d, _ in r}))
    query_vectors = searcher.encode(list(queries.values()), queries=True)
    vectors = []
    for qid, query in zip(ids, query_vectors, strict=True):
        docs = _stack(stored, [d for d, _ in first[qid]], query.shape[0])
        if not len(docs):
            searcher.last_trace[qid].fallback = "query: the first stage found no document"
        vectors.append(rocchio(query, docs, params.alpha, params.beta))
    return _dense_from(searcher, ids, np.vstack(vectors), k)


_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits: the full-text index's simple tokenizer


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
            w for w in _WORD.findall(text.lower()) if len(w) > 1 and not w.isdigit() and w not in self.stop
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


def _rm3(searcher: Searcher, params: Rm3Params, queries: Mapping[str, str], k: int) -> dict[str, Ranking]:
    first = searcher.run(queries, "bm25", params.k)
    texts = searcher.document_texts(sorted({d for r in first.values() for d, _ in r}))
    analyzer, expanded = Analyzer(), {}
    for qid, query in queries.items():
        if first[qid]:  # bm25 scores are positive
            feedback = [(texts.get(d, ""), score) for d, score in first[qid]]
            expanded[qid] = rm3_query(query, feedback, params, analyzer)
        else:  # bm25 found nothing, so neither would its expansion
            searcher.last_trace[qid].fallback = "bm25: no feedback document"
    rankings = dict(zip(expanded, searcher.search_terms(list(expanded.values()), k), strict=True))
    return {qid: rankings.get(qid, []) for qid in queries}


def _generate(
    searcher: Searcher, prompts: Mapping[str, str], n: int, purpose: str, **request: Any
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
    answers = searcher.llm.complete_many(requests, purpose=purpose)
    out: dict[str, list[str]] = {qid: [] for qid in prompts}
    for req, answer in zip(requests, answers, strict=True):
        qid = req.context["query_id"]
        text = answer.text.strip() if isinstance(answer, Completion) else ""
        if text:
            out[qid].append(text)
        else:
            searcher.last_trace[qid].llm_errors += 1
    return out


def _has_text(answer: Completion) -> bool:
    return bool(answer.text.strip())


def _hyde_vectors(
    searcher: Searcher, params: HydeParams, queries: Mapping[str, str]
) -> tuple[np.ndarray, list[str | None]]:
    """HyDE's query vectors, and per query why it fell back to the query vector (``None``: it did not)."""
    template = HYDE_PROMPTS[params.domain]
    prompts = {qid: template.format(text) for qid, text in queries.items()}
    if params.context:
        first = searcher.run(queries, params.first, params.context)
        texts = searcher.document_texts(sorted({d for r in first.values() for d, _ in r}))
        for qid, ranking in first.items():
            shown = [texts.get(d, "")[:PASSAGE_CHARS] for d, _ in ranking]
            numbered = "\n".join(f"[{i}] {text}" for i, text in enumerate(shown, 1))
            prompts[qid] = PRF_CONTEXT.format(numbered) + prompts[qid]
    passages = _generate(
        searcher, prompts, params.n, "hyde", temperature=params.temperature, max_tokens=params.max_tokens
    )
    query_vectors = searcher.encode(list(queries.values()), queries=True)
    flat = [p for ps in passages.values() for p in ps]
    # One encoder call for every query's documents, as passages (HyDE's documents stand in for the corpus).
    encoded = searcher.encode(flat, queries=False) if flat else np.empty((0, query_vectors.shape[1]))
    vectors, reasons, start = [], [], 0
    for query, docs in zip(query_vectors, passages.values(), strict=True):
        vectors.append(mean_vector(query, encoded[start : start + len(docs)]))
        reasons.append(None if docs else f"query: no usable hypothetical document of {params.n}")
        start += len(docs)
    return np.vstack(vectors), reasons


def _hyde(searcher: Searcher, params: HydeParams, queries: Mapping[str, str], k: int) -> dict[str, Ranking]:
    vectors, reasons = _hyde_vectors(searcher, params, queries)
    for qid, reason in zip(queries, reasons, strict=True):
        searcher.last_trace[qid].fallback = reason
    return _dense_from(searcher, list(queries), vectors, k)


def _judge(
    searcher: Searcher, queries: Mapping[str, str], candidates: Mapping[str, list[str]]
) -> dict[str, list[Judgement]]:
    """The judge's verdict on each query's candidates, in their order.

    The default judge is ReDE-RF's: binary, one token, the passage cut to about 128 tokens, over the
    searcher's (metered) LLM; an answer it cannot read is not cached, so the next run asks again.
    """
    judge = searcher.judge or LLMJudge(
        searcher.llm, scale="binary", max_doc_chars=PASSAGE_CHARS, cache_unparseable=False
    )
    texts = searcher.document_texts(sorted({d for ds in candidates.values() for d in ds}))
    pairs = [(qid, queries[qid], d, texts.get(d, "")) for qid in queries for d in candidates[qid]]
    out: dict[str, list[Judgement]] = {qid: [] for qid in queries}
    for (qid, *_), verdict in zip(pairs, judge.judge(pairs), strict=True):
        out[qid].append(verdict)
        searcher.last_trace[qid].judge = judge.name
        searcher.last_trace[qid].llm_errors += verdict.grade is None
    return out


def _rede_rf(
    searcher: Searcher, params: RedeRfParams, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    ids = list(queries)
    first = searcher.run(queries, params.first, max(k, params.k))  # deeper than judged, for fallback=none
    verdicts = _judge(searcher, queries, {qid: [d for d, _ in first[qid][: params.k]] for qid in ids})
    relevant = {
        qid: [v.doc_id for v in verdicts[qid] if v.grade][: params.max_relevant] for qid in ids
    }  # failed judgements (grade None) count as not relevant: false positives are what hurt ReDE-RF
    stored = searcher.document_vectors(sorted({d for ds in relevant.values() for d in ds}))
    query_vectors = searcher.encode(list(queries.values()), queries=True)
    vectors = {}
    for qid, query in zip(ids, query_vectors, strict=True):
        docs = _stack(stored, relevant[qid], query.shape[0])
        if len(docs):
            vectors[qid] = mean_vector(query, docs)
            continue
        failed = sum(v.grade is None for v in verdicts[qid])
        why = "no first-stage document judged relevant" + (f" ({failed} judgements failed)" if failed else "")
        label = "first-stage" if params.fallback == "none" else params.fallback
        searcher.last_trace[qid].fallback = f"{label}: {why}"
        if params.fallback == "query":
            vectors[qid] = query
    unjudged = {qid: queries[qid] for qid in ids if qid not in vectors}
    if params.fallback in ("hyde", "hyde-prf") and unjudged:
        context = params.k if params.fallback == "hyde-prf" else 0
        hyde = HydeParams(domain=params.domain, context=context, first=params.first)
        hyde_vectors, reasons = _hyde_vectors(searcher, hyde, unjudged)
        for qid, vector, reason in zip(unjudged, hyde_vectors, reasons, strict=True):
            vectors[qid] = vector
            if reason:
                searcher.last_trace[qid].fallback = f"{searcher.last_trace[qid].fallback}; {reason}"
    dense_ids = [qid for qid in ids if qid in vectors]
    dense = _dense_from(searcher, dense_ids, np.vstack([vectors[q] for q in dense_ids]), k) if vectors else {}
    return {qid: dense[qid] if qid in dense else first[qid][:k] for qid in ids}


def _expand(
    searcher: Searcher, params: ExpandParams, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    template = HYDE_PROMPTS[params.domain]
    passages = _generate(
        searcher, {qid: template.format(text) for qid, text in queries.items()}, 1, "expand",
        temperature=params.temperature, max_tokens=params.max_tokens,
    )  # fmt: skip
    expanded = {}
    for qid, query in queries.items():
        if not passages[qid]:
            searcher.last_trace[qid].fallback = f"{params.first}: no usable passage"
            expanded[qid] = query
        elif (
            params.first == "bm25"
        ):  # query2doc: repeats balance the long passage's terms against the query's
            expanded[qid] = " ".join([query] * params.repeat + passages[qid])
        else:
            expanded[qid] = f"{query} [SEP] {passages[qid][0]}"
    return searcher.run(expanded, params.first, k)


def relevance(verdict: Judgement) -> float:
    """P(relevant) where the judge gives it, else the grade (``None``: the judgement failed)."""
    return verdict.probability if verdict.probability is not None else float(verdict.grade or 0)


def _rerank(
    searcher: Searcher, params: RerankParams, queries: Mapping[str, str], k: int
) -> dict[str, Ranking]:
    first = searcher.run(queries, params.first, max(k, params.depth))
    verdicts = _judge(searcher, queries, {qid: [d for d, _ in r[: params.depth]] for qid, r in first.items()})
    out = {}
    for qid, ranking in first.items():
        judged = verdicts[qid]
        failed = sum(v.grade is None for v in judged)
        order = [d for d, _ in ranking]
        if failed:  # an unknown grade cannot be placed: this query keeps the first stage's order
            searcher.last_trace[qid].fallback = f"first-stage: {failed} of {len(judged)} judgements failed"
        else:  # sorted() is stable, so equal relevance keeps first-stage order
            order = [v.doc_id for v in sorted(judged, key=lambda v: -relevance(v))] + order[len(judged) :]
        out[qid] = [(d, float(len(order) - i)) for i, d in enumerate(order[:k])]
    return out


_RUNNERS: dict[str, Callable[..., dict[str, Ranking]]] = {
    "prf": _prf,
    "rm3": _rm3,
    "hyde": _hyde,
    "rede-rf": _rede_rf,
    "expand": _expand,
    "rerank": _rerank,
}
