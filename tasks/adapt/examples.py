"""Training examples from a corpus's kept synthetic queries: who trains, who measures, what is negative.

QGen and Promptagator train a corpus's dual encoder on (synthetic query, source passage) pairs; GPL adds hard
negatives mined by the dense retriever itself; "Beyond Contrastive Learning" trains on graded relevance with
a list-wise loss (METHODS.md, "Part 2 seeds"). Here:

- training queries are the kept synthetic queries of documents as they are now, minus every query whose id or
  words are those of a query of a registered test set (the adapted model is scored on those sets, so a
  query trained on must never be one it is scored with), minus a held-out dev share (by query id hash);
- ``mnrl`` examples are (query, source passage, K hard negatives): the top of the corpus's own dense search,
  less the source document and any document the judge graded relevant (a false negative taught as negative
  is the fault GPL's pseudo labels exist to avoid);
- ``listwise`` examples are (query, source passage, K pooled passages) with the judge's grades as labels.

Human qrels are never read: a judge built from them (``OracleJudge``) is refused (:func:`refuse_oracle`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from storage.ids import canonical_json, content_hash
from tasks.llm.judge import Judge, OracleJudge, Pair
from tasks.methods.base import Ranking

log = logging.getLogger(__name__)

Loss = Literal["mnrl", "listwise"]
LOSSES: tuple[Loss, ...] = ("mnrl", "listwise")
SOURCE_GRADE = 2  # the source passage's grade when the judge could not grade it: it was written from it
_WORD = re.compile(r"\w+")


class OracleJudgeRefusedError(ValueError):
    """A judge built from human qrels was given to training, which must never learn from them."""


@dataclass(frozen=True)
class AdaptConfig:
    """How to adapt: the loss, its bounds and its data (``zsr adapt``'s options).

    Attributes:
        loss: ``mnrl`` (in-batch and hard negatives) or ``listwise`` (graded judge labels, needs a judge).
        max_steps: Optimiser steps at most (across resumed runs).
        max_minutes: Training minutes at most (across resumed runs); ``None``: no time bound.
        batch_size: Examples per step (in-batch negatives: the larger, the more negatives).
        hard_negatives: Mined passages per query besides the source one (mnrl: negatives; listwise: the
            graded list's length less one).
        pool_depth: Dense results searched per query to find the hard negatives in.
        dev_share: Share of the queries held out to measure nDCG@10 before and after (never trained on).
        learning_rate: Peak AdamW learning rate (warm-up over the first tenth of the steps).
        checkpoint_steps: Steps between checkpoints (a killed run resumes from the last one).
        seed: Seed of the dev split and of training.
    """

    loss: Loss = "mnrl"
    max_steps: int = 200
    max_minutes: float | None = None
    batch_size: int = 32
    hard_negatives: int = 1
    pool_depth: int = 10
    dev_share: float = 0.1
    learning_rate: float = 2e-5
    checkpoint_steps: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        """Refuse settings no training can run with, naming the option.

        Raises:
            ValueError: an unknown loss, or a bound, size or share out of range.
        """
        problems = [
            f"--loss {self.loss!r} (use {' or '.join(LOSSES)})" if self.loss not in LOSSES else "",
            f"--max-steps {self.max_steps} (at least 1)" if self.max_steps < 1 else "",
            f"--max-minutes {self.max_minutes} (above 0)"
            if self.max_minutes is not None and self.max_minutes <= 0
            else "",
            f"--batch-size {self.batch_size} (at least 2)" if self.batch_size < 2 else "",
            f"--hard-negatives {self.hard_negatives} (0 to pool depth {self.pool_depth})"
            if not 0 <= self.hard_negatives <= self.pool_depth
            else "",
            f"--hard-negatives {self.hard_negatives} (listwise grades a list: at least 1)"
            if self.loss == "listwise" and self.hard_negatives < 1
            else "",
            f"dev share {self.dev_share} (0 to 0.5)" if not 0 <= self.dev_share <= 0.5 else "",
            f"checkpoint steps {self.checkpoint_steps} (at least 1)" if self.checkpoint_steps < 1 else "",
        ]
        if any(problems):
            raise ValueError("cannot adapt with " + "; ".join(p for p in problems if p))

    def identity(self) -> dict[str, Any]:
        """What decides the model trained (everything but the time bound, which only cuts it short)."""
        return {k: v for k, v in self.__dict__.items() if k != "max_minutes"}


@dataclass
class Examples:
    """Training and dev data, and what was left out of it and why."""

    columns: dict[str, list[Any]]  # the training dataset's columns, in order (label last where graded)
    dev_queries: dict[str, str]  # held-out query id -> text
    dev_qrels: dict[str, dict[str, int]]  # held-out query id -> its source document (grade 1)
    train_queries: int
    excluded_testset: int = 0  # queries of a registered test set (by id or words)
    excluded_stale: int = 0  # written from an older version of a document, or from a deleted one
    dropped: dict[str, int] = field(default_factory=dict)  # training queries left out, by reason
    judged_relevant: int = 0  # mined candidates graded relevant or left ungraded (not taught as negatives)

    @property
    def data_hash(self) -> str:
        """Hash of every training column and the dev split: two trainings on the same data share it."""
        return content_hash(canonical_json([self.columns, self.dev_queries, self.dev_qrels]))[:16]


def refuse_oracle(judge: Judge | None) -> None:
    """Refuse a judge built from human qrels: training would learn the test set's answers.

    Raises:
        OracleJudgeRefusedError: ``judge`` is an :class:`OracleJudge` (or its noisy variant).
    """
    if isinstance(judge, OracleJudge):
        raise OracleJudgeRefusedError(
            f"judge {judge.name!r} grades from human qrels, which training must never read; adapt with the "
            "LLM judge (the default) or with none (--loss mnrl); oracle judges are for evaluation studies"
        )


def words(text: str) -> str:
    """A query's words, lower-cased: two queries that differ only in case and punctuation are one."""
    return " ".join(_WORD.findall(text.lower()))


def split_queries(
    rows: Iterable[Mapping[str, Any]],
    current: Mapping[str, str],
    testset_queries: Iterable[tuple[str, str]],
    dev_share: float,
    seed: int,
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], int, int]:
    """Kept, current synthetic queries split into (train, dev), and how many were left out as test / stale.

    ``current`` maps doc id to its content hash now; ``testset_queries`` holds every query (id, text) of
    the corpus's registered test sets. One query per distinct wording is kept (the lowest id), so a
    duplicate cannot sit on both sides of the split.
    """
    tests = list(testset_queries)
    test_ids, test_words = {q for q, _ in tests}, {words(t) for _, t in tests}
    train, dev, in_test, stale, seen = [], [], 0, 0, set()
    for row in sorted(rows, key=lambda r: r["query_id"]):
        key = words(row["text"] or "")
        if not row["kept"] or not key or key in seen:
            continue
        seen.add(key)
        if row["query_id"] in test_ids or key in test_words:
            in_test += 1
        elif current.get(row["doc_id"]) != row["doc_hash"]:
            stale += 1
        elif int(content_hash(str(seed), row["query_id"])[:8], 16) / 16**8 < dev_share:
            dev.append(row)
        else:
            train.append(row)
    return train, dev, in_test, stale


def build_examples(
    train: Sequence[Mapping[str, Any]],
    dev: Sequence[Mapping[str, Any]],
    passages: Callable[[set[str]], dict[str, str]],
    search: Callable[[Mapping[str, str], int], dict[str, Ranking]],
    config: AdaptConfig,
    judge: Judge | None,
) -> Examples:
    """The training columns of ``config.loss`` and the dev split.

    ``passages`` gives the text to train on per doc id (prefix included); ``search`` is the corpus's dense
    search (query id -> text, depth). ``judge`` grades each query's mined candidates (and, for listwise, its
    source passage): mnrl needs none, listwise does.

    Raises:
        OracleJudgeRefusedError: ``judge`` grades from human qrels.
        ValueError: listwise without a judge, or no query left to train on.
    """
    refuse_oracle(judge)
    if config.loss == "listwise" and judge is None:
        raise ValueError("--loss listwise trains on the judge's grades: give it a judge (the LLM judge)")
    queries = {r["query_id"]: r["text"] for r in train}
    source = {r["query_id"]: r["doc_id"] for r in train}
    ranked = search(queries, config.pool_depth + 1) if config.hard_negatives else {}
    candidates = {
        q: [d for d, _ in ranked.get(q, [])[: config.pool_depth + 1] if d != source[q]] for q in queries
    }
    if config.loss == "listwise":  # the source passage is graded too: the list holds it first
        candidates = {q: [source[q], *c[: config.hard_negatives]] for q, c in candidates.items()}
    texts = passages(set(source.values()) | {d for c in candidates.values() for d in c})
    grades = _grades(judge, queries, candidates, texts)
    examples = Examples(
        {},
        {r["query_id"]: r["text"] for r in dev},
        {r["query_id"]: {r["doc_id"]: 1} for r in dev},
        0,
    )
    rows = []
    for qid, text in queries.items():
        graded = grades.get(qid, {})
        if config.loss == "mnrl":
            # Grade 0, or not judged at all; a failed judgement (None) might hide a relevant document.
            negatives = [d for d in candidates[qid] if graded.get(d, 0) == 0]
            examples.judged_relevant += len(candidates[qid]) - len(negatives)
            if len(negatives) < config.hard_negatives:
                examples.dropped["too few negatives"] = examples.dropped.get("too few negatives", 0) + 1
                continue
            rows.append([text, texts[source[qid]], *(texts[d] for d in negatives[: config.hard_negatives])])
        else:
            listed = candidates[qid]
            source_grade = graded.get(listed[0])
            labels = [SOURCE_GRADE if source_grade is None else source_grade]
            labels += [g for g in (graded.get(d) for d in listed[1:]) if g is not None]
            if len(labels) <= config.hard_negatives:
                reason = "ungraded candidates" if len(listed) > len(labels) else "too few candidates"
                examples.dropped[reason] = examples.dropped.get(reason, 0) + 1
                continue
            rows.append([text, *(texts[d] for d in listed), [float(g) for g in labels]])
    if not rows:
        raise ValueError(
            f"no synthetic query is left to train on ({len(queries)} after the test sets and the dev split; "
            f"dropped: {examples.dropped or 'none'}); synthesize more (`zsr synthesize`) or lower "
            "--hard-negatives"
        )
    names = ["anchor", "positive", *(f"negative_{i}" for i in range(1, config.hard_negatives + 1))]
    if config.loss == "listwise":
        names = ["anchor", *(f"passage_{i}" for i in range(config.hard_negatives + 1)), "label"]
    examples.columns = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    examples.train_queries = len(rows)
    return examples


def _grades(
    judge: Judge | None,
    queries: Mapping[str, str],
    candidates: Mapping[str, Sequence[str]],
    texts: Mapping[str, str],
) -> dict[str, dict[str, int | None]]:
    """The judge's grade of every (query, candidate) pair; ``None`` where judging failed."""
    if judge is None:
        return {}
    pairs: list[Pair] = [(q, queries[q], d, texts[d]) for q, docs in candidates.items() for d in docs]
    grades: dict[str, dict[str, int | None]] = {}
    for judgement in judge.judge(pairs):
        grades.setdefault(judgement.query_id, {})[judgement.doc_id] = judgement.grade
    return grades
