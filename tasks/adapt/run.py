"""``zsr adapt``: fine-tune a corpus's embedding model on its synthetic queries and publish the version.

The version name is content-derived (loss and a hash of the base space, the training data and the options
that decide the model), so the same command run again finds its own work: a published version is returned
as it is, and a killed training resumes from its last checkpoint. Dev figures (nDCG@10, R@100 of the held-out
synthetic queries, their source document the relevant one) are measured for the base and the adapted model
over every document of the corpus, encoded whole (title and text), not through the corpus's index: its
query views hold the synthetic queries themselves, which would find their documents by rote.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from storage.corpus_store import CorpusStore
from storage.ids import canonical_json, content_hash
from storage.models import ModelManifest, publish, read_manifest, version_dir, work_dir
from tasks.adapt.examples import AdaptConfig, Examples, build_examples, refuse_oracle, split_queries
from tasks.adapt.train import StepProgress, TrainOutcome, train
from tasks.evaluation.measures import evaluate
from tasks.ingest.embed import SENTENCE_TRANSFORMERS, check_revision, resolve_model_path
from tasks.llm.judge import Judge
from tasks.methods.base import Ranking

log = logging.getLogger(__name__)

DEV_MEASURES = ("nDCG@10", "R@100")
DEV_DEPTH = 100


@dataclass
class AdaptReport:
    """What ``zsr adapt`` did: the version's manifest and folder, and how this run got there."""

    manifest: ModelManifest
    path: str
    reused: bool  # the version was published before; nothing was trained
    resumed_from: int | None = None  # checkpoint step this run resumed from
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, training loss) as logged


def adapt(
    store: CorpusStore,
    corpus: str,
    home: Path,
    config: AdaptConfig,
    *,
    search: Callable[[Mapping[str, str], int], dict[str, Ranking]],
    testset_queries: Iterable[tuple[str, str]],
    judge: Judge | None = None,
    device: str | None = None,
    progress: StepProgress | None = None,
) -> AdaptReport:
    """Train (or resume, or find) the adapted model of ``corpus`` and publish it under ``home``.

    ``search`` is the corpus's dense search (query id -> text, depth) that mines hard negatives;
    ``testset_queries`` holds every (id, text) query of the corpus's test sets, none of which is trained on.

    Raises:
        OracleJudgeRefusedError: ``judge`` grades from human qrels.
        ModelMismatchError: the model installed now is not the revision the corpus was indexed with.
        ValueError: the corpus's backend is not sentence-transformers, or no query is left to train on.
    """
    refuse_oracle(judge)
    space = store.registry.corpus(corpus).space
    if space.backend != SENTENCE_TRANSFORMERS:
        raise ValueError(
            f"corpus {corpus!r} runs its model with backend {space.backend!r}; zsr adapt fine-tunes "
            f"{SENTENCE_TRANSFORMERS} models: re-ingest it with ZSR_EMBEDDING_BACKEND={SENTENCE_TRANSFORMERS}"
        )
    check_revision(space)
    current = store.documents.hashes(corpus)
    train_rows, dev_rows, in_test, stale = split_queries(
        store.synthetic.rows(corpus), current, testset_queries, config.dev_share, config.seed
    )

    if not train_rows:
        raise ValueError(
            f"corpus {corpus!r} has no synthetic query to train on ({len(dev_rows)} held out for dev, "
            f"{in_test} left out as queries of its test sets, {stale} written from older documents); "
            f"write some first: `zsr synthesize --corpus {corpus}` (--generator extractive needs no LLM)"
        )

    def passages(doc_ids: set[str]) -> dict[str, str]:
        rows = store.documents.fetch(corpus, sorted(doc_ids), ["doc_id", "title", "text"])
        return {
            r["doc_id"]: space.passage_prefix + (f"{r['title']}\n{r['text']}" if r["title"] else r["text"])
            for r in rows
        }

    examples = build_examples(train_rows, dev_rows, passages, search, config, judge)
    examples.excluded_testset, examples.excluded_stale = in_test, stale
    identity = canonical_json([space.to_json(), examples.data_hash, config.identity()])
    version = f"{config.loss}-{content_hash(identity)[:8]}"
    published = read_manifest(version_dir(home, corpus, version))
    if published is not None:
        log.info("adapt %s: version %s is published already", corpus, version)
        return AdaptReport(published, str(version_dir(home, corpus, version)), reused=True)

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_model_path(space.model), device=device, local_files_only=True)
    corpus_texts = passages(set(current))
    dev = {"base": dev_figures(model, examples, corpus_texts, space.query_prefix)}
    work = work_dir(home, corpus, version)
    work.mkdir(parents=True, exist_ok=True)
    outcome = train(model, examples.columns, config, work, device=device, progress=progress)
    dev["adapted"] = dev_figures(model, examples, corpus_texts, space.query_prefix)
    staged = work / "model"
    model.save(str(staged))
    manifest = _manifest(corpus, version, space, config, examples, outcome, dev, judge)
    path = publish(staged, manifest, home)
    shutil.rmtree(work)  # its checkpoints served their purpose: the version is complete
    return AdaptReport(manifest, str(path), False, outcome.resumed_from, outcome.losses)


def dev_figures(
    model: Any, examples: Examples, passages: Mapping[str, str], query_prefix: str
) -> dict[str, float]:
    """nDCG@10 and R@100 of the dev queries, ranking every passage by cosine; empty without dev queries."""
    if not examples.dev_queries:
        return {}
    doc_ids = sorted(passages)
    qids = sorted(examples.dev_queries)

    def encode(texts: list[str]) -> np.ndarray:
        vectors = model.encode(
            texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors)

    docs = encode([passages[d] for d in doc_ids])
    queries = encode([query_prefix + examples.dev_queries[q] for q in qids])
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :DEV_DEPTH]
    rankings = {q: [(doc_ids[j], float(scores[i, j])) for j in top[i]] for i, q in enumerate(qids)}
    return evaluate(rankings, examples.dev_qrels, DEV_MEASURES)


def _manifest(
    corpus: str,
    version: str,
    space: Any,
    config: AdaptConfig,
    examples: Examples,
    outcome: TrainOutcome,
    dev: dict[str, dict[str, float]],
    judge: Judge | None,
) -> ModelManifest:
    return ModelManifest(
        corpus=corpus,
        version=version,
        base_model=space.model,
        base_revision=space.revision,
        query_prefix=space.query_prefix,
        passage_prefix=space.passage_prefix,
        loss=config.loss,
        data_hash=examples.data_hash,
        train_queries=examples.train_queries,
        dev_queries=len(examples.dev_queries),
        batch_size=config.batch_size,
        hard_negatives=config.hard_negatives,
        steps=outcome.steps,
        max_steps=config.max_steps,
        seconds=round(outcome.seconds, 1),
        stopped=outcome.stopped,
        dev=dev,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        extra={
            "judge": judge.name if judge is not None else None,
            "excluded_testset_queries": examples.excluded_testset,
            "excluded_stale_queries": examples.excluded_stale,
            "dropped": examples.dropped,
            "judged_relevant_candidates": examples.judged_relevant,
            "learning_rate": config.learning_rate,
        },
    )
