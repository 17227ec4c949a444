"""The library API and composition root: builds the store and the embedder from :class:`Settings`.

The CLI, the Prefect flows and Python users all come through here, so each of them indexes, searches and
writes synthetic queries the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from storage.corpus_store import CorpusStore
from storage.llm_cache import ResponseCache
from storage.warehouse import Warehouse
from tasks.ingest.embed import Embedder, ModelSpec, load_embedder, model_spec
from tasks.ingest.index import Progress, ReindexReport, reindex, resolve_corpus
from tasks.ingest.sources import FieldMap, SourceFormat, SourceReport, read_source
from tasks.llm.client import LLMClient, LLMConfig
from tasks.llm.failover import parse_fallbacks
from tasks.llm.judge import Judge
from tasks.methods.registry import Method
from tasks.methods.search import Ranking, Searcher
from tasks.settings import Settings, get_settings
from tasks.synthetic.generate import (
    ExtractiveGenerator,
    Filters,
    LLMGenerator,
    SynthesisReport,
    document_vectors,
    sample_documents,
    synthesize,
)


def open_store(settings: Settings | None = None) -> CorpusStore:
    """The LanceDB store at the configured URI (created on first use)."""
    settings = settings or get_settings()
    if "://" not in settings.lancedb:
        Path(settings.lancedb).mkdir(parents=True, exist_ok=True)
    return CorpusStore(settings.lancedb)


def embedder_factory(spec: ModelSpec, settings: Settings) -> Callable[[], Embedder]:
    """A zero-argument loader, so commands that need no model never pay for loading one."""
    return lambda: load_embedder(spec, settings.device, settings.batch_size)


def ingest(
    source: Path,
    corpus: str,
    *,
    fmt: SourceFormat | None = None,
    fields: FieldMap | None = None,
    skip_bad: bool = False,
    keep_deleted: bool = False,
    model: str | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
    delimiter: str = ",",
) -> tuple[ReindexReport, SourceReport]:
    """Read ``source`` and (re-)index it as ``corpus``; returns what was indexed and what was skipped."""
    settings = settings or get_settings()
    store = open_store(settings)
    store.check_name(corpus)
    read = read_source(
        source,
        fmt=fmt,
        fields=fields or FieldMap(),
        skip_bad=skip_bad,
        max_doc_bytes=settings.max_doc_bytes,
        delimiter=delimiter,
    )
    explicit = model is not None or "embedding_model" in settings.model_fields_set
    requested = model_spec(model or settings.embedding_model, settings.query_prefix, settings.passage_prefix)
    spec = resolve_corpus(store, corpus, requested, explicit)
    report = reindex(
        store,
        corpus,
        read.documents,
        spec,
        embedder_factory(spec, settings),
        overlap=settings.chunk_overlap,
        batch_docs=settings.write_batch_size,
        keep_deleted=keep_deleted,
        skipped_ids=read.skipped_ids,
        skipped_without_id=read.skipped_without_id,
        ann_min_rows=settings.ann_min_rows,
        source=str(source),
        progress=progress,
    )
    return report, read


def llm_client(settings: Settings | None = None) -> LLMClient:
    """The LLM client from settings: response cache under ``$ZSR_HOME``, usage rows into the warehouse.

    Raises:
        ValueError: ``ZSR_LLM_FALLBACKS`` is malformed, or names a key variable that is not set.
    """
    settings = settings or get_settings()
    config = LLMConfig(
        model=settings.llm_model,
        fallbacks=parse_fallbacks(settings.llm_fallbacks),
        api_base=settings.llm_api_base,
        timeout=settings.llm_timeout,
        retry_seconds=settings.llm_retry_seconds,
        concurrency=settings.llm_concurrency,
    )
    warehouse = Warehouse(settings.warehouse_dir)
    return LLMClient(
        config, ResponseCache(settings.llm_cache_path), lambda rows: warehouse.append("llm_calls", rows)
    )


def searcher(corpus: str, settings: Settings | None = None, judge: Judge | None = None) -> Searcher:
    """A :class:`Searcher` over ``corpus``, using the model the corpus was indexed with.

    The LLM (for hyde, rede-rf, expand, rerank) is built on first use; ``judge`` defaults to an LLM judge.
    """
    settings = settings or get_settings()
    store = open_store(settings)
    info = store.corpus(corpus)
    spec = ModelSpec(info.model, info.query_prefix, info.passage_prefix)
    return Searcher(
        store, corpus, embedder_factory(spec, settings), judge=judge, llm_factory=lambda: llm_client(settings)
    )


def prepare_synthesis(
    corpus: str,
    *,
    generator: str = "llm",
    style: str = "question",
    per_doc: int = 1,
    sample_docs: int | None = None,
    seed: int = 0,
    temperature: float = 0.7,
    examples: Path | None = None,
    roundtrip_k: int = 20,
    roundtrip_method: str = "hybrid",
    refilter: bool = False,
    settings: Settings | None = None,
) -> Callable[[Callable[[int, int], None] | None], SynthesisReport]:
    """Set up synthetic queries for ``corpus`` (generator, document sample, filters) alike for every caller.

    Returns the run, to be called with a progress callback (or ``None``): bad input (an unknown corpus,
    generator or style, a bad examples file) fails here, before the caller shows any progress.

    Args:
        corpus: An indexed corpus.
        generator: ``llm`` (the configured model), or ``extractive`` (no LLM: sentences of the document).
        style: Kind of query the prompt asks for.
        per_doc: Queries per document.
        sample_docs: Sample this many diverse documents (k-means over embeddings); ``None``: all.
        seed: Seed of the document sample.
        temperature: Sampling temperature of the LLM.
        examples: JSONL of few-shot examples, ``{"passage": ..., "query": ...}`` a line (up to 8 are used).
        roundtrip_k: Keep a query only if its document is in its top k (0: no check).
        roundtrip_method: Retrieval used for the round-trip check.
        refilter: Decide again, from stored outputs, about queries already generated (no LLM call).
        settings: Settings to use instead of the environment's.
    """
    settings = settings or get_settings()
    store, engine = open_store(settings), searcher(corpus, settings)
    if generator not in ("llm", "extractive"):
        raise ValueError(f"unknown generator {generator!r}; use llm or extractive")
    shots = (
        [json.loads(line) for line in examples.read_text().splitlines() if line.strip()] if examples else []
    )
    if any(set(s) < {"passage", "query"} for s in shots):
        raise ValueError(f"{examples}: every example needs 'passage' and 'query' fields")
    gen = (
        ExtractiveGenerator()
        if generator == "extractive"
        else LLMGenerator(llm_client(settings), style=style, temperature=temperature, examples=shots)
    )
    doc_ids = None
    if sample_docs:
        ids, vectors = document_vectors(store, corpus)
        doc_ids = sample_documents(ids, vectors, sample_docs, seed=seed)
    filters = Filters(roundtrip_k=roundtrip_k or None, roundtrip_method=roundtrip_method)

    def run(progress: Callable[[int, int], None] | None) -> SynthesisReport:
        return synthesize(
            store,
            corpus,
            gen,
            style=style,
            per_doc=per_doc,
            doc_ids=doc_ids,
            filters=filters,
            search=engine.search_batch,
            refilter=refilter,
            progress=progress,
        )

    return run


def search(
    corpus: str, query: str, method: str | Method = "dense", k: int = 10, settings: Settings | None = None
) -> Ranking:
    """Top ``k`` ``(doc_id, score)`` for one query."""
    return searcher(corpus, settings).search(query, method, k)


def search_many(
    corpus: str,
    queries: Mapping[str, str],
    method: str | Method = "dense",
    k: int = 10,
    settings: Settings | None = None,
) -> dict[str, Ranking]:
    """Top ``k`` for many queries at once (dense queries are encoded in one batch)."""
    return searcher(corpus, settings).search_batch(queries, method, k)


def write_eval_report(run_id: str, measure: str = "nDCG@10", settings: Settings | None = None) -> Path:
    """The HTML report of the evaluation ``run_id`` belongs to, under ``<warehouse>/reports/<eval_id>/``."""
    from tasks.evaluation.compare import eval_frames
    from tasks.evaluation.report import write_report

    settings = settings or get_settings()
    warehouse = Warehouse(settings.warehouse_dir)
    runs, metrics, query_metrics = eval_frames(warehouse, run_id)
    first = runs.row(0, named=True)
    return write_report(
        runs,
        metrics,
        query_metrics,
        warehouse.root / "reports" / first["eval_id"],
        title=f"{first['corpus']} / {first['testset']}",
        measure=measure,
        queries=query_texts(first, settings),
        warn_share=settings.fallback_warn_share,
    )


def query_texts(run: dict[str, Any], settings: Settings | None = None) -> dict[str, str] | None:
    """The query texts of a run's test set; ``None`` if it was removed since (reports go on without)."""
    from tasks.evaluation.testsets import load

    settings = settings or get_settings()
    try:
        return load(settings.testsets_dir, run["corpus"], run["testset"]).queries
    except (LookupError, ValueError):
        return None
