"""Retrieval methods as named, parameterised components: ``dense``, ``bm25``, ``hybrid(fusion=rrf, ...)``.

The query-time methods (``prf``, ``rm3``, ``hyde``, ``rede-rf``, ``expand``, ``rerank``) live in
:mod:`tasks.methods.query_methods` and register here like the others.

Chunk hits aggregate to documents by their best chunk (max), and every ranking breaks ties on
``(-score, doc_id)`` so results are deterministic across runs and platforms (as pyserini does).
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from storage.corpus_store import CorpusStore
from tasks.ingest.embed import Embedder
from tasks.llm.judge import Completer, Judge
from tasks.methods.query_methods import (
    QUERY_METHODS,
    LLMUnavailableError,
    Meter,
    QueryTrace,
    run_query_method,
)

log = logging.getLogger(__name__)

Ranking = list[tuple[str, float]]


class DenseParams(BaseModel):
    """Bi-encoder cosine similarity over chunk vectors; a document scores as its best chunk."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Bm25Params(BaseModel):
    """BM25 over title + text with LanceDB's native full-text index (English stemming, stop words)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class HybridParams(BaseModel):
    """Fusion of dense and bm25 rankings, each cut at ``depth``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fusion: Literal["rrf", "score"] = Field(
        default="rrf", description="reciprocal rank or min-max score fusion"
    )
    rrf_k: int = Field(default=60, ge=1, description="RRF constant: score = sum w / (rrf_k + rank)")
    dense_weight: float = Field(default=1.0, ge=0, description="weight of the dense ranking")
    bm25_weight: float = Field(default=1.0, ge=0, description="weight of the bm25 ranking")
    depth: int = Field(default=1000, ge=1, description="hits taken from each ranking before fusion")

    @model_validator(mode="after")
    def _some_weight(self) -> HybridParams:
        if self.dense_weight == 0 and self.bm25_weight == 0:
            raise ValueError("dense_weight and bm25_weight are both 0: every document would score 0")
        return self


class MultiviewParams(BaseModel):
    """Dense search over every view of a document: chunks, title and kept synthetic queries.

    ``max``: a document scores as its best view of any kind. ``weighted``: (1 - query_weight) x its best
    passage (chunk or title) score + query_weight x its best synthetic-query score.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    agg: Literal["max", "weighted"] = Field(default="max", description="how view scores combine per document")
    query_weight: float = Field(
        default=0.3, ge=0, le=1, description="weight of the best query view (weighted)"
    )
    depth: int = Field(default=200, ge=1, description="documents taken from each view kind before combining")


class D2qParams(BaseModel):
    """BM25 over documents expanded with their kept synthetic queries (doc2query / doc2query--)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


METHODS: dict[str, type[BaseModel]] = {
    "dense": DenseParams,
    "bm25": Bm25Params,
    "hybrid": HybridParams,
    "multiview": MultiviewParams,
    "d2q": D2qParams,
    **QUERY_METHODS,
}
PASSAGE_KINDS, QUERY_KINDS = ("chunk", "title"), ("query",)
_CALL = re.compile(r"^\s*([a-z][a-z0-9_-]*)\s*(?:\((.*)\))?\s*$", re.S)


@dataclass(frozen=True)
class Method:
    """A method name with validated parameters; ``str()`` gives the canonical spelling stored in runs."""

    name: str
    params: BaseModel

    def __str__(self) -> str:
        changed = self.params.model_dump(exclude_defaults=True)
        args = ", ".join(f"{k}={v}" for k, v in sorted(changed.items()))
        return f"{self.name}({args})" if args else self.name


def _literal(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip("'\"")


def parse_method(spec: str) -> Method:
    """Parse ``name`` or ``name(key=value, ...)``; an unknown name or parameter is a clear error."""
    opened, closed = spec.count("("), spec.count(")")
    if opened != closed or spec.rstrip().endswith(")") != bool(opened):
        raise ValueError(
            f"method {spec!r}: parameters go in parentheses that end the method "
            f"(found {opened} '(' and {closed} ')'); "
            "write name(key=value, ...), e.g. hybrid(fusion=score, dense_weight=0.7)"
        )
    match = _CALL.match(spec)
    if not match or match.group(1) not in METHODS:
        raise ValueError(f"unknown method {spec!r}; available: {', '.join(METHODS)} (see `zsr methods`)")
    name, arglist = match.group(1), match.group(2) or ""
    args = {}
    for part in filter(None, (p.strip() for p in arglist.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            raise ValueError(f"method {spec!r}: parameter {part!r} must be written key=value")
        args[key.strip()] = _literal(value.strip())
    try:
        params = METHODS[name](**args)
    except ValidationError as err:
        problems = "; ".join(
            ": ".join(filter(None, (".".join(map(str, e["loc"])), e["msg"].removeprefix("Value error, "))))
            for e in err.errors()
        )
        raise ValueError(f"method {spec!r}: {problems}") from None
    first = getattr(params, "first", None)
    if first is not None and first not in METHODS:
        raise ValueError(
            f"method {spec!r}: first={first!r} must name a method without parameters: {', '.join(METHODS)}"
        )
    return Method(name, params)


def split_methods(text: str) -> list[str]:
    """Split ``"dense,hybrid(fusion=score, rrf_k=10)"`` on the commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p.strip() for p in [*parts, current] if p.strip()]


def rank(scores: Mapping[str, float], k: int | None = None) -> Ranking:
    """Sort by ``(-score, doc_id)``, the deterministic tie-break, and keep the top ``k``."""
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return ordered if k is None else ordered[:k]


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


def fts_query(text: str) -> str:
    """Query text for the full-text index: punctuation would be read as query syntax, so it is dropped."""
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


class Searcher:
    """Runs methods against one corpus; the embedding model is loaded on the first dense query.

    The LLM (``llm``, or ``llm_factory`` called on first use) and the ``judge`` are needed only by the query
    methods that use them; without a judge, ``rede-rf`` and ``rerank`` judge with ReDE-RF's single-token LLM
    judge. Build an LLM judge over ``searcher.llm`` so its calls are counted per query. After each search,
    ``last_trace`` holds each query's :class:`~tasks.methods.query_methods.QueryTrace` (cost, fallback,
    vector).
    """

    def __init__(
        self,
        store: CorpusStore,
        corpus: str,
        get_embedder: Callable[[], Embedder],
        *,
        llm: Completer | None = None,
        judge: Judge | None = None,
        llm_factory: Callable[[], Completer] | None = None,
    ) -> None:
        self.store = store
        self.corpus = corpus
        self.info = store.corpus(corpus)
        self.embedder_factory = get_embedder
        self.llm_factory = llm_factory if llm is None else lambda: llm
        self.judge = judge
        self.last_trace: dict[str, QueryTrace] = defaultdict(QueryTrace)
        self._meter: Meter | None = None
        counts = store.counts(corpus)
        self._views_per_doc = counts["views"] / max(counts["documents"], 1)
        self._n_views = counts["views"]

    @property
    def llm(self) -> Meter:
        """The LLM, built on first use and metered per query; a clear error when none is configured."""
        if self._meter is None:
            if self.llm_factory is None:
                raise LLMUnavailableError(
                    "this method needs an LLM and the searcher has none: pass llm= or llm_factory= to "
                    "Searcher (tasks.workspace builds one from ZSR_LLM_MODEL), or use a method or judge "
                    "without one"
                )
            self._meter = Meter(self.llm_factory())
        return self._meter

    def warm_up(self) -> None:
        """Load the embedding model now rather than inside the first timed query."""
        self.embedder_factory()

    def search(self, query: str, method: str | Method = "dense", k: int = 10) -> Ranking:
        """Top ``k`` documents for one query."""
        return self.search_batch({"q": query}, method, k)["q"]

    def search_batch(
        self, queries: Mapping[str, str], method: str | Method = "dense", k: int = 10
    ) -> dict[str, Ranking]:
        """Top ``k`` documents for each query, by query id; dense queries are encoded in one batch.

        Each query's cost and fallback land in ``last_trace`` (reset by every call).
        """
        self.last_trace = defaultdict(QueryTrace)
        if self._meter:
            self._meter.take()  # calls made outside a search belong to no query
        rankings = self.run(queries, method, k)
        costs = self._meter.take() if self._meter else {}
        for qid in queries:
            trace = self.last_trace[qid]
            if qid in costs:
                trace.add_cost(costs[qid])
                trace.llm = self.llm.config.model
        return rankings

    def run(self, queries: Mapping[str, str], method: str | Method, k: int) -> dict[str, Ranking]:
        """As :meth:`search_batch`, but adds to the current ``last_trace`` (for methods that run another)."""
        method = parse_method(method) if isinstance(method, str) else method
        ids = list(queries)
        texts = [queries[i] for i in ids]
        if method.name in QUERY_METHODS:
            return run_query_method(self, method.name, method.params, queries, k)
        if method.name == "dense":
            rankings = self._dense(texts, k)
        elif method.name == "bm25":
            rankings = self._bm25(texts, k)
        elif method.name == "d2q":
            rankings = self._bm25(texts, k, expanded=True)
        elif method.name == "multiview":
            params = method.params
            assert isinstance(params, MultiviewParams)
            passages = self._dense(texts, max(k, params.depth), PASSAGE_KINDS)
            asked = self._dense(texts, max(k, params.depth), QUERY_KINDS)
            rankings = [rank(_combine(p, q, params), k) for p, q in zip(passages, asked, strict=True)]
        else:
            params = method.params
            assert isinstance(params, HybridParams)
            dense, lexical = self._dense(texts, params.depth), self._bm25(texts, params.depth)
            weights = (params.dense_weight, params.bm25_weight)
            rankings = [
                rank(
                    rrf(pair, weights, params.rrf_k)
                    if params.fusion == "rrf"
                    else score_fusion(pair, weights),
                    k,
                )
                for pair in zip(dense, lexical, strict=True)
            ]
        return dict(zip(ids, rankings, strict=True))

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        """Texts embedded with the corpus's model, as queries or as passages."""
        return self.embedder_factory().encode(texts, queries=queries)

    def _dense(self, texts: list[str], k: int, kinds: tuple[str, ...] = ("chunk",)) -> list[Ranking]:
        return self.search_vectors(self.encode(texts, queries=True), k, kinds) if texts else []

    def search_vectors(
        self, vectors: np.ndarray, k: int, kinds: tuple[str, ...] = ("chunk",)
    ) -> list[Ranking]:
        """Top ``k`` documents for each query vector, a document scoring as its best view of ``kinds``."""
        # Fetch enough chunks that k distinct documents are among them; widen for queries that fall short.
        limit = min(self._n_views, math.ceil(k * self._views_per_doc * 1.5) + 10)
        out: list[Ranking] = [[] for _ in vectors]
        pending = list(range(len(vectors)))
        while pending:
            hits = self.store.dense_search(self.corpus, self.info.dim, vectors[pending], limit, kinds)
            retry = []
            for q, chunk_hits in zip(pending, hits, strict=True):
                best: dict[str, float] = {}
                for doc_id, score in chunk_hits:  # best first, so the first hit of a document is its max
                    best.setdefault(doc_id, score)
                if len(best) < k and limit < self._n_views:
                    retry.append(q)
                else:
                    out[q] = rank(best, k)
            pending, limit = retry, min(self._n_views, limit * 2)
        return out

    def document_vectors(self, doc_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Each document's stored vector: the normalised mean of its chunk vectors (one chunk: its vector)."""
        return self.store.document_vectors(self.corpus, self.info.dim, doc_ids)

    def document_texts(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """Title and text of each document, as a judge reads them."""
        rows = (
            self.store.fetch_documents(self.corpus, doc_ids, ["doc_id", "title", "text"]) if doc_ids else []
        )
        return {r["doc_id"]: "\n".join(filter(None, (r["title"], r["text"]))) for r in rows}

    def search_terms(self, weighted: Sequence[Mapping[str, float]], k: int) -> list[Ranking]:
        """bm25 over weighted words, one ``{word: weight}`` a query (RM3's expanded queries)."""
        return [
            rank(dict(self.store.fts_search(self.corpus, terms, k)), k) if terms else [] for terms in weighted
        ]

    def _bm25(self, texts: list[str], k: int, expanded: bool = False) -> list[Ranking]:
        search = self.store.expansion_search if expanded else self.store.fts_search
        out = []
        for text in texts:
            query = fts_query(text)
            out.append(rank(dict(search(self.corpus, query, k)), k) if query else [])
        return out


def _combine(passages: Ranking, queries: Ranking, params: MultiviewParams) -> dict[str, float]:
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
