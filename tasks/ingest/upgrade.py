"""Model upgrade without downtime: a corpus's views built in a new vector space beside the old, then switched.

Three steps, each resumable; the idempotency key is each document's content hash in the new space, as in
re-indexing (:mod:`tasks.ingest.index`):

1. **Drift map.** The new model embeds the corpus's views (chunks, titles, kept synthetic queries), and a
   map from those vectors to the stored old ones is fit and stored (:mod:`storage.compensation`, one
   commit). From then on ``dense(compensate=true)`` searches the old index with the new model. The new
   vectors land in the new space's embedding cache, where step 2 finds them.
2. **Build.** The new space's views table gets the chunk views of every stored document not yet whole there
   (:func:`tasks.ingest.index.whole`), batch by batch, in the unit of commit of :mod:`storage.corpus_store`;
   views of documents no longer stored are deleted; then title and query views
   (:func:`tasks.ingest.views.build_views`) and the ANN index.
3. **Switch.** The corpus's registry row names the new space: one commit, so every search before it uses
   the old space and every search after it the new one.

Until step 3 nothing the old space's searches read is written, so a run killed anywhere leaves the old
model serving; a re-run finds the map stored, skips the documents already whole in the new space and takes
the vectors of a half-written batch from the cache. After the switch the old space's tables stay (runs
recorded against them can still be reproduced); ``zsr rm`` drops them with the corpus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from storage.compensation import DriftFit, DriftMap, fit
from storage.corpus_store import CorpusStore
from storage.ids import content_hash
from storage.lance import now
from storage.registry import CorpusInfo
from storage.vector_space import VectorSpace
from tasks.ingest.embed import Embedder
from tasks.ingest.index import (
    Progress,
    ReindexReport,
    embed_cached,
    load_for,
    stored_documents,
    whole,
    write_batch,
)
from tasks.ingest.views import build_views

log = logging.getLogger(__name__)

MAX_PAIRS = 20_000  # views a drift map is fit on: plenty for a 1024 x 1024 map, cheap to encode


@dataclass
class UpgradeReport:
    """What a move of a corpus to another vector space did.

    ``rebuilt`` documents got their views in the new space in this run, ``resumed`` ones had them from an
    earlier, interrupted run; ``switched`` says whether the corpus now searches in the new space.
    """

    corpus: str
    old_space: str
    new_space: str
    model: str
    method: str = ""
    pairs: int = 0
    cosine_before: float = float("nan")
    cosine_after: float = float("nan")
    fit_reused: bool = False
    documents: int = 0
    rebuilt: int = 0
    resumed: int = 0
    orphans: int = 0
    chunks_encoded: int = 0
    chunks_cached: int = 0
    views_encoded: int = 0
    switched: bool = False
    seconds: float = 0.0


def drift_map(
    store: CorpusStore,
    corpus: str,
    old: VectorSpace,
    embedder: Embedder,
    method: DriftFit,
    limit: int = MAX_PAIRS,
) -> DriftMap:
    """Fit the map from ``embedder``'s space into ``old`` on up to ``limit`` of the corpus's views.

    Each view's text is embedded by the new model in its role (a kept synthetic query as a query, the rest
    as passages) through the embedding cache, and paired with its stored vector.
    """
    texts, is_query, old_vectors = store.drifts.training_pairs(corpus, old, limit)
    keys = [content_hash(t) for t in texts]
    new: dict[bool, dict[str, np.ndarray]] = {}
    for role in (False, True):
        wanted = {k: t for k, t, q in zip(keys, texts, is_query, strict=True) if q is role}
        new[role] = embed_cached(store, embedder, wanted, queries=role)[0]
    new_vectors = np.stack([new[q][k] for k, q in zip(keys, is_query, strict=True)])
    return fit(new_vectors, old_vectors, old.key, embedder.space, method)


def upgrade_model(
    store: CorpusStore,
    corpus: str,
    space: VectorSpace,
    get_embedder: Callable[[], Embedder],
    *,
    method: DriftFit = "lstsq",
    compensate_only: bool = False,
    overlap: int = 32,
    batch_docs: int = 256,
    ann_min_rows: int = 100_000,
    progress: Progress | None = None,
) -> UpgradeReport:
    """Move ``corpus`` to ``space`` without taking its search down (module docstring); resumable.

    The documents are those stored: bring them in line with the source first (a re-index in the corpus's
    current space), as :meth:`tasks.workspace.Workspace.ingest` does.

    Args:
        store: the LanceDB store.
        corpus: a complete, registered corpus.
        space: the vector space to move to.
        get_embedder: builds the embedder of ``space``.
        method: how the drift map is fit (:mod:`storage.compensation`).
        compensate_only: stop after the drift map: the corpus keeps its index and is searched with the new
            model through ``dense(compensate=true)`` until an upgrade without it completes.
        overlap: tokens shared by consecutive chunks.
        batch_docs: documents per idempotent write batch.
        ann_min_rows: build an ANN index over the new views from this many on.
        progress: called after each batch with the documents done so far and the documents to do.

    Raises:
        IncompleteCorpusError, UnknownCorpusError: the corpus cannot be searched now, so there is nothing
            to keep serving: ingest it first.
    """
    started = time.perf_counter()
    info = store.registry.corpus(corpus)
    report = UpgradeReport(corpus, info.space.key, space.key, space.model)
    if info.space == space:
        report.switched = True
        log.info("corpus %s is already in space %s; nothing to upgrade", corpus, space.key)
        return report
    embedder = load_for(space, get_embedder)
    drift = store.drifts.get(corpus, info.space, space)
    report.fit_reused = drift is not None and drift.method == method
    if drift is None or not report.fit_reused:
        drift = drift_map(store, corpus, info.space, embedder, method)
        store.drifts.put(corpus, drift)
    report.method, report.pairs = drift.method, drift.pairs
    report.cosine_before, report.cosine_after = drift.cosine_before, drift.cosine_after
    log.info("drift map %s -> %s of %s: %s", space.key, info.space.key, corpus, report)
    if not compensate_only:
        _build(store, corpus, space, embedder, overlap, batch_docs, progress, report)
        report.views_encoded = build_views(store, corpus, lambda: embedder, space).encoded
        store.views.ensure_vector_index(corpus, space, ann_min_rows)
        store.registry.register(CorpusInfo(corpus, space, embedder.dim, info.source, info.created_at, now()))
        report.switched = True
    report.seconds = time.perf_counter() - started
    log.info("upgrade of %s: %s", corpus, report)
    return report


def _build(
    store: CorpusStore,
    corpus: str,
    space: VectorSpace,
    embedder: Embedder,
    overlap: int,
    batch_docs: int,
    progress: Progress | None,
    report: UpgradeReport,
) -> None:
    """Give every stored document its chunk views in ``space``, and delete the views of documents gone."""
    stored = store.documents.hashes(corpus)
    views = store.views.hashes(corpus, space)
    todo = sorted(doc_id for doc_id, h in stored.items() if not whole(views.get(doc_id, set()), h))
    orphans = sorted(set(views) - set(stored))
    report.documents, report.rebuilt, report.orphans = len(stored), len(todo), len(orphans)
    report.resumed = len(stored) - len(todo)
    fields = store.documents.metadata_fields(corpus)
    store.views.add_metadata_columns(corpus, space, fields)
    counts = ReindexReport(corpus, space.model)
    for start in range(0, len(todo), batch_docs):
        documents = stored_documents(store, corpus, todo[start : start + batch_docs])
        # ``stored`` as the rows' own hashes: the rows are current, so only views are written
        write_batch(store, corpus, space, embedder, documents, stored, fields, overlap, counts)
        if progress:
            progress(start + len(documents), len(todo))
    store.views.delete(corpus, space, orphans)
    store.views.drop_metadata_columns(
        corpus, space, sorted(set(store.views.metadata_fields(corpus, space)) - set(fields))
    )
    report.chunks_encoded, report.chunks_cached = counts.chunks_encoded, counts.chunks_cached
