"""Reading BEIR test sets and scoring runs with ir-measures (never hand-written metrics)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import ir_measures

from storage.types import Qrels, Run

DEFAULT_MEASURES = ("nDCG@10", "R@100", "RR@10", "AP@100", "P@10")


def load_queries(path: Path) -> dict[str, str]:
    """``queries.jsonl`` as ``{query_id: text}``."""
    with path.open(encoding="utf-8") as lines:
        return {str(q["_id"]): q["text"] for q in map(json.loads, filter(str.strip, lines))}


def load_qrels(path: Path) -> Qrels:
    """A BEIR ``qrels/<split>.tsv`` (header line, then query-id, corpus-id, score) as nested dicts."""
    qrels: Qrels = {}
    with path.open(encoding="utf-8") as lines:
        next(lines, None)
        for line in filter(str.strip, lines):
            qid, doc_id, score = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[doc_id] = int(score)
    return qrels


def evaluate(run: Run, qrels: Qrels, measures: Iterable[str] = DEFAULT_MEASURES) -> dict[str, float]:
    """Aggregate scores of ``run`` over the queries of ``qrels`` (ir-measures' names as keys)."""
    parsed = [ir_measures.parse_measure(m) for m in measures]
    # A judged query the run has nothing for still counts (as zero), as trec_eval -c does.
    full_run = {qid: run.get(qid, {}) or {"": 0.0} for qid in qrels}
    scores = ir_measures.calc_aggregate(parsed, qrels, full_run)
    return {str(m): float(scores[m]) for m in parsed}
