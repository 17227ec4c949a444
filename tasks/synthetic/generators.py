"""Query writers for synthesis: the versioned prompts, an LLM generator and an extractive (no LLM) one.

Each writes one raw text per (document, sample) request; :func:`parse_query` takes the query out of a raw
output, or says why none could be taken. Filtering and storage are :mod:`tasks.synthetic.generate`'s.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from storage.ids import content_hash
from tasks.llm.client import LLMClient, LLMError, Request

PASSAGE_CHARS = 1500  # small local models have short windows; the opening of a document says most


@dataclass(frozen=True)
class Prompt:
    """A versioned prompt; change the text, bump the version (it is part of every query id)."""

    style: str
    version: str
    template: str  # with {passage}


PROMPTS = {
    p.style: p
    for p in (
        Prompt(
            "question",
            "question-v1",
            "{passage}\n\nRead the passage and write one question it answers. Reply with the question only.",
        ),
        Prompt(
            "keywords",
            "keywords-v1",
            "{passage}\n\nRead the passage and write a short keyword search query "
            "(2 to 6 words) for which it is a good result. Reply with the query only.",
        ),
        Prompt(
            "claim",
            "claim-v1",
            "{passage}\n\nRead the passage and write one factual claim, a single "
            "sentence, that it supports. Reply with the claim only.",
        ),
        Prompt(
            "title",
            "title-v1",
            "{passage}\n\nRead the passage and write a short title for it. Reply with the title only.",
        ),
    )
}
_REFUSAL = re.compile(r"^(i'?m sorry|i cannot|i can'?t|as an ai|sorry,|i am unable|i'?m unable)", re.I)
_LEAD = re.compile(r"^\s*(?:\d+[.)]|[-*•])?\s*(?:query|question|claim|title|keywords?)?\s*:?\s*", re.I)
WORD = re.compile(r"\w+")


class Generator(Protocol):
    """Writes one raw query text per (document, sample) request."""

    name: str
    prompt_version: str
    copies_from_document: bool  # by design (extractive): the copy filter does not apply

    def generate(self, docs: Sequence[dict[str, Any]], samples: Sequence[int]) -> list[str | LLMError]:
        """Raw outputs, one per (doc, sample) pair, or the error of a request that failed for good."""
        ...


class LLMGenerator:
    """Promptagator-style: zero-shot or up to 8 user-supplied examples, N samples at a temperature."""

    def __init__(
        self,
        llm: LLMClient,
        style: str = "question",
        temperature: float = 0.7,
        examples: Sequence[dict[str, str]] = (),
        max_tokens: int = 48,
    ) -> None:
        if style not in PROMPTS:
            raise ValueError(f"unknown style {style!r}; choose one of {', '.join(PROMPTS)}")
        self.llm, self.prompt, self.temperature = llm, PROMPTS[style], temperature
        self.examples, self.max_tokens = list(examples)[:8], max_tokens
        self.name = llm.config.model
        self.copies_from_document = False
        shots = content_hash(json.dumps(self.examples, sort_keys=True))[:8] if self.examples else ""
        self.prompt_version = self.prompt.version + (f"+shots-{shots}" if shots else "")
        self.last: list = []

    def messages(self, passage: str) -> list[dict[str, str]]:
        """The chat: each example as a user/assistant turn, then the document."""
        turns = []
        for ex in self.examples:
            turns += [
                {
                    "role": "user",
                    "content": self.prompt.template.format(passage=ex["passage"][:PASSAGE_CHARS]),
                },
                {"role": "assistant", "content": ex["query"]},
            ]
        return [
            *turns,
            {"role": "user", "content": self.prompt.template.format(passage=passage[:PASSAGE_CHARS])},
        ]

    def generate(self, docs: Sequence[dict[str, Any]], samples: Sequence[int]) -> list[str | LLMError]:
        """One request per (doc, sample): the sample index is the seed, so samples differ and cache apart."""
        requests = [
            Request(
                self.messages(f"{d['title']}\n{d['text']}".strip()),
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                seed=s,
                context={"doc_id": d["doc_id"], "sample": s},
            )
            for d, s in zip(docs, samples, strict=True)
        ]
        self.last = self.llm.complete_many(requests, purpose=f"synthesize:{self.prompt.style}")
        return [r if isinstance(r, LLMError) else r.text for r in self.last]


class ExtractiveGenerator:
    """No LLM: a sentence taken from the document (Inverse Cloze Task style).

    Cheap and offline, but biased toward lexical overlap with its source: label results that use it.
    """

    name = "extractive"
    prompt_version = "ict-sentence-v1"
    copies_from_document = True

    def generate(self, docs: Sequence[dict[str, Any]], samples: Sequence[int]) -> list[str | LLMError]:
        """A sentence of 4-20 words per request, chosen by a seed derived from (doc, sample)."""
        out: list[str | LLMError] = []
        for doc, sample in zip(docs, samples, strict=True):
            sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", doc["text"]) if s.strip()]
            fitting = [s for s in sentences if 4 <= len(WORD.findall(s)) <= 20] or sentences or [doc["text"]]
            out.append(random.Random(f"{doc['doc_id']}:{sample}").choice(fitting))
        return out


def parse_query(raw: str) -> tuple[str, str | None]:
    """The query in a model's output, and why none could be taken (``None`` when fine).

    Accepts JSON (``{"query": ...}``), numbered or bulleted lines, ``Query:`` prefixes and quotes; takes
    the first non-empty line.
    """
    text = raw.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
            text = next(
                (str(value[k]) for k in ("query", "question", "claim", "title", "text") if k in value), ""
            )
        except (json.JSONDecodeError, TypeError):
            text = text.strip("{}")
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = _LEAD.sub("", line, count=1).strip().strip("\"'`“”").strip()
    if not line:
        return "", "empty output"
    if _REFUSAL.match(line):
        return line, "refusal"
    return line, None
