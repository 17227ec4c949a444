"""Relevance judges: an LLM answering one digit, and oracle / noisy-oracle judges for simulation studies.

A judge grades (query, document) pairs. The LLM judge follows ReDE-RF: one forward pass per pair, the
decision read from the first token's probabilities when the provider returns them. The oracle judges read
human qrels, so the methods that consume judgements (ReDE-RF, synthetic test sets) can be studied with a
judge of known accuracy: we measured that 10% wrong judgements already hurt ReDE-RF (see METHODS.md).

Votes: :func:`voter` gives a judge's ``i``-th voter (a judge that may answer differently: another
document cut and sampling for the LLM, other independent errors for the noisy oracle), and
:func:`aggregate` turns the voters' judgements of one pair into one. A :class:`JudgementMemo` keeps one
search's judgements, so a pipeline asks for a pair once, and caps the judge calls a query may make.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from storage.types import Qrels
from tasks.llm.client import Completion, LLMConfig, LLMError, Request

Pair = tuple[str, str, str, str]  # query_id, query text, doc_id, document text
Scale = Literal["graded", "binary"]
Aggregate = Literal["majority", "mean"]
_DIGIT = re.compile(r"\d")

_DEFINITIONS = {
    "graded": (
        "2 = highly relevant: the passage is dedicated to the query and contains the answer or the "
        "information the query asks for.\n"
        "1 = partly relevant: the passage is on the query's topic but answers it only in part.\n"
        "0 = not relevant: the passage is about something else, or shares only words with the query."
    ),
    "binary": (
        "1 = relevant: the passage is dedicated to the query and contains the answer or the information "
        "the query asks for.\n"
        "0 = not relevant: the passage is about something else, answers it only in part, or shares only "
        "words with the query."
    ),
}
# Versioned: change the text, add a version. "Choose the lower grade" tunes for precision, because false
# positives are what hurt the consumers of judgements (DESIGN.md, what we measured about judges).
PROMPTS = {
    ("judge-v1", scale): (
        "You are an expert search relevance assessor. Judge how relevant the passage is to the query.\n\n"
        "Query: {query}\n\nPassage: {passage}\n\n"
        f"Grades:\n{definitions}\n\n"
        "When unsure between two grades, choose the lower one. Answer with the digit only."
    )
    for scale, definitions in _DEFINITIONS.items()
}


@dataclass(frozen=True)
class Judgement:
    """One graded pair; ``grade`` is ``None`` when judging failed, and ``error`` says why."""

    query_id: str
    doc_id: str
    grade: int | None
    probability: float | None  # P(relevant), where the judge knows it
    raw: str | None = None
    error: str | None = None


class Judge(Protocol):
    """Grades (query, document) pairs; ``name`` identifies the judge and its configuration in provenance."""

    name: str

    def judge(self, pairs: Sequence[Pair]) -> list[Judgement]:
        """One judgement per pair, in order; a failed pair yields a judgement with an error, not an error."""
        ...


class Completer(Protocol):
    """What the LLM judge needs of :class:`tasks.llm.client.LLMClient`."""

    config: LLMConfig

    def complete_many(self, requests: Sequence[Request], purpose: str) -> list[Completion | LLMError]:
        """Answers in order, failures isolated."""
        ...


VOTE_TEMPERATURE = 0.7  # the LLM judge's votes after the first (see LLMJudge)


class LLMJudge:
    """A single-token judge: 0-2 (``graded``) or 0-1 (``binary``), at temperature 0.

    With first-token log-probabilities, the grade is the most probable candidate digit (renormalised over the
    candidates) and ``probability`` is P(relevant) (graded: P(1) + P(2)); without them, the first digit of
    the answer is the grade and ``probability`` stays ``None``.

    ``cache_unparseable``: an answer that gives no grade is cached like any other, so a re-run judges exactly
    as before (what a synthetic test set needs to rebuild the same set). ``False`` (the query-time methods'
    judge): it is not cached, and the next run asks again rather than replaying the failure.

    ``vote`` (see :meth:`vote`): 0 is the judge as described; vote ``i > 0`` reads a longer cut of the
    document (``max_doc_chars x (1 + i/2)``) and samples at :data:`VOTE_TEMPERATURE` with seed ``i``.
    Temperature alone would not do: the grade is read from the log-probabilities, which sampling leaves
    as they are, so a vote must change what the model reads. The seed keys each vote's cache entry.
    """

    def __init__(
        self,
        llm: Completer,
        *,
        scale: Scale = "graded",
        prompt_version: str = "judge-v1",
        max_doc_chars: int = 800,
        cache_unparseable: bool = True,
        vote: int = 0,
    ) -> None:
        if (prompt_version, scale) not in PROMPTS:
            known = ", ".join(f"{v}/{s}" for v, s in PROMPTS)
            raise ValueError(f"no judge prompt {prompt_version!r} for scale {scale!r}; known: {known}")
        self.llm, self.scale, self.prompt_version = llm, scale, prompt_version
        self.template = PROMPTS[prompt_version, scale]
        self.max_doc_chars = max_doc_chars
        self.cache_unparseable = cache_unparseable
        self.vote_index = vote
        self.candidates = ("0", "1", "2") if scale == "graded" else ("0", "1")
        self.name = f"llm:{llm.config.model}:{prompt_version}:{scale}" + (f":vote{vote}" if vote else "")

    def vote(self, index: int) -> LLMJudge:
        """The ``index``-th voter: this judge (0), or one reading a longer cut at a sampling temperature."""
        return LLMJudge(
            self.llm,
            scale=self.scale,
            prompt_version=self.prompt_version,
            max_doc_chars=self.max_doc_chars,
            cache_unparseable=self.cache_unparseable,
            vote=index,
        )

    def request(self, query_id: str, query: str, doc_id: str, passage: str) -> Request:
        """The one-token request for a pair (ids travel in the usage row, not in the cache key)."""
        cut = self.max_doc_chars + self.vote_index * self.max_doc_chars // 2
        prompt = self.template.format(query=query, passage=passage[:cut])
        return Request(
            [{"role": "user", "content": prompt}],
            temperature=VOTE_TEMPERATURE if self.vote_index else 0.0,
            seed=self.vote_index or None,
            max_tokens=1,
            # ReDE-RF compares the logits of "0" and "1" wherever they rank; 20, the most OpenAI returns,
            # keeps both in view when a small model would rather start its reply with a word.
            top_logprobs=20,
            context={"query_id": query_id, "doc_id": doc_id},
            accept=None if self.cache_unparseable else self._usable,
        )

    def judge(self, pairs: Sequence[Pair]) -> list[Judgement]:
        """Judge every pair through ``complete_many`` (batched, concurrent, cached)."""
        answers = self.llm.complete_many([self.request(*pair) for pair in pairs], purpose="judge")
        return [self._read(q, d, a) for (q, _, d, _), a in zip(pairs, answers, strict=True)]

    def _read(self, query_id: str, doc_id: str, answer: Completion | LLMError) -> Judgement:
        if isinstance(answer, LLMError):
            return Judgement(query_id, doc_id, None, None, None, str(answer))
        grade, probability = self._grade(answer)
        if grade is None:
            return Judgement(query_id, doc_id, None, None, answer.text, f"unparseable: {answer.text!r}")
        return Judgement(query_id, doc_id, grade, probability, answer.text)

    def _grade(self, answer: Completion) -> tuple[int | None, float | None]:
        """The grade and P(relevant) an answer gives; ``(None, None)`` when it gives no grade."""
        mass = dict.fromkeys(self.candidates, 0.0)
        for token, logprob in (answer.first_token_logprobs or {}).items():
            if token.strip() in mass:  # " 1" and "1" are the same answer to us
                mass[token.strip()] += math.exp(logprob)
        total = sum(mass.values())
        if total > 0:
            # Ties go to the lower grade: precision first.
            grade = max(self.candidates, key=lambda c: (mass[c], -int(c)))
            relevant = sum(mass[c] for c in self.candidates if c != "0")
            return int(grade), relevant / total
        digit = _DIGIT.search(answer.text)
        if digit is None or digit.group() not in self.candidates:
            return None, None
        return int(digit.group()), None

    def _usable(self, answer: Completion) -> bool:
        """Whether an answer gives a grade."""
        return self._grade(answer)[0] is not None


class OracleJudge:
    """Grades from human qrels (unjudged = 0): the perfect judge of simulation studies."""

    name = "oracle"

    def __init__(self, qrels: Qrels) -> None:
        self.qrels = qrels

    def judge(self, pairs: Sequence[Pair]) -> list[Judgement]:
        """The qrels grade of each pair."""
        return [self._judgement(q, d, self.qrels.get(q, {}).get(d, 0)) for q, _, d, _ in pairs]

    def vote(self, index: int) -> OracleJudge:
        """Every vote of the oracle is the oracle."""
        return self

    @staticmethod
    def _judgement(query_id: str, doc_id: str, grade: int) -> Judgement:
        return Judgement(query_id, doc_id, grade, 1.0 if grade > 0 else 0.0)


class NoisyOracleJudge(OracleJudge):
    """The oracle with each relevance decision flipped with probability ``1 - accuracy``.

    A flip is decided by (seed, query id, doc id) alone, so a pair gets the same answer in every run and in
    every batch. A non-relevant document flipped to relevant gets grade 1; a relevant one flipped gets 0.

    Votes (:meth:`vote`) each err with probability ``1 - accuracy``. With ``correlated = c``, a share ``c``
    of those errors is shared: on ``c x (1 - accuracy)`` of the pairs every vote errs (one draw per pair,
    the same for all votes), and each vote errs on the rest independently (a draw seeded per vote) with
    the probability that keeps its own accuracy at ``accuracy``. Real LLM errors are not independent, and
    independent noise would overstate what votes buy. Vote 0 with ``correlated=0`` is the judge as above.
    """

    def __init__(
        self, qrels: Qrels, accuracy: float, seed: int = 0, *, correlated: float = 0.0, vote: int = 0
    ) -> None:
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"accuracy must be between 0 and 1, got {accuracy}")
        if not 0.0 <= correlated <= 1.0:
            raise ValueError(
                f"correlated (the share of errors all votes share) must be in [0, 1], got {correlated}"
            )
        super().__init__(qrels)
        self.accuracy, self.seed, self.correlated, self.vote_index = accuracy, seed, correlated, vote
        error = 1.0 - accuracy
        self.shared_error = correlated * error
        # P(own error | no shared error), so that shared + (1 - shared) x own = 1 - accuracy.
        self.own_error = (
            (error - self.shared_error) / (1.0 - self.shared_error) if self.shared_error < 1 else 0.0
        )
        knobs = [f"accuracy={accuracy}", f"seed={seed}"]
        knobs += [f"correlated={correlated}"] if correlated else []
        knobs += [f"vote={vote}"] if vote else []
        self.name = f"noisy-oracle({', '.join(knobs)})"

    def vote(self, index: int) -> NoisyOracleJudge:
        """The ``index``-th voter: the same accuracy and shared errors, its own independent ones."""
        return NoisyOracleJudge(self.qrels, self.accuracy, self.seed, correlated=self.correlated, vote=index)

    def judge(self, pairs: Sequence[Pair]) -> list[Judgement]:
        """The qrels grade of each pair, or its flip."""
        own = f"{self.seed}:vote{self.vote_index}" if self.vote_index else f"{self.seed}"
        out = []
        for truth in super().judge(pairs):
            pair = f"{truth.query_id}:{truth.doc_id}"
            shared = random.Random(f"{self.seed}:shared:{pair}").random() < self.shared_error
            grade = truth.grade or 0
            if shared or random.Random(f"{own}:{pair}").random() >= 1.0 - self.own_error:
                grade = 0 if grade > 0 else 1
            out.append(self._judgement(truth.query_id, truth.doc_id, grade))
        return out


def voter(judge: Judge, index: int) -> Judge:
    """The ``index``-th voter of ``judge`` (0: the judge itself).

    Raises:
        ValueError: a vote after the first of a judge that gives one answer per pair (no ``vote`` method).
    """
    if index == 0:
        return judge
    vote = getattr(judge, "vote", None)
    if vote is None:
        raise ValueError(
            f"judge {judge.name!r} gives one answer per pair, so it cannot vote: use votes=1, or a judge "
            "with a vote(index) method (LLMJudge, OracleJudge, NoisyOracleJudge)"
        )
    voted: Judge = vote(index)
    return voted


def aggregate(votes: Sequence[Judgement], how: Aggregate) -> Judgement:
    """One judgement of a pair from its voters' judgements (of that pair, each vote once).

    ``majority``: the most common grade (ties to the lower: precision first), with P(relevant) the share
    of votes that found the pair relevant. ``mean``: P(relevant) is the mean of the votes' (their grade
    where they give none), relevant when above one half, graded as the mean grade of the relevant votes.
    Failed votes are left out; when every vote failed, so does the judgement (with the first error).
    """
    if len(votes) == 1:
        return votes[0]
    valid = [v for v in votes if v.grade is not None]
    first = votes[0]
    if not valid:
        return replace(first, error=f"every vote failed; first: {first.error}")
    grades = [v.grade or 0 for v in valid]
    if how == "majority":
        counts = Counter(grades)
        grade = max(counts, key=lambda g: (counts[g], -g))
        probability = sum(g > 0 for g in grades) / len(grades)
    else:
        probability = sum(v.probability if v.probability is not None else float(v.grade or 0) for v in valid)
        probability /= len(valid)
        positive = [g for g in grades if g > 0]
        grade = max(1, round(sum(positive) / len(positive))) if probability > 0.5 and positive else 0
    return Judgement(first.query_id, first.doc_id, grade, probability, raw=None)


def settled(votes: Sequence[Judgement], n: int, how: Aggregate) -> bool:
    """Whether ``votes``, the first of ``n``, already decide the aggregate: no later vote could change it.

    ``majority``: the leading grade leads by more than the votes left (a failed vote is spent and counts
    for neither side). ``mean``: only when all ``n`` are in, P(relevant) being a mean.
    """
    if how == "mean" or len(votes) >= n:
        return len(votes) >= n
    counts = [*sorted(Counter(v.grade for v in votes if v.grade is not None).values(), reverse=True), 0, 0]
    return counts[0] > counts[1] + (n - len(votes))


@dataclass
class JudgementMemo:
    """One search's judgements by (voter name, query id, doc id), and its per-query cap on judge calls.

    A pipeline (rerank over rede-rf, say) asks for a pair once and reuses the verdict; ``budget`` caps the
    judge calls a query may make in the whole search (``None``: no cap), see :meth:`capped`.
    """

    seen: dict[tuple[str, str, str], Judgement] = field(default_factory=dict)
    budget: int | None = None

    @contextmanager
    def capped(self, budget: int | None) -> Iterator[None]:
        """Within: the tighter of ``budget`` and an enclosing cap (an outer method's covers its first)."""
        outer = self.budget
        if budget is not None:
            self.budget = budget if outer is None else min(outer, budget)
        try:
            yield
        finally:
            self.budget = outer
