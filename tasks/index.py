"""Incremental (re-)indexing of a corpus: only new and changed documents are chunked and embedded.

Idempotency key: the document's content hash. Documents are processed in batches; each batch commits its
embeddings to the cache, then its views, then its document rows, and the document row is written last, so
a document counts as indexed only once everything it needs is stored. A run killed at any point and run
again therefore ends with exactly the tables an uninterrupted run gives.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from storage.corpus_store import (
    DOCUMENTS_SCHEMA,
    CorpusInfo,
    CorpusStore,
    model_key,
    now,
    vectors_to_arrow,
    views_schema,
)
from storage.ids import canonical_json, content_hash
from storage.types import Document
from tasks.chunking import CHUNK, chunk_documents, join_title
from tasks.embed import Embedder, ModelSpec

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (documents indexed so far, documents to index)


@dataclass
class ReindexReport:
    """What a (re-)index did; ``versions`` are the LanceDB table versions it left."""

    corpus: str
    model: str
    added: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    kept_deleted: int = 0
    chunks_written: int = 0
    chunks_encoded: int = 0
    chunks_cached: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class ModelMismatchError(ValueError):
    """The corpus was indexed with another embedding model than the one requested."""


def resolve_corpus(store: CorpusStore, corpus: str, requested: ModelSpec, explicit: bool) -> ModelSpec:
    """The model spec a corpus uses: the one it was indexed with, or ``requested`` for a new corpus.

    Mixing vectors of two models in one index would make scores meaningless, so asking for another model
    explicitly is an error rather than a silent switch.
    """
    for info in store.corpora():
        if info.name == corpus:
            stored = ModelSpec(info.model, info.query_prefix, info.passage_prefix)
            if explicit and stored != requested:
                raise ModelMismatchError(
                    f"corpus {corpus!r} is indexed with {info.model!r}, not {requested.name!r}; "
                    "ingest into a new corpus name to use another model"
                )
            return stored
    return requested


def reindex(
    store: CorpusStore,
    corpus: str,
    documents: Sequence[Document],
    spec: ModelSpec,
    get_embedder: Callable[[], Embedder],
    *,
    overlap: int = 32,
    batch_docs: int = 256,
    keep_deleted: bool = False,
    ann_min_rows: int = 100_000,
    source: str = "",
    progress: Progress | None = None,
) -> ReindexReport:
    """Bring the corpus tables in line with ``documents``; the embedder is loaded only if there is work.

    Args:
        store: the LanceDB store.
        corpus: corpus name.
        documents: the whole source, already validated.
        spec: model and prefixes (see :func:`resolve_corpus`).
        get_embedder: builds the embedder on first need (loading a model costs seconds).
        overlap: tokens shared by consecutive chunks.
        batch_docs: documents per idempotent write batch.
        keep_deleted: keep documents that are gone from the source.
        ann_min_rows: build an ANN index from this many views on.
        source: where the documents came from, for the registry.
        progress: called after each batch with the documents done so far and the documents to do.
    """
    started = time.perf_counter()
    store.check_name(corpus)
    report = ReindexReport(corpus=corpus, model=spec.name)
    stored = store.document_hashes(corpus)
    todo = [d for d in documents if stored.get(d.doc_id) != d.content_hash]
    report.added = sum(d.doc_id not in stored for d in todo)
    report.changed = len(todo) - report.added
    report.unchanged = len(documents) - len(todo)
    present = {d.doc_id for d in documents}
    gone = sorted(doc_id for doc_id in stored if doc_id not in present)
    if keep_deleted:
        report.kept_deleted, gone = len(gone), []
    report.deleted = len(gone)

    if not todo and not gone and (not stored or store.has_fts(corpus)):
        report.versions = store.versions(corpus)
        report.seconds = time.perf_counter() - started
        log.info("corpus %s is up to date (%d documents); nothing written", corpus, report.unchanged)
        return report

    embedder = get_embedder()
    registered = {c.name: c for c in store.corpora()}.get(corpus)
    created = registered.created_at if registered else now()
    store.register(
        CorpusInfo(
            corpus, spec.name, spec.query_prefix, spec.passage_prefix, embedder.dim, source, created, now()
        )
    )
    for start in range(0, len(todo), batch_docs):
        batch = todo[start : start + batch_docs]
        chunks = chunk_documents(batch, embedder, overlap)
        vectors, encoded = embed_cached(store, embedder, {c.content_hash: c.text for c in chunks})
        report.chunks_encoded += encoded
        report.chunks_cached += len({c.content_hash for c in chunks}) - encoded
        report.chunks_written += len(chunks)
        views = [(c.view_id, c.doc_id, CHUNK, c.ordinal, c.text) for c in chunks]
        store.replace_views(
            corpus,
            embedder.dim,
            [d.doc_id for d in batch],
            view_rows(views, vectors, spec.name, embedder.dim),
        )
        store.upsert_documents(corpus, _document_rows(batch))
        if progress:
            progress(start + len(batch), len(todo))
    if gone:
        store.delete_documents(corpus, gone, embedder.dim)
    store.rebuild_fts(corpus)
    store.ensure_vector_index(corpus, embedder.dim, ann_min_rows)
    report.versions = store.versions(corpus)
    report.seconds = time.perf_counter() - started
    log.info("indexed %s: %s", corpus, report)
    return report


def embed_cached(
    store: CorpusStore, embedder: Embedder, texts: dict[str, str], *, queries: bool = False
) -> tuple[dict[str, np.ndarray], int]:
    """Vectors of ``{content_hash: text}``; only text this model never encoded with this prefix is encoded.

    Fresh vectors are committed to the cache before they are returned, so a crash loses no finished work.
    """
    spec = embedder.spec
    key = model_key(spec.name, spec.query_prefix if queries else spec.passage_prefix)
    vectors = store.cached_vectors(key, embedder.dim, list(texts))
    missing = [h for h in texts if h not in vectors]
    if missing:
        fresh = embedder.encode([texts[h] for h in missing], queries=queries)
        store.cache_vectors(key, embedder.dim, missing, fresh)
        vectors.update(zip(missing, fresh, strict=True))
    return vectors, len(missing)


def view_rows(
    views: Sequence[tuple[str, str, str, int, str]], vectors: dict[str, np.ndarray], model: str, dim: int
) -> pa.Table:
    """``views`` rows from ``(view_id, doc_id, kind, ordinal, text)`` tuples and vectors by text hash."""
    hashes = [content_hash(text) for *_, text in views]
    matrix = np.stack([vectors[h] for h in hashes]) if views else np.zeros((0, dim), np.float32)
    return pa.Table.from_arrays(
        [
            pa.array([v[0] for v in views], pa.string()),
            pa.array([v[1] for v in views], pa.string()),
            pa.array([v[2] for v in views], pa.string()),
            pa.array([v[3] for v in views], pa.int32()),
            pa.array([v[4] for v in views], pa.string()),
            vectors_to_arrow(matrix),
            pa.array([model] * len(views), pa.string()),
            pa.array(hashes, pa.string()),
        ],
        schema=views_schema(dim),
    )


def _document_rows(docs: Sequence[Document]) -> pa.Table:
    stamp = now()
    return pa.Table.from_pylist(
        [
            {
                "doc_id": d.doc_id,
                "title": d.title,
                "text": d.text,
                "lexical": join_title(d.title, d.text),
                "metadata": canonical_json(d.metadata),
                "content_hash": d.content_hash,
                "source": d.location,
                "ingested_at": stamp,
            }
            for d in docs
        ],
        schema=DOCUMENTS_SCHEMA,
    )
