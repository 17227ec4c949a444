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
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from storage.corpus_store import CorpusStore
from storage.lattice import Tree
from storage.matrix import Hits
from storage.vector_space import VectorSpace
from tasks.ingest.embed import Embedder
from tasks.llm.judge import Completer, Judge, JudgementMemo
from tasks.methods.base import LLMUnavailableError, Meter, QueryTrace, Ranking, rank
from tasks.methods.registry import REGISTRY, Method, parse_method

if TYPE_CHECKING:  # the module loads torch, which only promptreps searches need
    from tasks.ingest.promptreps import PromptReps

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


def best_documents(
    hits: Callable[[np.ndarray, int], list[Hits]], queries: int, k: int, views: int, views_per_doc: float
) -> list[Ranking]:
    """Top ``k`` documents per query, a document scoring as its best view.

    ``hits(rows, limit)`` gives the best ``limit`` views of the queries at positions ``rows``, best first.
    Enough views are fetched that k distinct documents are among them; queries that fall short are asked
    again for twice as many, up to every view.
    """
    limit = min(views, math.ceil(k * views_per_doc * 1.5) + 10)
    out: list[Ranking] = [[] for _ in range(queries)]
    pending = np.arange(queries)
    while len(pending):
        retry = []
        for q, view_hits in zip(pending, hits(pending, limit), strict=True):
            best: dict[str, float] = {}
            for doc_id, score in view_hits:  # best first, so the first hit of a document is its max
                best.setdefault(doc_id, score)
            if len(best) < k and limit < views:
                retry.append(q)
            else:
                out[q] = rank(best, k)
        pending, limit = np.asarray(retry, dtype=np.int64), min(views, limit * 2)
    return out


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

    ``embedder_for`` loads the embedder of another vector space: ``dense(compensate=true)`` encodes with the
    model of the corpus's pending upgrade (see :meth:`compensated`).
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
        promptreps_factory: Callable[[], PromptReps] | None = None,
        embedder_for: Callable[[VectorSpace], Embedder] | None = None,
    ) -> None:
        """Open the corpus, and check ``where`` against its metadata.

        ``promptreps_factory`` builds the LM ``promptreps`` searches with (the one its index was built with).

        Raises:
            FilterError: ``where`` names an unknown key, has a syntax error or a value of the wrong type.
        """
        self.store = store
        self.corpus = corpus
        self.info = store.registry.corpus(corpus)
        self.embedder_factory = get_embedder
        self.embedder_for = embedder_for
        self.llm_factory = llm_factory if llm is None else lambda: llm
        self.judge = judge
        self.promptreps_factory = promptreps_factory
        self.last_trace: dict[str, QueryTrace] = defaultdict(QueryTrace)
        self.judgements = JudgementMemo()  # this search's (see search_batch)
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

        Each query's cost and fallback land in ``last_trace`` (reset by every call). Judgements are kept
        for the search (the methods of a pipeline judge a pair once) and dropped after it, so a later
        search with another judge or test set never sees them.
        """
        self.last_trace = defaultdict(QueryTrace)
        self.judgements = JudgementMemo()
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

    def compensated(self, texts: list[str]) -> np.ndarray:
        """Query texts encoded by the pending upgrade's new model and mapped into the corpus's active space.

        Raises:
            LookupError: the corpus has no upgrade in progress (no drift map into its space).
            ValueError: the searcher was built without ``embedder_for``.
        """
        drift = self.store.drifts.pending(self.corpus, self.info.space)
        if self.embedder_for is None:
            raise ValueError("compensate=true needs the new model: build the Searcher with embedder_for=")
        return drift.apply(self.embedder_for(drift.new_space).encode(texts, queries=True))

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

        def hits(rows: np.ndarray, limit: int) -> list[Hits]:
            if whiten:
                return self.store.whitening.dense(
                    self.corpus, self.info.space, vectors[rows], limit, kinds, self.where, dims
                )
            return self.store.search.dense(
                self.corpus, self.info.space, vectors[rows], limit, kinds, self.where
            )

        return best_documents(hits, len(vectors), k, self._n_views, self._views_per_doc)

    def search_promptreps(
        self, texts: list[str], k: int, *, dense: bool, sparse: bool
    ) -> tuple[list[Ranking], list[Ranking]]:
        """Top ``k`` documents of each text by its PromptReps (dense, sparse), a document as its best chunk.

        Queries are represented afresh, as dense search encodes them: searching writes nothing.

        Raises:
            LookupError: the corpus has no PromptReps index for the configured LM; the message says how to
                build it.
            ValueError: a ``where`` filter: PromptReps views carry no metadata columns.
        """
        if self.promptreps_factory is None:
            raise LookupError("this searcher has no PromptReps LM: open it through Workspace.searcher")
        if self.where:
            raise ValueError("promptreps does not filter on metadata (--where): search without --where")
        encoder = self.promptreps_factory()
        space, store = encoder.space, self.store
        if not store.sparse.exists(self.corpus, space):
            raise LookupError(
                f"corpus {self.corpus!r} has no PromptReps index for {space.model!r} (space {space.key}): "
                f"build it with `zsr promptreps index {self.corpus}`"
            )
        views = store.sparse.count(self.corpus, space)
        reps = encoder.represent(texts, queries=True)
        per_doc = views / max(store.counts(self.corpus)["documents"], 1)

        def dense_hits(rows: np.ndarray, limit: int) -> list[Hits]:
            return store.search.dense(self.corpus, space, reps.dense[rows], limit)

        def sparse_hits(rows: np.ndarray, limit: int) -> list[Hits]:
            return store.sparse.top(self.corpus, space, [reps.sparse[r] for r in rows], limit)

        return (
            best_documents(dense_hits, len(texts), k, views, per_doc) if dense else [],
            best_documents(sparse_hits, len(texts), k, views, per_doc) if sparse else [],
        )

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
