"""Snippets for search hits: a document's best-matching chunk, trimmed around the match, with its query terms.

The rule, simple on purpose: the best chunk shares the most distinct query terms with the query (stems, as the
full-text index and RM3 read them, :class:`~tasks.methods.feedback.Analyzer`); among equals, the one whose
vector is closest to the query vector when the method searched with one (dense, hybrid and their kin); then
the first. The snippet is about ``width`` characters of that chunk around its first query term, and the spans
of the query terms in it, for a front end to highlight (no markup here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.methods.feedback import WORD, Analyzer

ELLIPSIS = "…"


@dataclass(frozen=True)
class Snippet:
    """Plain text and the ``[start, end)`` spans of the query terms in it."""

    text: str
    spans: tuple[tuple[int, int], ...] = ()


def term_spans(text: str, stems: set[str], analyzer: Analyzer) -> list[tuple[int, int]]:
    """Where the words of ``text`` whose stems are in ``stems`` are, in order."""
    matches = [m for m in WORD.finditer(text) if len(m.group()) > 1 and not m.group().isdigit()]
    words = [m.group().lower() for m in matches]
    found = analyzer.stemmer.stemWords(words)
    return [
        m.span()
        for m, word, stem in zip(matches, words, found, strict=True)
        if stem in stems and word not in analyzer.stop
    ]


def best_chunk(
    stems: set[str],
    chunks: Sequence[tuple[str, np.ndarray | None]],
    analyzer: Analyzer,
    query_vector: np.ndarray | None = None,
) -> int:
    """The index of the chunk (``(text, vector)``) sharing most query stems, then closest to the vector."""

    def key(item: tuple[int, tuple[str, np.ndarray | None]]) -> tuple[int, float, int]:
        i, (text, vector) = item
        shared = len(stems & {stem for stem, _ in analyzer.terms(text)})
        closeness = (
            float(np.dot(vector, query_vector)) if vector is not None and query_vector is not None else 0
        )
        return shared, closeness, -i

    return max(enumerate(chunks), key=key)[0]


def trim(text: str, spans: Sequence[tuple[int, int]], width: int = 200) -> Snippet:
    """About ``width`` characters of ``text`` from a little before its first span, cut at spaces."""
    if len(text) <= width:
        return Snippet(text, tuple(spans))
    first = spans[0][0] if spans else 0
    start = max(0, min(first - width // 4, len(text) - width))
    if start:
        space = text.find(" ", start, first if spans else start + width // 4)
        start = space + 1 if space >= 0 else start
    end = min(len(text), start + width)
    if end < len(text):
        space = text.rfind(" ", start + width // 2, end)
        end = space if space >= 0 else end
    prefix = ELLIPSIS if start else ""
    shift = len(prefix) - start
    kept = tuple((a + shift, b + shift) for a, b in spans if a >= start and b <= end)
    return Snippet(prefix + text[start:end] + (ELLIPSIS if end < len(text) else ""), kept)


def snippet(
    query: str,
    chunks: Sequence[tuple[str, np.ndarray | None]],
    analyzer: Analyzer,
    query_vector: np.ndarray | None = None,
    width: int = 200,
    title: str = "",
) -> Snippet:
    """The snippet of a document for ``query`` from its chunks (``(text, vector)``, in document order).

    Each chunk repeats the document's ``title`` in front (see :mod:`tasks.ingest.chunking`); the snippet
    leaves it out, since a front end shows the title anyway.
    """
    if not chunks:
        return Snippet("")
    stems = {stem for stem, _ in analyzer.terms(query)}
    text = chunks[best_chunk(stems, chunks, analyzer, query_vector)][0]
    text = " ".join(text.removeprefix(f"{title} " if title else "").split())
    return trim(text, term_spans(text, stems, analyzer), width)
