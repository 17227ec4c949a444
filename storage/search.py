"""Dense and full-text search over a corpus's tables: the only queries that rank.

Dense search reads the views table of one vector space; BM25 reads the documents table (or the expanded one,
for document expansion). Scores are returned as the indexes give them; ranking by document and breaking ties
is the caller's job (:mod:`tasks.methods.search`).

A metadata filter (:meth:`Search.compile_where`) is a prefilter on the table searched: every row ranked
carries its document's metadata columns, so Lance ranks only matching rows and ``limit`` of them come back
whenever that many match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from lancedb.query import BooleanQuery, LanceVectorQueryBuilder, MatchQuery, Occur

from storage.documents import Documents, expanded_table
from storage.lance import Lance, sql_list
from storage.matrix import Matrices
from storage.metadata import FilterError, check_where, column, rewrite_where
from storage.quantized import EXACT, Quantization
from storage.vector_space import VectorSpace
from storage.views import Views, views_table

Hits = list[tuple[str, float]]


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
        index is searched exactly from memory (:mod:`storage.matrix`), unless filtered.
        """
        name = views_table(corpus, space)
        matrix = None if where else self.matrices.get(name, self.quantization)
        if matrix is not None:
            return matrix.top(vectors, limit, matrix.kind_mask(kinds))
        query = self.views.table(corpus, space).search(list(vectors))
        assert isinstance(query, LanceVectorQueryBuilder)
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
        found = self.documents.table(corpus).search(query, query_type="fts")
        if where:
            found = found.where(where, prefilter=True)
        rows = found.select(["doc_id", "_score"]).limit(limit).to_list()
        return [(r["doc_id"], float(r["_score"])) for r in rows]

    def fts_expanded(self, corpus: str, text: str, limit: int, where: str | None = None) -> Hits:
        """BM25 hits over the expanded index (documents + their kept synthetic queries).

        Raises:
            LookupError: the corpus has no expanded index yet.
        """
        name = expanded_table(corpus)
        if not self.lance.exists(name):
            raise LookupError(
                f"corpus {corpus!r} has no expanded index yet; run `zsr synthesize --corpus {corpus}`"
            )
        table = self.lance.db.open_table(name)
        found = table.search(text, query_type="fts")
        if where:
            named = [c for c in self.documents.table(corpus).schema.names if f"`{c}`" in where]
            if any(c.startswith(column("")) and c not in table.schema.names for c in named):
                raise FilterError(
                    f"the expanded index of {corpus!r} predates some of its metadata keys; run "
                    f"`zsr synthesize --corpus {corpus}` (or refresh its views) before filtering d2q"
                )
            found = found.where(where, prefilter=True)
        rows = found.select(["doc_id", "_score"]).limit(limit).to_list()
        return [(r["doc_id"], float(r["_score"])) for r in rows]
