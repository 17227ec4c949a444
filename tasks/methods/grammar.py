"""The syntax of method strings: ``name`` or ``name(key=value, ...)``, where a value may be a method string.

This module reads the shape only; :mod:`tasks.methods.registry` knows which names and parameters exist and
what each value means. Every position is an offset into the whole string the user typed, so an error inside
a nested method (``rerank(first=hybrid(fusion=max))``) points at its column in that string. Error messages
stay on one line (the CLI prints them as they are): they quote the string, name the column and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

EXAMPLE = "hybrid(fusion=rrf, rrf_k=10)"


class MethodSpecError(ValueError):
    """A method string that cannot be read or that names what does not exist; the message says where."""


def fault(spec: str, problem: str, fix: str = "") -> MethodSpecError:
    """The error for ``spec``: ``method '<spec>': <problem>[; <fix>]``."""
    return MethodSpecError(f"method {spec!r}: {problem}" + (f"; {fix}" if fix else ""))


def column(at: int) -> str:
    """`` (column N)``, counted from 1 as editors do, for the text at offset ``at``."""
    return f" (column {at + 1})"


@dataclass(frozen=True)
class Arg:
    """``key=value`` inside a call; ``value`` is stripped text, found at ``spec[start:end]``."""

    key: str
    key_at: int
    value: str
    start: int
    end: int


@dataclass(frozen=True)
class Call:
    """``name(args)``: a method name at offset ``at`` and its arguments, in the order written."""

    name: str
    at: int
    args: tuple[Arg, ...]


def parse_call(spec: str, start: int = 0, end: int | None = None) -> Call:
    """Read ``spec[start:end]`` as one call; its values stay text (the registry decides what each means).

    Raises:
        MethodSpecError: unbalanced parentheses, text after the closing ``)``, or an argument without ``=``.
    """
    end = len(spec) if end is None else end
    pair = _parentheses(spec, start, end)
    args: tuple[Arg, ...] = ()
    if pair is None:
        name_end = end
    else:
        open_at, close_at = pair
        trailing = spec[close_at + 1 : end]
        if trailing.strip():
            at = close_at + 1 + len(trailing) - len(trailing.lstrip())
            raise fault(
                spec,
                f"parameters go in parentheses that end the method, but {trailing.strip()!r} follows the "
                f"')'{column(at)}",
                "remove it (separate methods with commas)",
            )
        name_end = open_at
        args = tuple(_arg(spec, a, b) for a, b in _split(spec, open_at + 1, close_at) if spec[a:b].strip())
    raw = spec[start:name_end]
    return Call(raw.strip(), start + len(raw) - len(raw.lstrip()), args)


def split_methods(text: str) -> list[str]:
    """Split ``"dense,hybrid(fusion=rrf, rrf_k=10)"`` on the commas outside parentheses."""
    return [part for a, b in _split(text, 0, len(text)) if (part := text[a:b].strip())]


def _parentheses(spec: str, start: int, end: int) -> tuple[int, int] | None:
    """Offsets of the first ``(`` in ``spec[start:end]`` and of the ``)`` that closes it (``None``: no ``(``).

    Every parenthesis in the range must pair up: an unclosed ``(`` or a ``)`` that closes nothing is an error
    that points at it.
    """
    opened: list[int] = []
    pair = None
    for at in range(start, end):
        if spec[at] == "(":
            opened.append(at)
        elif spec[at] == ")":
            if not opened:
                raise _unbalanced(spec, f"the ')'{column(at)} closes nothing", "remove it")
            first = opened.pop()
            # The first time every '(' is closed, this ')' closes the first '(' of all.
            pair = pair or (None if opened else (first, at))
    if opened:
        raise _unbalanced(spec, f"the '('{column(opened[-1])} is never closed", "add its ')'")
    return pair


def _unbalanced(spec: str, where: str, fix: str) -> MethodSpecError:
    counts = f"found {spec.count('(')} '(' and {spec.count(')')} ')'"
    return fault(
        spec,
        f"parameters go in parentheses that end the method ({counts}): {where}",
        f"{fix}: write name(key=value, ...), e.g. {EXAMPLE}",
    )


def _split(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of ``text[start:end]`` between the commas outside parentheses."""
    bounds = [start - 1, *_outside(text, start, end, ","), end]
    return [(a + 1, b) for a, b in pairwise(bounds)]


def _outside(text: str, start: int, end: int, char: str) -> list[int]:
    """Offsets of ``char`` in ``text[start:end]`` outside parentheses."""
    found, depth = [], 0
    for at in range(start, end):
        depth += {"(": 1, ")": -1}.get(text[at], 0)
        if text[at] == char and depth == 0:
            found.append(at)
    return found


def _arg(spec: str, start: int, end: int) -> Arg:
    """``key=value`` at ``spec[start:end]``; the first ``=`` outside parentheses splits it."""
    part = spec[start:end]
    key_at = start + len(part) - len(part.lstrip())
    eq = next(iter(_outside(spec, start, end, "=")), None)
    if eq is None or not spec[start:eq].strip():
        raise fault(
            spec,
            f"parameter {part.strip()!r}{column(key_at)} must be written key=value",
            f"write name(key=value, ...), e.g. {EXAMPLE}",
        )
    raw = spec[eq + 1 : end]
    value_at = eq + 1 + len(raw) - len(raw.lstrip())
    return Arg(spec[start:eq].strip(), key_at, raw.strip(), value_at, value_at + len(raw.strip()))
