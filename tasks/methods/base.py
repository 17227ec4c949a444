"""What every retrieval method shares: rankings, per-query traces, the LLM meter, and the searcher's face.

A method is a parameter model and a runner (see :mod:`tasks.methods.registry`). A runner gets a
:class:`Retriever` (in practice the :class:`~tasks.methods.search.Searcher`), so the method families import
this module only and never the searcher: the arrows point from the searcher to the registry to the families
to here.

Every ranking breaks ties on ``(-score, doc_id)`` so results are deterministic across runs and platforms
(as pyserini does). A method records what each query cost (LLM calls, tokens, cache hits), the query vector
it searched with, and whether it fell back and why, in a :class:`QueryTrace`. An LLM that fails or answers
junk for a query degrades that query to the method's fallback; it never fails the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Annotated, Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from storage.lattice import Tree
from tasks.llm.client import Completion, LLMConfig, LLMError, Request
from tasks.llm.judge import Completer, Judge, JudgementMemo

Ranking = list[tuple[str, float]]
FROZEN = ConfigDict(extra="forbid", frozen=True)  # every parameter model: unknown keys refused, hashable


class _MethodString:
    """Marks a parameter whose value is itself a method string (``first``); see :data:`MethodSpec`."""

    def __repr__(self) -> str:
        return "MethodSpec"


_METHOD_STRING = _MethodString()
# A parameter that names another method, with its own parameters: ``first=hybrid(fusion=rrf)``. The registry
# parses and validates it recursively and stores it in its canonical spelling.
MethodSpec = Annotated[str, _METHOD_STRING]


def method_fields(params: type[BaseModel]) -> list[str]:
    """The parameters of a parameter model that are typed :data:`MethodSpec`, in declaration order."""
    return [name for name, field in params.model_fields.items() if _METHOD_STRING in field.metadata]


def rank(scores: Mapping[str, float], k: int | None = None) -> Ranking:
    """Sort by ``(-score, doc_id)``, the deterministic tie-break, and keep the top ``k``."""
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return ordered if k is None else ordered[:k]


@dataclass
class QueryTrace:
    """What one query cost and how its method ran; ``fallback`` is ``"<what ran instead>: <why>"``."""

    llm_calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cache_hits: int = 0
    llm_errors: int = 0  # LLM answers that failed or could not be used (junk, empty, unparseable)
    judge_calls: int = 0  # judgements asked for (each vote one; a pair judged earlier in the search: none)
    fallback: str | None = None
    llm: str | None = None  # the model that answered, where one was called
    judge: str | None = None
    vector: np.ndarray | None = None  # the vector of the final dense search, where the method builds one

    def add_cost(self, other: QueryTrace) -> None:
        """Add another trace's counts (calls, tokens, cache hits) to this one."""
        for name in ("llm_calls", "tokens_in", "tokens_out", "cache_hits"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def counts(self) -> dict[str, Any]:
        """The per-query columns of the warehouse's ``queries`` table."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("llm", "judge", "vector")
        }


class LLMUnavailableError(RuntimeError):
    """A method needs an LLM and the searcher has none."""


class Meter:
    """A :class:`~tasks.llm.judge.Completer` that counts calls, tokens and cache hits per query id.

    Requests name their query in ``context["query_id"]`` (the LLM judge's do too), so a judge built over
    ``searcher.llm`` is metered like the methods' own calls.
    """

    def __init__(self, inner: Completer) -> None:
        self.inner = inner
        self.config: LLMConfig = inner.config
        self._costs: dict[str, QueryTrace] = {}

    def complete_many(self, requests: Sequence[Request], purpose: str) -> list[Completion | LLMError]:
        """Answer through the wrapped client, counting each answer against its query."""
        answers = self.inner.complete_many(requests, purpose)
        for request, answer in zip(requests, answers, strict=True):
            cost = self._costs.setdefault(str(request.context.get("query_id", "")), QueryTrace())
            cost.llm_calls += 1
            if isinstance(answer, Completion):
                cost.tokens_in += answer.prompt_tokens
                cost.tokens_out += answer.completion_tokens
                cost.cache_hits += answer.cache_hit
        return answers

    def take(self) -> dict[str, QueryTrace]:
        """The counts since the last call, by query id."""
        costs, self._costs = self._costs, {}
        return costs


class Retriever(Protocol):
    """What a runner may ask of the searcher that runs it: other methods, the index, the LLM and the judge."""

    @property
    def llm(self) -> Meter:
        """The LLM, metered per query; raises :class:`LLMUnavailableError` when there is none."""
        ...

    @property
    def judge(self) -> Judge | None:
        """The relevance judge; ``None``: judge with ReDE-RF's single-token judge over :attr:`llm`."""
        ...

    @property
    def judgements(self) -> JudgementMemo:
        """The current search's judgements, so a pipeline judges a pair once, and its judge-call cap."""
        ...

    def trace(self, query_id: str) -> QueryTrace:
        """The trace of ``query_id`` in the current search, created on first use."""
        ...

    def retrieve(self, queries: Mapping[str, str], method: str, k: int) -> dict[str, Ranking]:
        """Top ``k`` documents of each query by another method (a first stage), into the same traces."""
        ...

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        """Texts embedded with the corpus's model, as queries or as passages."""
        ...

    def compensated(self, texts: list[str]) -> np.ndarray:
        """Query texts embedded by the model of the corpus's pending upgrade, mapped into its active space."""
        ...

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int,
        kinds: tuple[str, ...] = ("chunk",),
        *,
        whiten: bool = False,
        dims: int | None = None,
    ) -> list[Ranking]:
        """Top ``k`` documents for each query vector, a document scoring as its best view of ``kinds``.

        ``whiten``: in the corpus's whitened space, keeping ``dims`` dimensions (``None``: all).
        """
        ...

    def search_text(self, texts: list[str], k: int, *, expanded: bool = False) -> list[Ranking]:
        """bm25 over each text; ``expanded``: over documents expanded with their synthetic queries."""
        ...

    def search_terms(self, weighted: Sequence[Mapping[str, float]], k: int) -> list[Ranking]:
        """bm25 over weighted words, one ``{word: weight}`` a query."""
        ...

    def search_promptreps(
        self, texts: list[str], k: int, *, dense: bool, sparse: bool
    ) -> tuple[list[Ranking], list[Ranking]]:
        """Top ``k`` documents of each text by its PromptReps (dense, sparse); ``[]`` for one not asked."""
        ...

    def document_vectors(self, doc_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Each document's stored vector: the normalised mean of its chunk vectors."""
        ...

    def document_texts(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """Title and text of each document, as a judge reads them."""
        ...

    def lattice(self) -> Tree:
        """The corpus's LATTICE tree; raises :class:`LookupError` when none was built."""
        ...


def dense_from(retriever: Retriever, ids: list[str], vectors: np.ndarray, k: int) -> dict[str, Ranking]:
    """Dense search with query vectors a method built, each recorded as its query's trace vector."""
    for qid, vector in zip(ids, vectors, strict=True):
        retriever.trace(qid).vector = vector
    return dict(zip(ids, retriever.search_vectors(vectors, k), strict=True))


def stack(vectors: Mapping[str, np.ndarray], doc_ids: Sequence[str], dim: int) -> np.ndarray:
    """The stored vectors of ``doc_ids`` as rows; a document deleted since the first stage drops out."""
    found = [vectors[d] for d in doc_ids if d in vectors]
    return np.vstack(found) if found else np.empty((0, dim), np.float32)


def mean_vector(query: np.ndarray, others: np.ndarray) -> np.ndarray:
    """``(q + sum others) / (n + 1)``: HyDE's and ReDE-RF's equal-weight mean, the query included."""
    return np.vstack([query[None, :], others]).mean(axis=0)
