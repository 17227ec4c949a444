"""The one registry of retrieval methods, and the method strings that name them.

Each method is one :class:`MethodEntry` in :data:`REGISTRY`: its name, its parameter model (whose docstring
and field descriptions ``zsr methods`` lists), its runner, and whether it calls the LLM. Adding a method is
one entry there; the searcher, the CLI listing, the flows' form and ``llm`` tag and run provenance read it.

A method string is ``name`` or ``name(key=value, ...)`` (the syntax: :mod:`tasks.methods.grammar`). A
parameter typed :data:`~tasks.methods.base.MethodSpec` (``first``) takes a method string itself, parameters
and all: ``rerank(first=hybrid(fusion=rrf), depth=30)``. ``str(parse_method(spec))`` is the canonical
spelling stored in runs: parameters at their defaults left out, the others sorted by name, nested methods
canonical too; the parameters' JSON holds a nested method as its canonical string (a run's ``params``
column holds the whole tree instead: :func:`tasks.evaluation.provenance.method_tree`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from tasks.methods import feedback, first_stage, generative, judged, lattice, promptreps
from tasks.methods.base import Ranking, Retriever, method_fields
from tasks.methods.grammar import Arg, Call, MethodSpecError, column, fault, parse_call, split_methods

__all__ = [
    "REGISTRY",
    "Method",
    "MethodEntry",
    "MethodSpecError",
    "calls_llm",
    "parse_method",
    "split_methods",
]

P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True)
class MethodEntry(Generic[P]):
    """A retrieval method: ``run(retriever, params, queries, k)`` ranks each query, by query id."""

    name: str
    params: type[P]
    run: Callable[[Retriever, P, Mapping[str, str], int], dict[str, Ranking]]
    calls_llm: bool  # itself, at query time; a method nested in its parameters answers for itself

    @property
    def summary(self) -> str:
        """The first paragraph of the parameter model's docstring, on one line, for listings."""
        return inspect.cleandoc(self.params.__doc__ or "").split("\n\n")[0].replace("\n", " ")


REGISTRY: Mapping[str, MethodEntry[Any]] = {
    entry.name: entry
    for entry in (
        MethodEntry("dense", first_stage.DenseParams, first_stage.retrieve_dense, calls_llm=False),
        MethodEntry("bm25", first_stage.Bm25Params, first_stage.retrieve_bm25, calls_llm=False),
        MethodEntry("hybrid", first_stage.HybridParams, first_stage.retrieve_hybrid, calls_llm=False),
        MethodEntry(
            "multiview", first_stage.MultiviewParams, first_stage.retrieve_multiview, calls_llm=False
        ),
        MethodEntry("d2q", first_stage.D2qParams, first_stage.retrieve_d2q, calls_llm=False),
        MethodEntry("prf", feedback.PrfParams, feedback.retrieve_prf, calls_llm=False),
        MethodEntry("rm3", feedback.Rm3Params, feedback.retrieve_rm3, calls_llm=False),
        MethodEntry("hyde", generative.HydeParams, generative.retrieve_hyde, calls_llm=True),
        MethodEntry("rede-rf", judged.RedeRfParams, judged.retrieve_rede_rf, calls_llm=True),
        MethodEntry("expand", generative.ExpandParams, generative.retrieve_expand, calls_llm=True),
        MethodEntry("rerank", judged.RerankParams, judged.retrieve_rerank, calls_llm=True),
        MethodEntry(
            "promptreps", promptreps.PromptRepsParams, promptreps.retrieve_promptreps, calls_llm=False
        ),
        MethodEntry("lattice", lattice.LatticeParams, lattice.retrieve_lattice, calls_llm=True),
    )
}


@dataclass(frozen=True)
class Method:
    """A method name with validated parameters; ``str()`` gives the canonical spelling stored in runs."""

    name: str
    params: BaseModel

    def __str__(self) -> str:
        changed = self.params.model_dump(exclude_defaults=True)
        args = ", ".join(f"{k}={v}" for k, v in sorted(changed.items()))
        return f"{self.name}({args})" if args else self.name


def parse_method(spec: str) -> Method:
    """Read and validate a method string, nested methods included.

    Raises:
        MethodSpecError: a :class:`ValueError` whose one-line message quotes ``spec``, gives the column of
            the fault and the fix: unbalanced parentheses, text after the closing ``)``, a parameter without
            ``=``, an unknown method or parameter, or a bad value (with its path, e.g. ``first.fusion``).
    """
    return _method(spec, parse_call(spec), ())


def calls_llm(method: str | Method) -> bool:
    """Whether a method calls the LLM at query time, itself or through a method nested in its parameters."""
    method = parse_method(method) if isinstance(method, str) else method
    entry = REGISTRY[method.name]
    return entry.calls_llm or any(calls_llm(getattr(method.params, f)) for f in method_fields(entry.params))


def _method(spec: str, call: Call, path: tuple[str, ...]) -> Method:
    """The method ``call`` names, validated; ``path`` is the parameter it is nested in (``first``, ...)."""
    entry = REGISTRY.get(call.name)
    if entry is None:
        known = f"available: {', '.join(REGISTRY)} (see `zsr methods`)"
        if not path and not call.args and call.name == spec.strip():
            raise MethodSpecError(f"unknown method {call.name!r}; {known}")
        problem = f"unknown method {call.name!r}" if call.name else "the method name is missing"
        raise fault(spec, f"{_prefix(path)}{problem}{column(call.at)}", known)
    values = {arg.key: _value(spec, entry, arg, path) for arg in call.args}
    try:
        params = entry.params(**values)
    except ValidationError as error:
        raise fault(spec, "; ".join(_problem(e, call, path) for e in error.errors())) from None
    return Method(call.name, params)


def _value(spec: str, entry: MethodEntry[Any], arg: Arg, path: tuple[str, ...]) -> Any:
    """An argument's value: a nested method's canonical string, else a number or text (pydantic checks it)."""
    fields = entry.params.model_fields
    if arg.key not in fields:
        problem = (
            f"{entry.name} has no parameter {arg.key!r}" if fields else f"{entry.name} takes no parameters"
        )
        fix = f"its parameters: {', '.join(fields)}" if fields else f"write {entry.name} alone"
        raise fault(spec, f"{_prefix(path)}{problem}{column(arg.key_at)}", f"{fix} (see `zsr methods`)")
    if arg.key in method_fields(entry.params):
        # Quotes around a method are dropped, as around any value: first='hybrid' is first=hybrid.
        lead = len(arg.value) - len(arg.value.lstrip("'\""))
        trail = len(arg.value) - len(arg.value.rstrip("'\""))
        start = arg.start + lead
        return str(_method(spec, parse_call(spec, start, max(start, arg.end - trail)), (*path, arg.key)))
    return _literal(arg.value)


def _literal(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip("'\"")


def _prefix(path: tuple[str, ...]) -> str:
    return f"{'.'.join(path)}: " if path else ""


def _problem(error: ErrorDetails, call: Call, path: tuple[str, ...]) -> str:
    """One pydantic error as ``first.fusion: <message>, got 'max' (column N)``."""
    loc = [str(part) for part in error["loc"]]
    message = error["msg"].removeprefix("Value error, ")
    arg = next((a for a in call.args if loc and a.key == loc[0]), None)
    where = f", got {arg.value!r}{column(arg.start)}" if arg else (column(call.at) if path else "")
    return f"{_prefix((*path, *loc))}{message}{where}"
