"""What a run records beside its numbers: its id, the code and packages behind it, and how often it fell back.

Ids are sortable and readable (``20261201-093000-nightly-reindex-3fa2c1``): UTC time, an optional label,
a random suffix. The label of an evaluation id is how the previous evaluation of the same deployment is
found (:func:`id_pattern`), so the id format is defined here only.

A run's method is stored twice: as its canonical string (``runs.method``, defaults left out) and as a tree
with every parameter, defaults included, nested methods as trees themselves (``runs.params``, see
:func:`method_tree`), so a pipeline's every stage stays on record even after a default changes, and
:func:`method_from_tree` rebuilds the method from it.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.methods.base import method_fields
from tasks.methods.registry import REGISTRY, Method, parse_method

if TYPE_CHECKING:
    from tasks.methods.base import QueryTrace

PACKAGES = ("zsr", "lancedb", "sentence-transformers", "torch", "ir-measures", "duckdb", "litellm", "prefect")


def slug(label: str) -> str:
    """``label`` as an id part: lowercase letters, digits and single dashes."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def new_id(label: str = "") -> str:
    """A sortable, readable, unique id: UTC time, an optional label, random suffix."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return "-".join(filter(None, (stamp, slug(label), secrets.token_hex(3))))


def id_pattern(label: str) -> str:
    """A regular expression (RE2 and Python alike) matching exactly the ids ``new_id(label)`` makes."""
    return "^" + "-".join(filter(None, ("[0-9]{8}-[0-9]{6}", re.escape(slug(label)), "[0-9a-f]{6}"))) + "$"


def git_sha() -> str | None:
    """The commit of the zsr checkout, when zsr runs from one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def method_tree(method: Method) -> dict[str, Any]:
    """``{"method": name, "params": {...}}``: every parameter, defaults included, nested methods as trees."""
    params = method.params.model_dump(mode="json")
    for name in method_fields(type(method.params)):
        params[name] = method_tree(parse_method(params[name]))
    return {"method": method.name, "params": params}


def method_from_tree(tree: dict[str, Any]) -> Method:
    """The method a :func:`method_tree` describes (``str()`` of it: the run's canonical ``method``).

    Raises:
        KeyError: the tree names a method this zsr does not have.
        pydantic.ValidationError: a parameter this zsr's method no longer takes, or a bad value.
    """
    entry = REGISTRY[tree["method"]]
    params = dict(tree["params"])
    for name in method_fields(entry.params):
        params[name] = str(method_from_tree(params[name]))
    return Method(entry.name, entry.params(**params))


def fallback_stats(traces: Iterable[QueryTrace]) -> tuple[float, int]:
    """``(share of queries that fell back, LLM errors)`` over the queries' traces."""
    traces = list(traces)
    fell = sum(t.fallback is not None for t in traces)
    return (fell / len(traces) if traces else 0.0), sum(t.llm_errors for t in traces)


def fallback_warning(
    method: str, share: float, n_queries: int, llm_errors: int, threshold: float, reason: str | None = None
) -> str | None:
    """A line saying that ``method``'s scores are largely its fallback's; ``None`` at or below ``threshold``.

    A method whose LLM calls all fail still scores (its fallback's ranking), so the number alone misleads.
    """
    if share <= threshold:
        return None
    if n_queries == 1:
        return f"{method}: the query fell back ({reason or 'see its trace'}); {llm_errors} LLM errors"
    fell = round(share * n_queries)
    return f"{method}: {fell} of {n_queries} queries ({share:.0%}) fell back; {llm_errors} LLM errors"
