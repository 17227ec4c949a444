"""The one synthesis configuration: every front end passes a :class:`SynthesisConfig`, validated here only.

``zsr synthesize`` builds it from its options, the ``synthesize`` and ``nightly`` flows take it as one
parameter (Prefect renders it as a sub-form, from this model's JSON schema), and the workspace sets up the
generator, the document sample and the filters from it. The module imports nothing heavy, so the CLI can
read its defaults and descriptions when it starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

GeneratorName = Literal["llm", "extractive"]
# The styles of tasks.synthetic.generators.PROMPTS (a test holds the two equal).
Style = Literal["question", "keywords", "claim", "title"]


class SynthesisConfig(BaseModel):
    """How synthetic queries are written and filtered."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    generator: GeneratorName = Field(
        default="llm",
        description="llm (the configured LiteLLM model; the bundled one offline), or extractive (no LLM: "
        "sentences of the document, biased toward lexical overlap).",
    )
    style: Style = Field(default="question", description="Kind of query the prompt asks for.")
    per_doc: int = Field(default=1, ge=1, description="Queries per document.")
    sample_docs: int | None = Field(
        default=None, ge=1, description="Sample this many diverse documents (k-means); empty: all."
    )
    seed: int = Field(default=0, description="Seed of the document sample.")
    temperature: float = Field(default=0.7, ge=0, description="Sampling temperature of the LLM.")
    examples: Path | None = Field(
        default=None,
        description='JSONL of few-shot examples, {"passage": ..., "query": ...} a line (up to 8 are used).',
    )
    roundtrip_k: int = Field(
        default=20, ge=0, description="Keep a query only if its document is in its top k (0: no check)."
    )
    roundtrip_method: str = Field(default="hybrid", description="Retrieval used for the round-trip check.")
    refilter: bool = Field(
        default=False,
        description="Decide again, from stored outputs, about queries already generated (no LLM call).",
    )

    @field_validator("roundtrip_method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        """A method string that parses (checked now, not after the generation it would follow)."""
        from tasks.methods.registry import parse_method

        parse_method(method)
        return method

    @classmethod
    def of(cls, **options: Any) -> SynthesisConfig:
        """The configuration of ``options``; what is wrong with them as one line a user can act on.

        Raises:
            ValueError: an unknown generator, style or method, or a value out of range.
        """
        try:
            return cls(**options)
        except ValidationError as error:
            raise ValueError("; ".join(map(_message, error.errors()))) from None

    def shots(self) -> list[dict[str, str]]:
        """The few-shot examples of :attr:`examples` (none without a file).

        Raises:
            ValueError: an example lacks its ``passage`` or its ``query``.
        """
        if self.examples is None:
            return []
        lines = self.examples.read_text(encoding="utf-8").splitlines()
        shots = [json.loads(line) for line in lines if line.strip()]
        if any(set(s) < {"passage", "query"} for s in shots):
            raise ValueError(f"{self.examples}: every example needs 'passage' and 'query' fields")
        return shots


def _message(error: Any) -> str:
    field = ".".join(map(str, error["loc"]))
    if error["type"] == "literal_error":
        return f"unknown {field} {error['input']!r}; use {error['ctx']['expected']}"
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return f"{field}: {error['msg']} (got {error['input']!r})"
