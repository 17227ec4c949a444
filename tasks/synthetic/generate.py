"""Synthetic queries: diverse documents sampled, queries written by an LLM (or extracted), parsed, filtered.

Idempotency key: the query id, a hash of (document id, document content, generator, prompt version, style,
sample index). Generation commits each batch to LanceDB as it finishes, and the LLM client caches every
answer, so a run killed midway and started again generates only what is missing and repeats no call.
Every query is stored with its raw output, and every filter decision with its score and reason
(Promptagator round-trip consistency, doc2query-- copy and duplicate filters, length).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from storage.corpus_store import CorpusStore
from storage.ids import content_hash
from storage.synthetic import SYNTHETIC_SCHEMA
from tasks.llm.client import LLMClient, LLMError
from tasks.synthetic.config import SynthesisConfig
from tasks.synthetic.generators import WORD, ExtractiveGenerator, Generator, LLMGenerator, parse_query

log = logging.getLogger(__name__)

PENDING = "pending"  # generated, not yet through the corpus-wide filters


@dataclass
class Filters:
    """Thresholds of the filters; every decision is stored with its score."""

    min_words: int = 2
    max_words: int = 32
    max_copy: float = 0.9  # a query whose words are (nearly) all one run copied from the document
    max_jaccard: float = 0.9  # near-duplicate of an earlier query of the same document
    roundtrip_k: int | None = 20  # Promptagator keeps (q, d) only if d is in q's top k; None: no check
    roundtrip_method: str = "hybrid"


@dataclass
class SynthesisReport:
    """What a synthesis run did."""

    corpus: str
    generator: str
    style: str
    documents: int = 0
    generated: int = 0
    already_done: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    llm_calls: int = 0
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0


def setup(config: SynthesisConfig, llm: Callable[[], LLMClient]) -> tuple[Generator, Filters]:
    """The generator and the filters ``config`` asks for; the LLM client is built for the llm generator only.

    Raises:
        ValueError: a bad examples file.
    """
    shots = config.shots()  # a bad examples file fails before the client is built
    generator: Generator = (
        ExtractiveGenerator()
        if config.generator == "extractive"
        else LLMGenerator(llm(), style=config.style, temperature=config.temperature, examples=shots)
    )
    return generator, Filters(
        roundtrip_k=config.roundtrip_k or None, roundtrip_method=config.roundtrip_method
    )


def sample_documents(doc_ids: Sequence[str], vectors: np.ndarray, n: int, seed: int = 0) -> list[str]:
    """DUQGen-style diverse sample: k-means with ``n`` clusters, one document drawn from each.

    Within a cluster a document is drawn with probability softmax(cosine to the centroid / 0.1), so
    typical documents are favoured without always taking the same one.
    """
    if n >= len(doc_ids):
        return list(doc_ids)
    from sklearn.cluster import KMeans

    labels = KMeans(n_clusters=n, random_state=seed, n_init=3).fit_predict(vectors)
    rng = np.random.default_rng(seed)
    chosen = []
    for cluster in range(n):
        members = np.flatnonzero(labels == cluster)
        centroid = vectors[members].mean(axis=0)
        sims = vectors[members] @ centroid / (np.linalg.norm(centroid) or 1.0)
        weights = np.exp((sims - sims.max()) / 0.1)
        chosen.append(doc_ids[int(rng.choice(members, p=weights / weights.sum()))])
    return sorted(chosen)


def document_vectors(store: CorpusStore, corpus: str) -> tuple[list[str], np.ndarray]:
    """Every document id, sorted, and its unit vector (the mean of its chunk vectors) as one matrix."""
    vectors = store.views.document_vectors(corpus, store.registry.corpus(corpus).space)
    ids = sorted(vectors)
    return ids, np.stack([vectors[d] for d in ids]) if ids else np.zeros((0, 1), np.float32)


def copy_score(query: str, passage: str) -> float:
    """Share of the query's words that form one contiguous run in the passage (1.0: copied verbatim)."""
    q, p = [w.lower() for w in WORD.findall(query)], [w.lower() for w in WORD.findall(passage)]
    if not q:
        return 0.0
    best, prev = 0, [0] * (len(p) + 1)
    for qw in q:  # longest common substring over words, one DP row at a time
        row = [0] * (len(p) + 1)
        for j, pw in enumerate(p, start=1):
            if qw == pw:
                row[j] = prev[j - 1] + 1
                best = max(best, row[j])
        prev = row
    return best / len(q)


def synthesize(
    store: CorpusStore,
    corpus: str,
    generator: Generator,
    *,
    style: str = "question",
    per_doc: int = 1,
    doc_ids: Sequence[str] | None = None,
    filters: Filters | None = None,
    search: Callable[[dict[str, str], str, int], dict[str, list[tuple[str, float]]]] | None = None,
    batch: int = 32,
    refilter: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SynthesisReport:
    """Generate what is missing for ``doc_ids`` (default: every document), then run the filters.

    ``search(queries, method, k)`` is the retrieval used for the round-trip filter (skipped without it).
    A request that fails for good (every model, every retry) stops the run after the finished queries of
    its batch are stored. ``refilter`` decides again, from the stored raw outputs, about the queries
    already generated (after changing the filters); it costs no LLM call.
    """
    filters = filters or Filters()
    report = SynthesisReport(corpus, generator.name, style)
    docs = {
        d["doc_id"]: d
        for d in store.documents.table(corpus)
        .to_arrow()
        .select(["doc_id", "title", "text", "content_hash"])
        .to_pylist()
    }
    wanted = list(doc_ids) if doc_ids is not None else sorted(docs)
    unknown = [d for d in wanted if d not in docs]
    if unknown:
        raise ValueError(f"{len(unknown)} document id(s) not in corpus {corpus!r}, e.g. {unknown[:3]}")
    stored = store.synthetic.rows(corpus)
    existing = {r["query_id"] for r in stored}
    if refilter:
        wanted_set = set(wanted)
        again = [
            {
                **_row(
                    r["query_id"], docs[r["doc_id"]], r["sample"], r["raw"], r["style"], generator, filters
                ),
                "created_at": r["created_at"],
            }
            for r in stored
            if r["doc_id"] in wanted_set
            and r["generator"] == generator.name
            and r["prompt_version"] == generator.prompt_version
            and r["doc_hash"] == docs[r["doc_id"]]["content_hash"]
        ]
        store.synthetic.upsert(corpus, pa.Table.from_pylist(again, SYNTHETIC_SCHEMA))
    plan = []
    for doc_id in wanted:
        for sample in range(per_doc):
            qid = content_hash(
                doc_id,
                docs[doc_id]["content_hash"],
                generator.name,
                generator.prompt_version,
                style,
                str(sample),
            )
            if qid in existing:
                report.already_done += 1
            else:
                plan.append((qid, docs[doc_id], sample))
    report.documents = len(wanted)
    for start in range(0, len(plan), batch):
        part = plan[start : start + batch]
        raws = generator.generate([d for _, d, _ in part], [s for _, _, s in part])
        rows, failure = [], None
        for (qid, doc, sample), raw in zip(part, raws, strict=True):
            if isinstance(raw, LLMError):
                failure = failure or raw
                continue
            rows.append(_row(qid, doc, sample, raw, style, generator, filters))
        _count_llm(report, generator)
        store.synthetic.upsert(corpus, pa.Table.from_pylist(rows, SYNTHETIC_SCHEMA))
        report.generated += len(rows)
        if failure:
            raise LLMError(f"generation stopped, {report.generated} queries stored so far: {failure}")
        if progress:
            progress(start + len(part), len(plan))
    _final_filters(store, corpus, filters, search)
    table = store.synthetic.rows(corpus)
    mine = [
        r
        for r in table
        if r["generator"] == generator.name
        and r["prompt_version"] == generator.prompt_version
        and r["doc_id"] in set(wanted)
    ]
    report.kept = sum(r["kept"] for r in mine)
    for r in mine:
        if not r["kept"]:
            reason = r["reason"].split(":")[0]
            report.rejected[reason] = report.rejected.get(reason, 0) + 1
    return report


def _row(qid: str, doc: dict, sample: int, raw: str, style: str, gen: Generator, filters: Filters) -> dict:
    text, reason = parse_query(raw)
    n_words = len(WORD.findall(text))
    copied = copy_score(text, f"{doc['title']} {doc['text']}")
    if reason is None and not filters.min_words <= n_words <= filters.max_words:
        reason = f"length: {n_words} words, outside {filters.min_words}-{filters.max_words}"
    if reason is None and copied >= filters.max_copy and n_words >= 4 and not gen.copies_from_document:
        reason = f"copied from the document: {copied:.2f} of its words in one run"
    return {
        "query_id": qid,
        "doc_id": doc["doc_id"],
        "doc_hash": doc["content_hash"],
        "text": text,
        "raw": raw,
        "style": style,
        "generator": gen.name,
        "prompt_version": gen.prompt_version,
        "sample": sample,
        "kept": False,
        "reason": reason or PENDING,
        "n_words": n_words,
        "copy_score": copied,
        "duplicate_of": None,
        "roundtrip_rank": None,
        "created_at": datetime.now(UTC),
    }


def _final_filters(store: CorpusStore, corpus: str, filters: Filters, search: Callable | None) -> None:
    """Duplicates and round-trip consistency over every pending query (resumable: a rerun finishes them)."""
    current = store.documents.hashes(corpus)
    # Queries written from an older version of a document are history: they neither count nor block.
    table = [r for r in store.synthetic.rows(corpus) if current.get(r["doc_id"]) == r["doc_hash"]]
    pending = [r for r in table if r["reason"] == PENDING]
    if not pending:
        return
    seen: dict[str, list[tuple[str, set[str]]]] = {}
    for r in sorted(table, key=lambda r: (r["doc_id"], r["sample"], r["query_id"])):
        if r["reason"] not in (PENDING, None):
            continue
        words = {w.lower() for w in WORD.findall(r["text"])}
        earlier = seen.setdefault(r["doc_id"], [])
        for other_id, other in earlier:
            jaccard = len(words & other) / max(len(words | other), 1)
            if r["reason"] == PENDING and jaccard >= filters.max_jaccard:
                r["duplicate_of"], r["reason"] = other_id, f"near-duplicate: jaccard {jaccard:.2f}"
                break
        else:
            earlier.append((r["query_id"], words))
    survivors = [r for r in pending if r["reason"] == PENDING]
    if search and filters.roundtrip_k and survivors:
        hits = search(
            {r["query_id"]: r["text"] for r in survivors}, filters.roundtrip_method, filters.roundtrip_k
        )
        for r in survivors:
            ranked = [d for d, _ in hits[r["query_id"]]]
            r["roundtrip_rank"] = ranked.index(r["doc_id"]) + 1 if r["doc_id"] in ranked else None
            if r["roundtrip_rank"] is None:
                r["reason"] = (
                    f"round-trip: source not in the top {filters.roundtrip_k} ({filters.roundtrip_method})"
                )
    for r in pending:
        r["kept"] = r["reason"] == PENDING
        r["reason"] = None if r["kept"] else r["reason"]
    store.synthetic.upsert(corpus, pa.Table.from_pylist(pending, SYNTHETIC_SCHEMA))


def _count_llm(report: SynthesisReport, generator: Generator) -> None:
    for result in getattr(generator, "last", []):
        if not isinstance(result, LLMError):
            report.llm_calls += 1
            report.cache_hits += result.cache_hit
            report.tokens_in += result.prompt_tokens
            report.tokens_out += result.completion_tokens
