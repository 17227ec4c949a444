"""Validate source records one at a time: the field mapping, text normalisation, and the problems found.

A :class:`Collector` turns each record a reader yields into a :class:`Document` or a :class:`Problem`
naming its file, line and fix. It keeps no document: duplicates are found with the ids seen so far, so
checking a source costs memory for its ids, not its text.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from storage.types import BadInputError, Document, Problem

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # category Cc, less tab and newline
_BLANKS = re.compile(r"[ \t]+")
_ID_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # category Cc: breaks TSV qrels, TREC lines, terminals


@dataclass(frozen=True)
class FieldMap:
    """Which record fields hold the id, title and text; ``None`` picks the first usual name present."""

    id: str | None = None
    title: str | None = None
    text: str | None = None


AUTO_FIELDS = FieldMap()


class Keys(NamedTuple):
    """The source's actual field names for id, title (if any) and text."""

    id: str
    title: str | None
    text: str


def normalise_text(text: str) -> str:
    """NFC-normalise text and tidy its whitespace, so the same content always hashes and embeds the same.

    Control characters other than newline and tab are dropped, runs of spaces and tabs become one space,
    trailing spaces go, and more than one blank line in a row becomes one.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _BLANKS.sub(" ", _CONTROL.sub("", text))
    text = re.sub(r" +\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _normalise_title(title: str) -> str:
    return re.sub(r" ?\n+ ?", " ", normalise_text(title))


class Collector:
    """Validates records as they are read, and keeps the problems, in source order, for one reading pass.

    It also stamps each file the pass opens (:meth:`opened`), so passes over a source that are compared
    (:attr:`stamp`) tell whether it changed in between.

    Args:
        max_doc_bytes: the largest document (UTF-8 title plus text) accepted.
        root: the source's path; ids seen are filed with their location less this prefix, as a 1M-record
            source would otherwise hold its path a million times.
    """

    def __init__(self, max_doc_bytes: int, root: Path) -> None:
        self.max_doc_bytes = max_doc_bytes
        self.problems: list[Problem] = []
        self._root = str(root)
        self._first_seen: dict[str, str] = {}  # id -> location of its first record, less the root
        self._stamps = hashlib.blake2b(digest_size=16)

    def opened(self, path: Path, stat: os.stat_result) -> None:
        """Stamp a file this pass reads with its size and modification time."""
        self._stamps.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())

    @property
    def stamp(self) -> str:
        """The stamp of every file read so far, in the order read."""
        return self._stamps.hexdigest()

    def problem(self, location: str, message: str, fix: str, record_id: str | None = None) -> None:
        """Record a problem with the record at ``location``."""
        self.problems.append(Problem(location, message, fix, record_id))

    def name_record(self, index: int, raw_id: Any) -> None:
        """Give problem ``index`` the id read from its record with bad bytes replaced, if that id is intact.

        An id holding a replacement character may not be the record's real id, so it stays unknown.
        """
        doc_id = "" if raw_id is None else str(raw_id).strip()
        if doc_id and "\ufffd" not in doc_id:
            self.problems[index] = replace(self.problems[index], record_id=doc_id)

    def too_big(self, location: str, size: int, record_id: str) -> None:
        """Record a document over ``max_doc_bytes``."""
        limit = self.max_doc_bytes
        self.problem(
            location,
            f"document is {size / 1e6:.2f} MB ({size:,} bytes), "
            f"over the {limit / 1e6:.2f} MB limit ({limit:,} bytes)",
            "split it into smaller documents, or raise the limit with ZSR_MAX_DOC_BYTES",
            record_id,
        )

    def add(
        self,
        location: str,
        doc_id: str,
        title: str,
        text: str,
        metadata: dict[str, Any],
        *,
        empty_fix: str,
        default_title: str = "",
    ) -> Document | None:
        """The document of a record, or ``None`` with the reason recorded: a bad id, a duplicate, no content.

        A record with a title and no text is a document (bibliographic records often carry only a title);
        ``default_title`` (a file's name) is applied after that check, so it never makes an empty file one.
        """
        bad = _ID_CONTROL.search(doc_id)
        if bad:
            self.problem(
                location,
                f"id {doc_id!r} holds a control character (U+{ord(bad.group()):04X})",
                "remove control characters (NUL, tab, newline, ...) from the id; spaces are fine",
            )
            return None
        # Ids are registered even for records that fail later checks, so a duplicate always points at the
        # first line that used the id.
        first = self._first_seen.get(doc_id)
        if first is not None:
            self.problem(
                location,
                f"duplicate id (first used at {self._root}{first})",
                "give every record a unique id, or remove the duplicate",
                doc_id,
            )
            return None
        self._first_seen[doc_id] = location.removeprefix(self._root)
        title, text = _normalise_title(title), normalise_text(text)
        if not text and not title:
            self.problem(location, "has neither title nor text", empty_fix, doc_id)
            return None
        title = title or default_title
        size = len(title.encode()) + len(text.encode())
        if size > self.max_doc_bytes:
            self.too_big(location, size, doc_id)
            return None
        return Document(doc_id, title, text, metadata, location)

    def add_record(self, record: dict[str, Any], keys: Keys, location: str) -> Document | None:
        """Map one JSON/CSV/Parquet record through the resolved field names; other fields become metadata."""
        raw_id = record.get(keys.id)
        doc_id = "" if raw_id is None else str(raw_id).strip()
        if not doc_id:
            self.problem(
                location,
                f"missing id: field {keys.id!r} is absent or empty",
                f"give the record a unique, non-empty {keys.id!r}, or remove it",
            )
            return None
        metadata = {k: v for k, v in record.items() if k not in keys and v is not None}
        if isinstance(metadata.get("metadata"), dict):  # BEIR nests extra fields under "metadata"
            metadata.update(metadata.pop("metadata"))
        return self.add(
            location,
            doc_id,
            _as_str(record.get(keys.title)) if keys.title else "",
            _as_str(record.get(keys.text)),
            metadata,
            empty_fix=f"remove the record or fill its {keys.text!r} field",
        )


def _as_str(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def resolve_fields(fields: FieldMap, available: list[str], source: Path) -> Keys:
    """Turn a FieldMap into the source's actual field names; a name that cannot be found is fatal."""
    problems: list[Problem] = []
    listed = ", ".join(repr(name) for name in available) or "(none)"

    def pick(explicit: str | None, usual: tuple[str, ...], role: str, required: bool) -> str | None:
        option = f"--{role}-field"
        if explicit is not None and explicit not in available:
            problems.append(
                Problem(
                    str(source),
                    f"{role} field {explicit!r} not found; available fields: {listed}",
                    f"pass {option} with one of the available fields",
                )
            )
        if explicit is not None:
            return explicit
        found = next((name for name in usual if name in available), None)
        if found is None and required:
            problems.append(
                Problem(
                    str(source),
                    f"no {role} field found (looked for {', '.join(usual)}); available fields: {listed}",
                    f"pass {option} naming the field that holds the {role}",
                )
            )
        return found

    id_key = pick(fields.id, ("_id", "id", "doc_id"), "id", required=True)
    title_key = pick(fields.title, ("title",), "title", required=False)
    text_key = pick(fields.text, ("text", "body", "content"), "text", required=True)
    if problems or id_key is None or text_key is None:
        raise BadInputError(problems)
    return Keys(id_key, title_key, text_key)
