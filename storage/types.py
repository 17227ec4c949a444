"""Shared data shapes (the BEIR ecosystem's, where one exists)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from storage.ids import canonical_json, content_hash

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


@dataclass(frozen=True, slots=True)
class Document:
    """One normalised source document.

    ``location`` names where it came from (``file:line`` or a path) so errors and reports can point at it.
    """

    doc_id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    location: str = ""

    @property
    def content_hash(self) -> str:
        """Hash of everything stored for the document; a change in any of it re-indexes the document."""
        return content_hash(self.title, self.text, canonical_json(self.metadata))


@dataclass(frozen=True, slots=True)
class Problem:
    """One bad record: where it is, what is wrong and how to fix it."""

    location: str
    message: str
    fix: str
    record_id: str | None = None

    def __str__(self) -> str:
        rid = f" (id {self.record_id!r})" if self.record_id else ""
        return f"{self.location}{rid}: {self.message}; fix: {self.fix}"


class BadInputError(ValueError):
    """Input that cannot be used as it is; carries every problem found, so one run reports them all."""

    def __init__(self, problems: list[Problem], hint: str = "") -> None:
        self.problems = problems
        shown = "\n".join(f"  - {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} bad record(s); nothing was written:\n{shown}{more}{hint}")
