"""Dense and full-text search over a corpus's tables: the only queries that rank.

Dense search reads the views table of one vector space; BM25 reads the documents table (or the expanded one,
for document expansion). Scores are returned as the indexes give them; ranking by document and breaking ties
is the caller's job (:mod:`tasks.methods.search`).

A metadata filter (:meth:`Search.compile_where`) is a prefilter on the table searched: every row ranked
carries its document's metadata columns, so Lance ranks only matching rows and ``limit`` of them come back
whenever that many match.

A views table searched exactly is held in memory (:mod:`storage.matrix`), and so is what is derived from it:
the rows a filter keeps (one Lance scan per table version and filter, with the same SQL as Lance's
prefilter) and each document's stored vector. Both are keyed by the matrix, which is reloaded after any
commit, so neither can be stale.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import lance
import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.query import BooleanQuery, LanceQueryBuilder, LanceVectorQueryBuilder, MatchQuery, Occur

from storage.ann import search_with
from storage.documents import Documents, documents_table, expanded_table
from storage.lance import Lance, is_latest, sql_list
from storage.matrix import Matrices, Rows, ViewMatrix
from storage.metadata import FilterError, check_where, column, rewrite_where
from storage.quantized import EXACT, Quantization
from storage.vector_space import VectorSpace
from storage.views import Views, views_table

Hits = list[tuple[str, float]]
# Filters whose row masks are kept: a process searches with a few filters at a time (zsr serve, an eval
# with --where); each mask is one byte a view.
HELD_FILTERS = 16


class Search:
    """Nearest views in a vector space, and BM25 hits over documents.

    ``quantization``: how a table searched from memory is held (:mod:`storage.quantized`).
    """

    def __init__(
        self, lance: Lance, documents: Documents, views: Views, quantization: Quantization = EXACT
    ) -> None:
        self.lance = lance
        self.documents = documents
        self.views = views
        self.matrices = Matrices(lance)
        self.quantization = quantization
        # What is derived from a held matrix lives as long as it: a reload (any commit) drops it.
        self._derived: weakref.WeakKeyDictionary[Rows, _Derived] = weakref.WeakKeyDictionary()
        self._tables = _OpenTables()
        self._lock = threading.Lock()

    def compile_where(self, corpus: str, space: VectorSpace, where: str) -> str:
        """The user's filter over metadata keys, checked and rewritten over the tables' columns.

        Checked before any search: against the documents table (types) and the views table of ``space``.

        Raises:
            FilterError: an unknown key, a syntax error or a value of the wrong type; the message names it
                and lists the filterable keys.
        """
        fields = self.documents.metadata_fields(corpus)
        if not fields:
            raise FilterError(
                f"corpus {corpus!r} has no filterable metadata for --where {where!r}: none of its documents "
                "has a scalar metadata field (ingest JSONL/CSV/Parquet records with extra fields, e.g. "
                '{"_id": ..., "text": ..., "year": 1990})'
            )
        compiled = rewrite_where(where, fields)
        check_where(self.documents.table(corpus), where, compiled, fields)
        if self.views.exists(corpus, space):
            check_where(self.views.table(corpus, space), where, compiled, fields)
        return compiled

    def dense(
        self,
        corpus: str,
        space: VectorSpace,
        vectors: np.ndarray,
        limit: int,
        kinds: Sequence[str] = ("chunk",),
        where: str | None = None,
    ) -> list[Hits]:
        """Nearest views of ``kinds`` for each query vector: per query, ``(doc_id, cosine)`` best first.

        ``where``: a filter from :meth:`compile_where`, applied before ranking. A table without a vector
        index is searched exactly from memory (:mod:`storage.matrix`), filtered or not.
        """
        name = views_table(corpus, space)
        matrix = self.matrices.get(name, self.quantization)
        if matrix is not None:
            mask = matrix.kind_mask(kinds)
            if where:
                mask = mask & self.filter_mask(name, matrix, where)
            return matrix.top(vectors, limit, mask)
        table = self.views.table(corpus, space)
        query = table.search(list(vectors))
        assert isinstance(query, LanceVectorQueryBuilder)
        query = search_with(query, self.views.search_knobs(table))  # no knobs without an ANN index
        if where:  # a narrow filter may leave the usual ANN partitions short of limit rows: probe on
            query = query.maximum_nprobes(0)
        result = (
            query.distance_type("cosine")
            .where(f"kind IN ({sql_list(kinds)})" + (f" AND ({where})" if where else ""), prefilter=True)
            .select(["doc_id", "_distance"])  # named, so Lance need not add it (and warn)
            .limit(limit)
            .to_arrow()
        )
        hits: list[Hits] = [[] for _ in range(len(vectors))]
        qidx = (
            result["query_index"].to_pylist()
            if "query_index" in result.column_names
            else [0] * result.num_rows
        )
        for q, doc_id, dist in zip(
            qidx, result["doc_id"].to_pylist(), result["_distance"].to_pylist(), strict=True
        ):
            hits[q].append((doc_id, 1.0 - dist))
        for ranked in hits:
            ranked.sort(key=lambda h: -h[1])
        return hits

    def fts(self, corpus: str, text: str | Mapping[str, float], limit: int, where: str | None = None) -> Hits:
        """BM25 hits as ``(doc_id, score)``, best first, for a query text or for weighted words.

        Weighted words score as the sum of weight x BM25 of each (a boolean OR of boosted matches), each
        word analysed like the index (stemmed, stop words dropped). ``where``: as in :meth:`dense`.
        """
        query: str | BooleanQuery = (
            text
            if isinstance(text, str)
            # mypy cannot see the defaults of lancedb's pydantic dataclasses
            else BooleanQuery([(Occur.SHOULD, MatchQuery(w, "lexical", boost=b)) for w, b in text.items()])  # type: ignore[call-arg]
        )
        found = self._documents_table(corpus).search(query, query_type="fts")
        if where:
            found = found.where(where, prefilter=True)
        return _hits(found, limit)

    def fts_expanded(self, corpus: str, text: str, limit: int, where: str | None = None) -> Hits:
        """BM25 hits over the expanded index (documents + their kept synthetic queries).

        Raises:
            LookupError: the corpus has no expanded index yet.
        """
        name = expanded_table(corpus)

        def open_expanded() -> lancedb.table.Table:
            if not self.lance.exists(name):
                raise LookupError(
                    f"corpus {corpus!r} has no expanded index yet; run `zsr synthesize --corpus {corpus}`"
                )
            return self.lance.db.open_table(name)

        table = self._tables.get(name, open_expanded)
        found = table.search(text, query_type="fts")
        if where:
            named = [c for c in self._documents_table(corpus).schema.names if f"`{c}`" in where]
            if any(c.startswith(column("")) and c not in table.schema.names for c in named):
                raise FilterError(
                    f"the expanded index of {corpus!r} predates some of its metadata keys; run "
                    f"`zsr synthesize --corpus {corpus}` (or refresh its views) before filtering d2q"
                )
            found = found.where(where, prefilter=True)
        return _hits(found, limit)

    def forget(self, name: str) -> None:
        """Drop all held of table ``name`` (the table was dropped: a new table of that name restarts at 1)."""
        self.matrices.forget(name)
        self._tables.forget(name)

    def _documents_table(self, corpus: str) -> lancedb.table.Table:
        return self._tables.get(documents_table(corpus), lambda: self.documents.table(corpus))

    def document_vectors(
        self, corpus: str, space: VectorSpace, doc_ids: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Each document's stored vector: the normalised mean of its chunk vectors (those found).

        From the held matrix where the table is searched exactly in float32 (every document's, computed once
        per table version); else one read of the views table (:meth:`Views.document_vectors`): a quantized
        search holds no float vectors in memory, and these are not made to hold them.
        """
        exact = self.quantization == EXACT
        matrix = self.matrices.get(views_table(corpus, space)) if exact else None
        if not isinstance(matrix, ViewMatrix):
            return self.views.document_vectors(corpus, space, doc_ids)
        derived = self._derived_of(matrix)
        with self._lock:
            if derived.documents is None:
                derived.documents = _DocumentVectors.of(matrix)
            documents = derived.documents
        return {d: documents.vectors[documents.rows[d]] for d in doc_ids if d in documents.rows}

    def _derived_of(self, matrix: Rows) -> _Derived:
        with self._lock:
            return self._derived.setdefault(matrix, _Derived())

    def filter_mask(self, name: str, matrix: Rows, where: str) -> np.ndarray:
        """The rows of ``matrix`` (of table ``name``) that ``where`` keeps, held with the matrix.

        Lance's own filter over the table at the matrix's version, so rows and mask are of one commit.
        """
        filters = self._derived_of(matrix).filters
        with self._lock:
            if where in filters:
                filters.move_to_end(where)
                return filters[where]
        # The table at the matrix's version, so rows and mask are read from the same commit.
        dataset = self.lance.db.open_table(name).to_lance().checkout_version(matrix.version)
        kept = dataset.to_table(columns=["view_id"], filter=where)["view_id"].combine_chunks()
        mask = pc.is_in(pa.array(matrix.view_ids, pa.string()), value_set=kept).to_numpy(zero_copy_only=False)
        with self._lock:
            filters[where] = mask
            while len(filters) > HELD_FILTERS:
                filters.popitem(last=False)
        return mask


def _hits(found: LanceQueryBuilder, limit: int) -> Hits:
    """A full-text query's top ``limit`` as ``(doc_id, score)``, best first."""
    rows = found.select(["doc_id", "_score"]).limit(limit).to_arrow()
    return list(zip(rows["doc_id"].to_pylist(), rows["_score"].to_pylist(), strict=True))


class _OpenTables:
    """Tables held open between searches, each reopened once a commit (by any process) has moved it on.

    Opening a table lists the database and reads its manifest (~0.3 ms, a tenth of a bm25 query); checking
    the held version against the latest reads the version hint only (microseconds).
    """

    def __init__(self) -> None:
        self._held: dict[str, tuple[lancedb.table.Table, lance.LanceDataset]] = {}
        self._lock = threading.Lock()

    def get(self, name: str, open_table: Callable[[], lancedb.table.Table]) -> lancedb.table.Table:
        """Table ``name`` at its latest version; ``open_table`` opens it when none is held or it moved on."""
        with self._lock:
            held = self._held.get(name)
        if held is not None and is_latest(held[1]):
            return held[0]
        table = open_table()
        with self._lock:
            self._held[name] = (table, table.to_lance())
        return table

    def forget(self, name: str) -> None:
        """Drop table ``name``'s handle."""
        with self._lock:
            self._held.pop(name, None)


@dataclass(frozen=True)
class _DocumentVectors:
    """Every document's stored vector in a matrix: ``vectors[rows[doc_id]]``."""

    rows: dict[str, int]
    vectors: np.ndarray

    @classmethod
    def of(cls, matrix: ViewMatrix) -> _DocumentVectors:
        """The normalised mean of each document's chunk rows (rows of norm 1, as stored vectors are)."""
        chunks = matrix.kind_mask(["chunk"])
        doc_ids, inverse = np.unique(matrix.doc_ids[chunks], return_inverse=True)
        sums = np.zeros((len(doc_ids), matrix.vectors.shape[1]), np.float32)
        np.add.at(sums, inverse, matrix.vectors[chunks])
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return cls({d: i for i, d in enumerate(doc_ids.tolist())}, sums / np.where(norms > 0, norms, 1.0))


@dataclass
class _Derived:
    """What a held matrix serves besides its rows: filter masks (least recently used first out), documents."""

    filters: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict)
    documents: _DocumentVectors | None = None
