"""The LanceDB corpus store: one object holding the parts that each do one job over one database.

- ``store.registry`` (``corpora``): each corpus, its active vector space, whether its first ingest ended;
- ``store.documents`` (``<corpus>__documents``, ``<corpus>__expanded``): document rows and their BM25 indexes;
- ``store.views`` (``<corpus>__views__<space key>``): views and their vectors, one table per vector space;
- ``store.synthetic`` (``<corpus>__synthetic_queries``): generated queries and every filter decision;
- ``store.cache`` (``embedcache__<space key>__<role>``): every vector computed, per vector space and role;
- ``store.search`` (reads documents and views): dense and BM25 search;
- ``store.whitening`` (``<corpus>__whitening__<space key>``): each space's whitening fit, and whitened search;
- ``store.sparse`` (views tables with ``terms``/``weights``, e.g. PromptReps'): exact sparse search.
- ``store.drifts`` (``<corpus>__drift``): maps from a new model's space into the old (drift compensation).
- ``store.lattices`` (``<corpus>__lattice__<space key>``): LATTICE's semantic tree and its node summaries.

Each corpus gets tables of its own rather than one shared table with a ``corpus`` column: BM25 statistics
must be per corpus, and corpora may use embedding models of different dimensions. Every write is one LanceDB
commit (atomic), and every id is content-derived, so any write can be repeated after a crash and converge to
the same content. :mod:`storage.vector_space` says what a vector space is; :mod:`storage.home` versions the
layout above.

The unit of commit that re-indexing builds on: a document is its ``documents`` row together with the views
that carry the row's content hash in ``views.doc_hash``. Three rules keep that unit checkable whatever point
a writer dies at: all views of a document version go in one commit (:meth:`Views.put`); a document's views
are deleted all at once (:meth:`Views.delete`), or, as stale, only once the views of the version replacing
them are in (:meth:`Views.delete_stale`). Then a document is whole exactly when it has at least one chunk
view and every view of it carries its row's hash, which anyone can check (:meth:`Views.hashes`).
Re-indexing writes the row between those two steps so that a row never names a version whose vectors are
missing; the check does not depend on it. A later store must keep the check possible: a version tag on every
view, or a document and its views committed together.
"""

from __future__ import annotations

from collections.abc import Mapping

from storage.compensation import Drifts, drift_table
from storage.documents import Documents, documents_table, expanded_table
from storage.embedding_cache import EmbeddingCache
from storage.lance import Lance
from storage.lattice import Lattices, corpus_of_lattice_table
from storage.quantized import EXACT, Quantization
from storage.registry import Registry
from storage.search import Search
from storage.sparse import SparseSearch
from storage.synthetic import SyntheticQueries, synthetic_table
from storage.views import Views, corpus_of_views_table, views_table
from storage.whitening import Whitenings, corpus_of_whitening_table


class CorpusStore:
    """All LanceDB access for corpora; ``tasks`` never talk to LanceDB directly."""

    def __init__(
        self, uri: str, quantization: Quantization = EXACT, storage_options: Mapping[str, str] | None = None
    ) -> None:
        """Open the database at ``uri``; ``quantization``: how dense search holds tables in memory.

        ``storage_options``: an object store's endpoint, keys and retries (:mod:`storage.object_store`).
        """
        self.lance = Lance(uri, storage_options)
        self.documents = Documents(self.lance)
        self.views = Views(self.lance)
        self.registry = Registry(self.lance, self.documents, self.views)
        self.synthetic = SyntheticQueries(self.lance)
        self.cache = EmbeddingCache(self.lance)
        self.search = Search(self.lance, self.documents, self.views, quantization)
        self.whitening = Whitenings(self.lance, self.search)
        self.sparse = SparseSearch(self.lance)
        self.drifts = Drifts(self.lance)
        self.lattices = Lattices(self.lance)

    @property
    def uri(self) -> str:
        """The LanceDB URI the store reads and writes."""
        return self.lance.uri

    def versions(self, corpus: str) -> dict[str, int]:
        """Current LanceDB version of the documents and (active space's) views tables; 0 where missing."""
        info = self.registry.get(corpus)
        views = self.lance.version(views_table(corpus, info.space)) if info else 0
        return {"documents": self.lance.version(documents_table(corpus)), "views": views}

    def counts(self, corpus: str) -> dict[str, int]:
        """Rows in the documents and (active space's) views tables of ``corpus``."""
        info = self.registry.get(corpus)
        views = self.lance.count(views_table(corpus, info.space)) if info else 0
        return {"documents": self.lance.count(documents_table(corpus)), "views": views}

    def tables_of(self, corpus: str) -> list[str]:
        """Every table that holds ``corpus``'s data, in the order :meth:`drop` deletes them."""
        names = set(self.lance.names())
        views = sorted(t for t in names if corpus_of_views_table(t) == corpus)
        whitening = sorted(t for t in names if corpus_of_whitening_table(t) == corpus)
        lattices = sorted(t for t in names if corpus_of_lattice_table(t) == corpus)
        ordered = [
            synthetic_table(corpus),
            expanded_table(corpus),
            drift_table(corpus),
            *whitening,
            *lattices,
            *views,
            documents_table(corpus),
        ]
        return [t for t in ordered if t in names]

    def drop(self, corpus: str) -> list[str]:
        """Delete ``corpus``: its registry row, then its tables; returns the tables dropped.

        The registry row goes first, so the corpus leaves every listing and search at once. The documents
        table goes last: a delete killed midway leaves tables of a corpus that is not registered, which
        :meth:`Registry.incomplete` reports ("its tables exist but it was never registered") for as long
        as the documents table or a views table is left, and running the delete again finishes it (every
        step is a no-op once done). Embedding caches are shared by corpora and stay.
        """
        self.registry.unregister(corpus)
        dropped = [table for table in self.tables_of(corpus) if self.lance.drop(table)]
        for table in dropped:  # a table re-created under the same name restarts at version 1
            self.search.forget(table)
            self.whitening.forget(table)
            self.sparse.forget(table)
        return dropped
