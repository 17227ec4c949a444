"""Reading BEIR files and scoring rankings with ir-measures (never hand-written metrics)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

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


def parse_measures(names: Iterable[str]) -> list[Any]:
    """ir-measures measure objects for ``names``; an unknown name is one clear error naming all bad ones."""
    parsed, bad = [], []
    for name in names:
        try:
            measure = ir_measures.parse_measure(name)
        except (ValueError, NameError, SyntaxError, TypeError):
            bad.append(name)
            continue
        cutoff = measure.params.get("cutoff")
        if cutoff is not None and (not isinstance(cutoff, int) or cutoff < 1):
            # pytrec_eval aborts the whole process on a cutoff below 1 (after all retrieval has run).
            raise ValueError(f"measure {name!r}: the cutoff must be a whole number >= 1 (e.g. nDCG@10)")
        parsed.append(measure)
    if bad:
        raise ValueError(
            f"unknown measure(s) {', '.join(map(repr, bad))}; use ir-measures names such as "
            f"{', '.join(DEFAULT_MEASURES)} (see https://ir-measur.es/en/latest/measures.html)"
        )
    if not parsed:
        raise ValueError("no measures given")
    return parsed


def rank_scores(rankings: Mapping[str, Sequence[tuple[str, float]]], qrels: Qrels) -> Run:
    """The run ir-measures scores, with scores derived from our ranks.

    trec_eval re-sorts by score and breaks ties on doc id *descending*, which would reorder our ties
    (broken on doc id ascending); strictly decreasing scores make it score the ranking we return. Judged
    queries without any hit get a placeholder, so they count as zero instead of being dropped.
    """
    run: Run = {}
    for qid in qrels:
        ranking = rankings.get(qid, ())
        run[qid] = {doc_id: float(len(ranking) - i) for i, (doc_id, _) in enumerate(ranking)} or {"": 0.0}
    return run


def score_queries(
    rankings: Mapping[str, Sequence[tuple[str, float]]],
    qrels: Qrels,
    measures: Iterable[str] = DEFAULT_MEASURES,
) -> tuple[dict[str, float], list[tuple[str, str, float]]]:
    """Aggregate values by measure, and ``(query_id, measure, value)`` per judged query."""
    parsed = parse_measures(measures)
    run = rank_scores(rankings, qrels)
    evaluator = ir_measures.evaluator(parsed, qrels)
    per_query = [(m.query_id, str(m.measure), float(m.value)) for m in evaluator.iter_calc(run)]
    values = {str(m): float(v) for m, v in evaluator.calc_aggregate(run).items()}
    return {str(m): values[str(m)] for m in parsed}, per_query  # in the order asked for


def evaluate(
    rankings: Mapping[str, Sequence[tuple[str, float]]],
    qrels: Qrels,
    measures: Iterable[str] = DEFAULT_MEASURES,
) -> dict[str, float]:
    """Aggregate scores of ranked results over the judged queries (ir-measures' names as keys)."""
    return score_queries(rankings, qrels, measures)[0]
