"""Training data of ``zsr adapt`` (tasks/adapt/examples.py): who trains, who is held out, what is negative."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from tasks.adapt.examples import (
    AdaptConfig,
    OracleJudgeRefusedError,
    build_examples,
    refuse_oracle,
    split_queries,
)
from tasks.llm.judge import Judgement, NoisyOracleJudge, OracleJudge, Pair


def row(qid: str, doc: str, text: str, kept: bool = True, doc_hash: str | None = None) -> dict:
    return {"query_id": qid, "doc_id": doc, "text": text, "kept": kept, "doc_hash": doc_hash or f"h-{doc}"}


DOCS = [f"d{i}" for i in range(8)]
CURRENT = {d: f"h-{d}" for d in DOCS}


class GradesJudge:
    """Grades from a fixed table (unlisted pairs: 0); records the pairs it was asked."""

    name = "table"

    def __init__(self, grades: Mapping[tuple[str, str], int | None]) -> None:
        self.grades, self.asked = grades, []

    def judge(self, pairs: Sequence[Pair]) -> list[Judgement]:
        self.asked += [(q, d) for q, _, d, _ in pairs]
        return [Judgement(q, d, self.grades.get((q, d), 0), None) for q, _, d, _ in pairs]


def passages(doc_ids):
    return {d: f"passage of {d}" for d in doc_ids}


def search_all(queries, k):
    """Every query ranks d0, d1, ... d7 in order."""
    return {q: [(d, 1.0 - i / 10) for i, d in enumerate(DOCS[:k])] for q in queries}


def test_training_queries_never_include_a_test_set_query_by_id_or_by_words():
    rows = [
        row("a", "d0", "What is the lift of a wing?"),
        row("b", "d1", "heat transfer in a boundary layer"),
        row("c", "d2", "shock waves at mach 3"),
        row("human-1", "d3", "a query the test set holds by id"),
    ]
    tests = [("human-1", "something else"), ("h2", "what is the LIFT of a wing")]
    train, dev, in_test, stale = split_queries(rows, CURRENT, tests, dev_share=0.0, seed=0)

    assert [r["query_id"] for r in train] == ["b", "c"]
    assert (dev, in_test, stale) == ([], 2, 0)


def test_rejected_stale_and_duplicate_queries_are_left_out_and_the_dev_split_is_disjoint():
    rows = [row(f"q{i:02}", DOCS[i % 8], f"query number {i}") for i in range(40)]
    rows += [
        row("r", "d0", "rejected by a filter", kept=False),
        row("s", "d1", "written from an older version", doc_hash="old"),
        row("z", "d2", "Query number 3!"),  # the words of q03: one of the two only
    ]
    train, dev, _, stale = split_queries(rows, CURRENT, [], dev_share=0.25, seed=0)
    train_ids, dev_ids = {r["query_id"] for r in train}, {r["query_id"] for r in dev}

    assert stale == 1 and not train_ids & dev_ids
    assert train_ids | dev_ids == {f"q{i:02}" for i in range(40)}
    assert 4 <= len(dev_ids) <= 16  # about a quarter, by hash
    assert split_queries(rows, CURRENT, [], 0.25, 0)[1] == dev  # deterministic


def test_hard_negatives_exclude_the_positive_and_documents_the_judge_graded_relevant():
    train = [row("q1", "d1", "first"), row("q2", "d0", "second")]
    judge = GradesJudge({("q1", "d0"): 2, ("q1", "d2"): 1, ("q2", "d1"): 0})
    config = AdaptConfig(hard_negatives=2, pool_depth=5)
    examples = build_examples(train, [], passages, search_all, config, judge)

    assert list(examples.columns) == ["anchor", "positive", "negative_1", "negative_2"]
    assert examples.columns["positive"] == ["passage of d1", "passage of d0"]
    # q1: d0 (graded 2) and d2 (graded 1) are relevant, d1 is the positive; q2: d0 is the positive
    assert examples.columns["negative_1"] == ["passage of d3", "passage of d1"]
    assert examples.columns["negative_2"] == ["passage of d4", "passage of d2"]
    assert examples.judged_relevant == 2
    assert ("q1", "d1") not in judge.asked and ("q2", "d0") not in judge.asked  # positives need no grade


def test_without_a_judge_only_the_positive_is_excluded():
    examples = build_examples([row("q1", "d1", "first")], [], passages, search_all, AdaptConfig(), None)

    assert examples.columns["negative_1"] == ["passage of d0"]


def test_listwise_lists_the_source_first_with_the_judges_grades():
    train = [row("q1", "d2", "first")]
    judge = GradesJudge({("q1", "d2"): 2, ("q1", "d0"): 1})
    examples = build_examples(
        train, [], passages, search_all, AdaptConfig(loss="listwise", hard_negatives=3), judge
    )

    assert list(examples.columns) == ["anchor", "passage_0", "passage_1", "passage_2", "passage_3", "label"]
    assert [examples.columns[f"passage_{i}"][0] for i in range(4)] == [
        "passage of d2",
        "passage of d0",
        "passage of d1",
        "passage of d3",
    ]
    assert examples.columns["label"] == [[2.0, 1.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="give it a judge"):
        build_examples(train, [], passages, search_all, AdaptConfig(loss="listwise"), None)


@pytest.mark.parametrize("judge", [OracleJudge({"q1": {"d1": 1}}), NoisyOracleJudge({}, 0.9)])
def test_an_oracle_judge_built_from_human_qrels_is_refused(judge):
    with pytest.raises(OracleJudgeRefusedError, match="human qrels"):
        refuse_oracle(judge)
    with pytest.raises(OracleJudgeRefusedError):
        build_examples([row("q1", "d1", "x")], [], passages, search_all, AdaptConfig(), judge)


def test_the_data_hash_follows_the_data():
    def hashed(text):
        return build_examples(
            [row("q1", "d1", text)], [], passages, search_all, AdaptConfig(), None
        ).data_hash

    assert hashed("first") == hashed("first") != hashed("other")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"loss": "infonce"}, "--loss"),
        ({"max_steps": 0}, "--max-steps"),
        ({"max_minutes": 0}, "--max-minutes"),
        ({"batch_size": 1}, "--batch-size"),
        ({"hard_negatives": 11}, "--hard-negatives"),
        ({"loss": "listwise", "hard_negatives": 0}, "listwise"),
    ],
)
def test_impossible_settings_are_refused_by_name(options, named):
    with pytest.raises(ValueError, match=named):
        AdaptConfig(**options)
