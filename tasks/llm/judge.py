"""Relevance judges: an LLM answering one digit, and oracle / noisy-oracle judges for simulation studies.

A judge grades (query, document) pairs. The LLM judge follows ReDE-RF: one forward pass per pair, the
decision read from the first token's probabilities when the provider returns them. The oracle judges read
human qrels, so the methods that consume judgements (ReDE-RF, synthetic test sets) can be studied with a
judge of known accuracy: we measured that 10% wrong judgements already hurt ReDE-RF (see METHODS.md).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from storage.types import Qrels
from tasks.llm.client import Completion, LLMConfig, LLMError, Request

Pair = tuple[str, str, str, str]  # query_id, query text, doc_id, document text
Scale = Literal["graded", "binary"]
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


class LLMJudge:
    """A single-token judge: 0-2 (``graded``) or 0-1 (``binary``), at temperature 0.

    With first-token log-probabilities, the grade is the most probable candidate digit (renormalised over the
    candidates) and ``probability`` is P(relevant) (graded: P(1) + P(2)); without them, the first digit of
    the answer is the grade and ``probability`` stays ``None``.

    ``cache_unparseable``: an answer that gives no grade is cached like any other, so a re-run judges exactly
    as before (what a synthetic test set needs to rebuild the same set). ``False`` (the query-time methods'
    judge): it is not cached, and the next run asks again rather than replaying the failure.
    """

    def __init__(
        self,
        llm: Completer,
        *,
        scale: Scale = "graded",
        prompt_version: str = "judge-v1",
        max_doc_chars: int = 800,
        cache_unparseable: bool = True,
    ) -> None:
        if (prompt_version, scale) not in PROMPTS:
            known = ", ".join(f"{v}/{s}" for v, s in PROMPTS)
            raise ValueError(f"no judge prompt {prompt_version!r} for scale {scale!r}; known: {known}")
        self.llm, self.scale, self.prompt_version = llm, scale, prompt_version
        self.template = PROMPTS[prompt_version, scale]
        self.max_doc_chars = max_doc_chars
        self.cache_unparseable = cache_unparseable
        self.candidates = ("0", "1", "2") if scale == "graded" else ("0", "1")
        self.name = f"llm:{llm.config.model}:{prompt_version}:{scale}"

    def request(self, query_id: str, query: str, doc_id: str, passage: str) -> Request:
        """The one-token request for a pair (ids travel in the usage row, not in the cache key)."""
        prompt = self.template.format(query=query, passage=passage[: self.max_doc_chars])
        return Request(
            [{"role": "user", "content": prompt}],
            temperature=0.0,
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

    @staticmethod
    def _judgement(query_id: str, doc_id: str, grade: int) -> Judgement:
        return Judgement(query_id, doc_id, grade, 1.0 if grade > 0 else 0.0)


class NoisyOracleJudge(OracleJudge):
    """The oracle with each relevance decision flipped with probability ``1 - accuracy``.

    A flip is decided by (seed, query id, doc id) alone, so a pair gets the same answer in every run and in
    every batch. A non-relevant document flipped to relevant gets grade 1; a relevant one flipped gets 0.
    """

    def __init__(self, qrels: Qrels, accuracy: float, seed: int = 0) -> None:
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"accuracy must be between 0 and 1, got {accuracy}")
        super().__init__(qrels)
        self.accuracy, self.seed = accuracy, seed
        self.name = f"noisy-oracle(accuracy={accuracy}, seed={seed})"

    def judge(self, pairs: Sequence[Pair]) -> list[Judgement]:
        """The qrels grade of each pair, or its flip."""
        out = []
        for truth in super().judge(pairs):
            grade = truth.grade or 0
            if random.Random(f"{self.seed}:{truth.query_id}:{truth.doc_id}").random() >= self.accuracy:
                grade = 0 if grade > 0 else 1
            out.append(self._judgement(truth.query_id, truth.doc_id, grade))
        return out
