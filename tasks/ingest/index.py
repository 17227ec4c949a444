"""Incremental (re-)indexing of a corpus: only new and changed documents are chunked and embedded.

Idempotency key: the document's content hash. The unit of commit is a document row together with the views
that carry its hash in ``views.doc_hash`` (in the corpus's vector space); :mod:`storage.corpus_store` states
the rules that keep it checkable. Documents are processed in batches; each batch commits its embeddings to the
cache, then the views of the new versions (one commit), then the document rows, and only then deletes the
views of older versions. Gone documents lose their views, then their rows. Every run starts by checking each
stored document against its views (:func:`whole`): a document whose views are not exactly those of its row's
hash (a run killed between those writes left it so), and views whose document has no row, are repaired in the
same run, whatever the source now says. A run killed at any point and followed by a run over any source
therefore ends with exactly the tables an uninterrupted run over that source gives. A new way of writing views
or rows must keep those rules, or the check stops being enough.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from storage.corpus_store import CorpusStore
from storage.documents import DOCUMENTS_SCHEMA
from storage.ids import canonical_json, content_hash
from storage.lance import now, vectors_to_arrow
from storage.metadata import Fields, with_metadata
from storage.registry import CorpusInfo, check_name
from storage.types import Document
from storage.vector_space import Role, VectorSpace
from storage.views import views_schema
from tasks.ingest.chunking import CHUNK, Chunk, chunk_documents, join_title
from tasks.ingest.embed import Embedder, ModelMismatchError
from tasks.ingest.late import LATE, embed_late, token_model
from tasks.ingest.plan import batches, plan_documents, planned_fields

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (documents indexed so far, documents to index)


@dataclass
class ReindexReport:
    """What a (re-)index did; ``versions`` are the LanceDB table versions it left.

    ``repaired`` counts documents whose views did not match their stored row (an earlier run was killed
    midway, or the views predate ``doc_hash``) plus documents with views but no row; they are rebuilt or
    removed. Documents missing from the source are kept rather than deleted with ``keep_deleted``
    (``kept_deleted``), when their record was skipped as bad (``kept_skipped``), and, all of them, when a
    skipped record's id could not be read, as it may be any of them (``kept_unverified``).
    """

    corpus: str
    model: str
    added: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    repaired: int = 0
    kept_deleted: int = 0
    kept_skipped: int = 0
    kept_unverified: int = 0
    chunks_written: int = 0
    chunks_encoded: int = 0
    chunks_cached: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    upgrade: dict[str, Any] | None = None  # a move to another model's space (tasks.ingest.upgrade's report)


def resolve_corpus(store: CorpusStore, corpus: str, requested: VectorSpace, explicit: bool) -> VectorSpace:
    """The vector space a corpus uses: its active one, or ``requested`` for a new corpus.

    Mixing vectors of two spaces in one index would make scores meaningless, so asking for another space
    explicitly is an error rather than a silent switch (moving a corpus to another space is a later job).
    """
    info = store.registry.get(corpus)
    if info is None:
        return requested
    if explicit:
        _check_space(info, requested)
    return info.space


def _check_space(info: CorpusInfo, requested: VectorSpace) -> None:
    """Refuse ``requested`` unless it is the corpus's space; the message says what differs."""
    if info.space == requested:
        return
    stored, asked = info.space.as_dict(), requested.as_dict()
    differs = [
        f"{name} {stored[name]!r} vs {asked[name]!r}" for name in stored if stored[name] != asked[name]
    ]
    raise ModelMismatchError(
        f"corpus {info.name!r} is indexed with {info.space.model!r}, not {requested.model!r} "
        f"({'; '.join(differs)}); ingest into a new corpus name to use another model or chunking"
    )


def reindex(
    store: CorpusStore,
    corpus: str,
    documents: Iterable[Document],
    space: VectorSpace,
    get_embedder: Callable[[], Embedder],
    *,
    overlap: int = 32,
    batch_docs: int = 256,
    keep_deleted: bool = False,
    skipped_ids: Collection[str] = frozenset(),
    skipped_without_id: int = 0,
    ann_min_rows: int = 100_000,
    source: str = "",
    progress: Progress | None = None,
) -> ReindexReport:
    """Bring the corpus tables in line with ``documents``; the embedder is loaded only if there is work.

    The documents are read twice, one at a time, and never held: a first pass plans (which documents are
    new or changed, which stored ones are gone, the metadata columns), as a metadata conflict must be
    refused and the work counted before anything is written; the second writes the planned documents in
    batches of ``batch_docs``. Memory is bounded by a batch and the sets of ids and hashes, not by the text.

    Args:
        store: the LanceDB store.
        corpus: corpus name.
        documents: the whole source, already validated: a list, or :func:`read_source`'s documents, which
            are read from disk again on each iteration. A one-shot iterator is refused (the second pass
            would find it empty).
        space: the vector space to index in (see :func:`resolve_corpus`).
        get_embedder: builds the embedder of ``space`` on first need (loading a model costs seconds).
        overlap: tokens shared by consecutive chunks.
        batch_docs: documents per idempotent write batch.
        keep_deleted: keep documents that are gone from the source.
        skipped_ids: ids of source records skipped as bad; their indexed versions are kept, not deleted.
        skipped_without_id: skipped records whose id could not be read. Any document missing from the
            source may be one of them, so none is deleted while there are any.
        ann_min_rows: build an ANN index from this many views on.
        source: where the documents came from, for the registry.
        progress: called after each batch with the documents done so far and the documents to do.
    """
    if iter(documents) is documents:
        raise TypeError("reindex reads its documents twice: pass a list or read_source's documents")
    started = time.perf_counter()
    check_name(corpus)
    report = ReindexReport(corpus=corpus, model=space.model)
    registered = store.registry.get(corpus)  # first: a registry of an older format is refused unwritten
    if registered:
        _check_space(registered, space)  # a corpus moves to another space only as a whole, later
    # Reading the documents table creates it: a first ingest refused for its metadata must leave none.
    exists = store.documents.exists(corpus)
    stored = store.documents.hashes(corpus) if exists else {}
    views = store.views.hashes(corpus, space)
    broken = {doc_id for doc_id, h in stored.items() if not whole(views.get(doc_id, set()), h)}
    plan = plan_documents(documents, stored, broken)
    orphans = sorted(doc_id for doc_id in views if doc_id not in stored and doc_id not in plan.present)
    missing = _split_gone(
        sorted(doc_id for doc_id in stored if doc_id not in plan.present),
        keep_deleted,
        skipped_ids,
        skipped_without_id,
    )
    gone = missing.delete
    kept = [*missing.kept_skipped, *missing.kept_deleted, *missing.kept_unverified]
    repairs = stored_documents(store, corpus, sorted(broken.intersection(kept)))
    todo = len(plan.todo) + len(repairs)
    report.added = sum(doc_id not in stored for doc_id in plan.todo)
    report.changed = plan.changed
    report.repaired = todo - report.added - report.changed + len(orphans)
    report.unchanged = plan.count - len(plan.todo)
    report.deleted = len(gone)
    report.kept_skipped = len(missing.kept_skipped)
    report.kept_deleted = len(missing.kept_deleted)
    report.kept_unverified = len(missing.kept_unverified)
    if missing.kept_unverified:
        log.warning(
            "kept %d document(s) missing from the source: %d skipped record(s) have no readable id",
            report.kept_unverified,
            skipped_without_id,
        )

    if (
        not todo
        and not gone
        and not orphans
        and not _unused_metadata(store, corpus, space)
        and (not stored or store.documents.has_fts(corpus))
        and not (registered and store.views.vector_index_lags(corpus, space, ann_min_rows))
    ):
        report.versions = store.versions(corpus)
        report.seconds = time.perf_counter() - started
        log.info("corpus %s is up to date (%d documents); nothing written", corpus, report.unchanged)
        return report

    # Metadata types are checked before anything is written: a conflict names its record and the fix.
    # (The views' columns count too: a run killed between its views and its rows leaves them there alone.)
    known = {**store.views.metadata_fields(corpus, space)}
    if exists:
        known.update(store.documents.metadata_fields(corpus))
    fields = planned_fields(documents, plan, repairs, known)
    store.documents.table(corpus)  # created now: a first ingest stopped from here on reads as incomplete
    embedder = load_for(space, get_embedder)
    created = registered.created_at if registered else now()
    store.registry.register(CorpusInfo(corpus, space, embedder.dim, source, created, now()))
    # New metadata keys get their columns first, each table's in one commit (null for stored rows).
    store.views.add_metadata_columns(corpus, space, fields)
    store.documents.add_metadata_columns(corpus, fields)
    planned = (d for d in documents if d.doc_id in plan.todo)
    done = 0
    for batch in batches(chain(planned, repairs), batch_docs):
        write_batch(store, corpus, space, embedder, batch, stored, fields, overlap, report)
        done += len(batch)
        if progress:
            progress(done, todo)
    if gone or orphans:
        store.views.delete(corpus, space, [*gone, *orphans])  # views first: none outlives its row
    if gone:
        store.documents.delete(corpus, gone)
    unused = _unused_metadata(store, corpus, space)
    if unused:  # views first, as for rows: a kill in between leaves the documents' column to find again
        store.views.drop_metadata_columns(corpus, space, unused)
        store.documents.drop_metadata_columns(corpus, unused)
    store.documents.rebuild_fts(corpus)
    store.views.ensure_vector_index(corpus, space, ann_min_rows)
    report.versions = store.versions(corpus)
    report.seconds = time.perf_counter() - started
    log.info("indexed %s: %s", corpus, report)
    return report


def write_batch(
    store: CorpusStore,
    corpus: str,
    space: VectorSpace,
    embedder: Embedder,
    batch: list[Document],
    stored: Mapping[str, str],
    fields: Fields,
    overlap: int,
    report: ReindexReport,
) -> None:
    """Chunk, embed and commit one batch; the unit of commit (module docstring): new views, row, old views."""
    chunks = chunk_documents(batch, embedder, overlap)
    keys, vectors = _embed_batch(store, space, embedder, batch, chunks, report)
    report.chunks_written += len(chunks)
    hashes = {d.doc_id: d.content_hash for d in batch}
    views_of_batch = [(c.view_id, c.doc_id, CHUNK, c.ordinal, c.text) for c in chunks]
    metadata = {d.doc_id: d.metadata for d in batch}
    new_views = view_rows(views_of_batch, vectors, space.model, embedder.dim, hashes, keys)
    store.views.put(corpus, space, with_metadata(new_views, [metadata[v[1]] for v in views_of_batch], fields))
    rows = [d for d in batch if stored.get(d.doc_id) != hashes[d.doc_id]]
    if rows:
        store.documents.upsert(corpus, _document_rows(rows, fields))
    store.views.delete_stale(corpus, space, hashes)


def _embed_batch(
    store: CorpusStore,
    space: VectorSpace,
    embedder: Embedder,
    batch: list[Document],
    chunks: Sequence[Chunk],
    report: ReindexReport,
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Each chunk's cache key, and the vectors by key, from the cache or encoded; counted in ``report``.

    A late chunk's vector depends on its whole document, so its key is not its text's (tasks.ingest.late).
    """
    if space.chunking == LATE:
        keys, vectors, encoded = embed_late(store, embedder, batch, chunks)
    else:
        keys = [c.content_hash for c in chunks]
        vectors, encoded = embed_cached(store, embedder, {c.content_hash: c.text for c in chunks})
    report.chunks_encoded += encoded
    report.chunks_cached += len(set(keys)) - encoded
    return keys, vectors


def _unused_metadata(store: CorpusStore, corpus: str, space: VectorSpace) -> list[str]:
    """Metadata keys with a column (documents or views) that no stored document has: they are dropped.

    So the filterable keys are those some document has, and a run killed after adding a key's columns,
    then followed by a source without the key, ends with the tables a run of that source alone gives.
    """
    return store.documents.unused_metadata(corpus, also=store.views.metadata_fields(corpus, space))


def load_for(space: VectorSpace, get_embedder: Callable[[], Embedder]) -> Embedder:
    """The embedder ``get_embedder`` builds, checked to embed into ``space``.

    Its vectors are filed under ``space`` (views table, cache), so an embedder of another space is refused
    rather than trusted.
    """
    embedder = get_embedder()
    if embedder.space != space:
        raise ModelMismatchError(f"the embedder embeds into {embedder.space}, not into {space}")
    if space.chunking == LATE:
        token_model(embedder)  # a model late chunking cannot use is refused before anything is written
    return embedder


def whole(views: set[tuple[str, str | None]], doc_hash: str) -> bool:
    """Whether a document's views are exactly those of its stored version.

    A version's views are written in one commit and deleted either all at once or, as stale, only after the
    views of another version are in: so "at least one chunk view, and every view carries the row's hash"
    means all of that version's views and nothing else.
    """
    return (CHUNK, doc_hash) in views and all(h == doc_hash for _, h in views)


class _Gone(NamedTuple):
    """Stored documents missing from the source: those to delete, and those kept, by reason."""

    delete: list[str]
    kept_skipped: list[str]
    kept_deleted: list[str]
    kept_unverified: list[str]


def _split_gone(gone: list[str], keep_deleted: bool, skipped_ids: Collection[str], without_id: int) -> _Gone:
    """Decide which stored documents missing from the source are deleted.

    A record skipped as bad keeps its document's indexed version: a broken line is not a deletion. When some
    skipped record has no readable id, it may be any missing document, so none is deleted.
    """
    skipped = [d for d in gone if d in skipped_ids]
    rest = [d for d in gone if d not in skipped_ids]
    if keep_deleted:
        return _Gone([], skipped, rest, [])
    if without_id:
        return _Gone([], skipped, [], rest)
    return _Gone(rest, skipped, [], [])


def stored_documents(store: CorpusStore, corpus: str, doc_ids: Sequence[str]) -> list[Document]:
    """Stored documents rebuilt from their rows: how a kept document no longer in the source is repaired."""
    if not doc_ids:
        return []
    columns = ["doc_id", "title", "text", "metadata", "source"]
    rows = sorted(store.documents.fetch(corpus, doc_ids, columns), key=lambda r: r["doc_id"])
    return [
        Document(r["doc_id"], r["title"], r["text"], json.loads(r["metadata"]), r["source"]) for r in rows
    ]


def embed_cached(
    store: CorpusStore, embedder: Embedder, texts: dict[str, str], *, queries: bool = False
) -> tuple[dict[str, np.ndarray], int]:
    """Vectors of ``{content_hash: text}``; only text never encoded in the embedder's space and role is.

    Fresh vectors are committed to the cache before they are returned, so a crash loses no finished work.
    """
    role: Role = "query" if queries else "passage"
    vectors = store.cache.get(embedder.space, role, list(texts))
    missing = [h for h in texts if h not in vectors]
    if missing:
        fresh = embedder.encode([texts[h] for h in missing], queries=queries)
        store.cache.put(embedder.space, role, missing, fresh)
        vectors.update(zip(missing, fresh, strict=True))
    return vectors, len(missing)


def view_rows(
    views: Sequence[tuple[str, str, str, int, str]],
    vectors: dict[str, np.ndarray],
    model: str,
    dim: int,
    doc_hashes: Mapping[str, str],
    keys: Sequence[str] | None = None,
) -> pa.Table:
    """``views`` rows from ``(view_id, doc_id, kind, ordinal, text)`` tuples and vectors by cache key.

    ``doc_hashes`` maps each doc_id to the content hash of the document version the views were built from.
    ``keys`` are the cache keys of the views' vectors, stored as their ``content_hash``: by default the hash
    of each view's text; late chunks are keyed by their document and span instead (:mod:`tasks.ingest.late`).
    """
    hashes = list(keys) if keys is not None else [content_hash(text) for *_, text in views]
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
            pa.array([doc_hashes[v[1]] for v in views], pa.string()),
        ],
        schema=views_schema(dim),
    )


def _document_rows(docs: Sequence[Document], fields: Fields) -> pa.Table:
    stamp = now()
    rows = pa.Table.from_pylist(
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
    return with_metadata(rows, [d.metadata for d in docs], fields)
