"""Multi-view document representations and document expansion, kept in step with the corpus.

Besides its chunks (written by re-indexing), each document gets a ``title`` view and one ``query`` view per
kept synthetic query, embedded in the corpus's vector space (queries with the query prefix, since a user
query is compared with them query to query). The same kept queries are appended to the document's text in a
separate BM25 index (doc2query). Idempotency: views have content-derived ids, so a rebuild adds only what
is new and deletes only what went stale (a changed document's old queries no longer match its content
hash, and re-indexing has already dropped its old views).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from storage.corpus_store import CorpusStore
from storage.ids import content_hash
from storage.metadata import with_metadata
from storage.vector_space import VectorSpace
from tasks.ingest.chunking import join_title
from tasks.ingest.embed import Embedder
from tasks.ingest.index import embed_cached, load_for, view_rows

log = logging.getLogger(__name__)

TITLE, QUERY = "title", "query"


@dataclass
class ViewsReport:
    """What a rebuild changed."""

    corpus: str
    title_views: int = 0
    query_views: int = 0
    added: int = 0
    deleted: int = 0
    encoded: int = 0
    expanded_documents: int = 0


def kept_queries(store: CorpusStore, corpus: str) -> dict[str, list[tuple[str, str]]]:
    """``doc_id -> [(query_id, text)]`` of kept synthetic queries written from the document's current text."""
    hashes = store.documents.hashes(corpus)
    out: dict[str, list[tuple[str, str]]] = {}
    for row in store.synthetic.rows(corpus):
        if row["kept"] and hashes.get(row["doc_id"]) == row["doc_hash"]:
            out.setdefault(row["doc_id"], []).append((row["query_id"], row["text"]))
    return {d: sorted(qs) for d, qs in out.items()}


def build_views(
    store: CorpusStore,
    corpus: str,
    get_embedder: Callable[[], Embedder],
    space: VectorSpace | None = None,
) -> ViewsReport:
    """Bring title and query views, and the expanded BM25 index, in line with the corpus.

    ``space``: build the views of that vector space only, as a model upgrade does for the space it moves to
    (:mod:`tasks.ingest.upgrade`); the expanded index belongs to no space and the active space's searches
    read it, so it is left as it is.
    """
    report = ViewsReport(corpus)
    active = store.registry.corpus(corpus).space
    columns = ["doc_id", "title", "text", "content_hash", "metadata"]
    docs = store.documents.table(corpus).to_arrow().select(columns).to_pylist()
    doc_hashes = {d["doc_id"]: d["content_hash"] for d in docs}  # each view is tagged with its version
    metadata = {d["doc_id"]: json.loads(d["metadata"] or "{}") for d in docs}  # copied onto each view
    fields = store.documents.metadata_fields(corpus)
    queries = kept_queries(store, corpus)
    embedder = load_for(space or active, get_embedder)
    titles = [
        (content_hash(d["doc_id"], TITLE, d["title"]), d["doc_id"], TITLE, 0, d["title"])
        for d in docs
        if d["title"]
    ]
    query_views = [
        (content_hash(doc_id, QUERY, qid, text), doc_id, QUERY, i, text)
        for doc_id, qs in queries.items()
        for i, (qid, text) in enumerate(qs)
    ]
    for kind, views, as_query in ((TITLE, titles, False), (QUERY, query_views, True)):
        vectors, encoded = embed_cached(
            store, embedder, {content_hash(v[4]): v[4] for v in views}, queries=as_query
        )
        rows = view_rows(views, vectors, embedder.space.model, embedder.dim, doc_hashes)
        rows = with_metadata(rows, [metadata[v[1]] for v in views], fields)
        added, deleted = store.views.sync(corpus, embedder.space, [kind], rows)
        report.encoded += encoded
        report.added += added
        report.deleted += deleted
    report.title_views, report.query_views = len(titles), len(query_views)
    if space is not None:
        return report
    expanded = [
        {
            "doc_id": d["doc_id"],
            "lexical": "\n".join(
                [join_title(d["title"], d["text"]), *(t for _, t in queries.get(d["doc_id"], []))]
            ),
        }
        for d in docs
    ]
    expanded_rows = pa.Table.from_pylist(
        expanded, pa.schema([("doc_id", pa.string()), ("lexical", pa.string())])
    )
    store.documents.write_expansion(
        corpus, with_metadata(expanded_rows, [metadata[d["doc_id"]] for d in docs], fields)
    )
    report.expanded_documents = sum(d["doc_id"] in queries for d in docs)
    log.info("views of %s: %s", corpus, report)
    return report
