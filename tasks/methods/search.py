"""The searcher: runs registered methods against one corpus, and keeps each query's trace.

Which methods exist, their parameters and their runners live in :mod:`tasks.methods.registry`; the searcher
reaches each method through its registry entry and gives runners what they need from the corpus store, the
embedding model, the LLM and the judge (the :class:`~tasks.methods.base.Retriever` they see).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from storage.corpus_store import CorpusStore
from storage.lattice import Tree
from tasks.ingest.embed import Embedder
from tasks.llm.judge import Completer, Judge
from tasks.methods.base import LLMUnavailableError, Meter, QueryTrace, Ranking, rank
from tasks.methods.registry import REGISTRY, Method, parse_method

log = logging.getLogger(__name__)
# The bm25 searches of a batch run side by side: LanceDB has no batch full-text call, and a search spends
# most of its time in Lance's Rust code, outside the GIL (on 2 busy cores, 2 threads answered Cranfield's
# queries 1.7x as fast as one, 4 threads 1.9x).
BM25_THREADS = min(4, os.cpu_count() or 1)
T = TypeVar("T")


def fts_query(text: str) -> str:
    """Query text for the full-text index: punctuation would be read as query syntax, so it is dropped."""
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def side_by_side(search: Callable[[T], Ranking], queries: Sequence[T]) -> list[Ranking]:
    """``search`` of each query, in order; in :data:`BM25_THREADS` threads when there are several."""
    if len(queries) < 2:
        return [search(q) for q in queries]
    with ThreadPoolExecutor(min(BM25_THREADS, len(queries)), thread_name_prefix="zsr-bm25") as pool:
        return list(pool.map(search, queries))


class Searcher:
    """Runs methods against one corpus; the embedding model is loaded on the first dense query.

    The LLM (``llm``, or ``llm_factory`` called on first use) and the ``judge`` are needed only by the query
    methods that use them; without a judge, ``rede-rf`` and ``rerank`` judge with ReDE-RF's single-token LLM
    judge. Build an LLM judge over ``searcher.llm`` so its calls are counted per query. After each search,
    ``last_trace`` holds each query's :class:`~tasks.methods.base.QueryTrace` (cost, fallback, vector).

    ``where`` filters every search on document metadata (``year >= 1990 AND source = 'nasa'``, Lance's
    filter syntax over the corpus's metadata keys). It is checked here, before any search, and applied to
    each dense and bm25 search before its top k (see :mod:`storage.search`), so every method built on
    them (hybrid, multiview, HyDE, RM3, ...) ranks only matching documents.
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
        where: str | None = None,
    ) -> None:
        """Open the corpus, and check ``where`` against its metadata.

        Raises:
            FilterError: ``where`` names an unknown key, has a syntax error or a value of the wrong type.
        """
        self.store = store
        self.corpus = corpus
        self.info = store.registry.corpus(corpus)
        self.embedder_factory = get_embedder
        self.llm_factory = llm_factory if llm is None else lambda: llm
        self.judge = judge
        self.last_trace: dict[str, QueryTrace] = defaultdict(QueryTrace)
        self._meter: Meter | None = None
        self._query_vectors: dict[str, np.ndarray] = {}  # this search's, by text (see encode)
        counts = store.counts(corpus)
        self._views_per_doc = counts["views"] / max(counts["documents"], 1)
        self._n_views = counts["views"]
        self.where = store.search.compile_where(corpus, self.info.space, where) if where else None

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
        self._query_vectors = {}
        if self._meter:
            self._meter.take()  # calls made outside a search belong to no query
        rankings = self.retrieve(queries, method, k)
        costs = self._meter.take() if self._meter else {}
        for qid in queries:
            trace = self.last_trace[qid]
            if qid in costs:
                trace.add_cost(costs[qid])
                trace.llm = self.llm.config.model
        return rankings

    def retrieve(self, queries: Mapping[str, str], method: str | Method, k: int) -> dict[str, Ranking]:
        """As :meth:`search_batch`, but adds to the current ``last_trace`` (for methods that run another)."""
        method = parse_method(method) if isinstance(method, str) else method
        return REGISTRY[method.name].run(self, method.params, queries, k)

    def trace(self, query_id: str) -> QueryTrace:
        """The trace of ``query_id`` in the current search, created on first use."""
        return self.last_trace[query_id]

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        """Texts embedded with the corpus's model, as queries or as passages.

        A query text is encoded once per search: a method and its first stage (prf over dense) share it.
        """
        if not queries or not texts:
            return self.embedder_factory().encode(texts, queries=queries)
        missing = [t for t in dict.fromkeys(texts) if t not in self._query_vectors]
        if missing:
            vectors = self.embedder_factory().encode(missing, queries=True)
            self._query_vectors.update(zip(missing, vectors, strict=True))
        return np.vstack([self._query_vectors[t] for t in texts])

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int,
        kinds: tuple[str, ...] = ("chunk",),
        *,
        whiten: bool = False,
        dims: int | None = None,
    ) -> list[Ranking]:
        """Top ``k`` documents for each query vector, a document scoring as its best view of ``kinds``.

        ``whiten``: by the cosine in the corpus's whitened space, ``dims`` directions kept (``None``: all;
        see :mod:`storage.whitening`).
        """
        # Fetch enough chunks that k distinct documents are among them; widen for queries that fall short.
        limit = min(self._n_views, math.ceil(k * self._views_per_doc * 1.5) + 10)
        out: list[Ranking] = [[] for _ in vectors]
        pending = list(range(len(vectors)))
        while pending:
            hits = (
                self.store.whitening.dense(
                    self.corpus, self.info.space, vectors[pending], limit, kinds, self.where, dims
                )
                if whiten
                else self.store.search.dense(
                    self.corpus, self.info.space, vectors[pending], limit, kinds, self.where
                )
            )
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
        return self.store.search.document_vectors(self.corpus, self.info.space, doc_ids)

    def document_texts(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """Title and text of each document, as a judge reads them."""
        rows = (
            self.store.documents.fetch(self.corpus, doc_ids, ["doc_id", "title", "text"]) if doc_ids else []
        )
        return {r["doc_id"]: "\n".join(filter(None, (r["title"], r["text"]))) for r in rows}

    def lattice(self) -> Tree:
        """The corpus's LATTICE tree (built by ``Workspace.build_lattice``).

        Raises:
            LookupError: none was built for the corpus's vector space; the message gives the command.
        """
        tree = self.store.lattices.get(self.corpus, self.info.space)
        if tree is None:
            raise LookupError(
                f"corpus {self.corpus!r} has no LATTICE tree: build it with `zsr lattice {self.corpus}` "
                "(Workspace.build_lattice) before searching with lattice"
            )
        return tree

    def chunks(self, doc_ids: Sequence[str]) -> dict[str, list[tuple[str, np.ndarray]]]:
        """Each document's chunks, ``(text, vector)`` in document order."""
        return self.store.views.chunks(self.corpus, self.info.space, doc_ids)

    def search_terms(self, weighted: Sequence[Mapping[str, float]], k: int) -> list[Ranking]:
        """bm25 over weighted words, one ``{word: weight}`` a query (RM3's expanded queries)."""

        def search(terms: Mapping[str, float]) -> Ranking:
            return rank(dict(self.store.search.fts(self.corpus, terms, k, self.where)), k) if terms else []

        return side_by_side(search, weighted)

    def search_text(self, texts: list[str], k: int, *, expanded: bool = False) -> list[Ranking]:
        """bm25 over each text; ``expanded``: over documents expanded with their synthetic queries (d2q)."""
        fts = self.store.search.fts_expanded if expanded else self.store.search.fts

        def search(text: str) -> Ranking:
            query = fts_query(text)
            return rank(dict(fts(self.corpus, query, k, self.where)), k) if query else []

        return side_by_side(search, texts)
