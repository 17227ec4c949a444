"""Dense and full-text search over a corpus's tables: the only queries that rank.

Dense search reads the views table of one vector space; BM25 reads the documents table (or the expanded one,
for document expansion). Scores are returned as the indexes give them; ranking by document and breaking ties
is the caller's job (:mod:`tasks.methods.search`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from lancedb.query import BooleanQuery, LanceVectorQueryBuilder, MatchQuery, Occur

from storage.documents import Documents, expanded_table
from storage.lance import Lance, sql_list
from storage.vector_space import VectorSpace
from storage.views import Views

Hits = list[tuple[str, float]]


class Search:
    """Nearest views in a vector space, and BM25 hits over documents."""

    def __init__(self, lance: Lance, documents: Documents, views: Views) -> None:
        self.lance = lance
        self.documents = documents
        self.views = views

    def dense(
        self,
        corpus: str,
        space: VectorSpace,
        vectors: np.ndarray,
        limit: int,
        kinds: Sequence[str] = ("chunk",),
    ) -> list[Hits]:
        """Nearest views of ``kinds`` for each query vector: per query, ``(doc_id, cosine)`` best first."""
        query = self.views.table(corpus, space).search(list(vectors))
        assert isinstance(query, LanceVectorQueryBuilder)
        result = (
            query.distance_type("cosine")
            .where(f"kind IN ({sql_list(kinds)})", prefilter=True)
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

    def fts(self, corpus: str, text: str | Mapping[str, float], limit: int) -> Hits:
        """BM25 hits as ``(doc_id, score)``, best first, for a query text or for weighted words.

        Weighted words score as the sum of weight x BM25 of each (a boolean OR of boosted matches), each
        word analysed like the index (stemmed, stop words dropped).
        """
        query: str | BooleanQuery = (
            text
            if isinstance(text, str)
            # mypy cannot see the defaults of lancedb's pydantic dataclasses
            else BooleanQuery([(Occur.SHOULD, MatchQuery(w, "lexical", boost=b)) for w, b in text.items()])  # type: ignore[call-arg]
        )
        table = self.documents.table(corpus)
        rows = table.search(query, query_type="fts").select(["doc_id", "_score"]).limit(limit).to_list()
        return [(r["doc_id"], float(r["_score"])) for r in rows]

    def fts_expanded(self, corpus: str, text: str, limit: int) -> Hits:
        """BM25 hits over the expanded index (documents + their kept synthetic queries).

        Raises:
            LookupError: the corpus has no expanded index yet.
        """
        name = expanded_table(corpus)
        if not self.lance.exists(name):
            raise LookupError(
                f"corpus {corpus!r} has no expanded index yet; run `zsr synthesize --corpus {corpus}`"
            )
        rows = (
            self.lance.db.open_table(name)
            .search(text, query_type="fts")
            .select(["doc_id", "_score"])
            .limit(limit)
            .to_list()
        )
        return [(r["doc_id"], float(r["_score"])) for r in rows]
