"""Read a document source (BEIR folder, JSONL, CSV, Parquet or a folder of files) as normalised Documents.

Every bad record becomes a :class:`Problem` naming its file, line and fix. Without ``skip_bad`` all of them
are raised together in one :class:`BadInputError`, so a user fixes a source in one round, not one per record.
A skipped record's problem carries the record's id wherever it can be read (``record_id``), because
re-indexing keeps the indexed version of a skipped record rather than deleting it as gone from the source.

A source is never held in memory whole. :func:`read_source` checks every record in one streaming pass, so
problems are known, and raised, before anything is written; its documents are then read again from disk
each time they are iterated (re-indexing does so twice), and a pass that finds the source changed since the
first one is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from storage.types import BadInputError, Document, Problem
from tasks.ingest.formats import SourceFormat
from tasks.ingest.readers import fatal, read_csv, read_folder, read_jsonl, read_parquet
from tasks.ingest.records import AUTO_FIELDS, Collector, FieldMap

logger = logging.getLogger(__name__)

_FORMAT_BY_SUFFIX: dict[str, SourceFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
}
_FOLDER_KINDS = (".txt", ".md", ".html", ".pdf")
_SUPPORTED = (
    "a BEIR folder (with corpus.jsonl), a folder of .txt/.md/.html/.pdf files, "
    "or a .jsonl/.ndjson, .csv or .parquet file"
)
_SHOWN_SKIPPED = 5


@dataclass(frozen=True)
class _Reading:
    """How to read a source: everything one reading pass needs."""

    path: Path
    fmt: SourceFormat
    fields: FieldMap
    max_doc_bytes: int
    delimiter: str

    def documents(self, collector: Collector, unsupported: list[str]) -> Iterator[Document]:
        if self.fmt == "folder":
            return read_folder(self.path, collector, unsupported)
        if self.fmt == "parquet":
            return read_parquet(self.path, self.fields, collector)
        if self.fmt == "csv":
            return read_csv(self.path, self.fields, collector, self.delimiter)
        return read_jsonl(self.file, self.fields, collector)

    @property
    def file(self) -> Path:
        """The file read, or for a folder the folder."""
        return self.path / "corpus.jsonl" if self.fmt == "beir" else self.path

    def collector(self) -> Collector:
        return Collector(self.max_doc_bytes, self.file)


class SourceDocuments:
    """The documents of a checked source, in source order, read again from disk on each iteration.

    ``len()`` is the number of documents the check found. Iterating holds one record at a time (and the
    ids seen, to find duplicates). A pass that reads other files, or files of another size or modification
    time, than the check did, or finds other problems, raises :class:`BadInputError` when it ends: the
    source changed while it was being ingested, and what was read from it may not agree.
    """

    def __init__(self, reading: _Reading, count: int, stamp: str, problems: list[Problem]) -> None:
        self._reading = reading
        self._count = count
        self._stamp = stamp
        self._problems = problems

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Document]:
        collector = self._reading.collector()
        count = 0
        for doc in self._reading.documents(collector, []):
            count += 1
            yield doc
        if (count, collector.stamp, collector.problems) != (self._count, self._stamp, self._problems):
            raise BadInputError(
                [
                    Problem(
                        str(self._reading.path),
                        "the source changed while it was being read (its files, or what they hold, differ "
                        "from the first reading)",
                        "let whatever writes the source finish, then ingest again (unchanged documents are "
                        "not embedded again)",
                    )
                ]
            )


@dataclass
class SourceReport:
    """The documents read, and the bad records left out of them (only with ``skip_bad``)."""

    documents: SourceDocuments
    skipped: list[Problem]

    @property
    def skipped_ids(self) -> set[str]:
        """Ids of the skipped records whose id could be read."""
        return {p.record_id for p in self.skipped if p.record_id}

    @property
    def skipped_without_id(self) -> int:
        """Skipped records whose id could not be read (malformed JSON, no id field, an unreadable folder)."""
        return sum(not p.record_id for p in self.skipped)


def detect_format(path: Path) -> SourceFormat:
    """Tell a source's format from its path: a folder's contents or a file's extension.

    Raises:
        BadInputError: the path does not exist or its format is not one we read.
    """
    if not path.exists():
        raise fatal(path, "does not exist", f"check the path (relative to {Path.cwd()})")
    if path.is_dir():
        return "beir" if (path / "corpus.jsonl").is_file() else "folder"
    fmt = _FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise fatal(path, f"unsupported format {path.suffix or '(no extension)'!r}", f"use {_SUPPORTED}")
    return fmt


def read_source(
    path: Path,
    *,
    fmt: SourceFormat | None = None,
    fields: FieldMap = AUTO_FIELDS,
    skip_bad: bool = False,
    max_doc_bytes: int = 5_000_000,
    delimiter: str = ",",
) -> SourceReport:
    """Check every record of a source in one streaming pass; its documents are read again when iterated.

    Args:
        path: The file or folder to read.
        fmt: Its format; detected from the path when ``None``.
        fields: Record fields holding id, title and text (ignored for folders, whose ids are relative paths).
        skip_bad: Leave bad records out and report them in ``skipped`` instead of raising.
        max_doc_bytes: The largest document (UTF-8 title plus text) accepted.
        delimiter: The CSV field delimiter (one character).

    Returns:
        The documents (normalised, with ids as stripped strings, in source order), and the skipped records.

    Raises:
        BadInputError: with every problem found, when any record is bad and ``skip_bad`` is off; always
            when the source as a whole is unusable (missing, unreadable, unknown fields, no documents).
    """
    if len(delimiter) != 1:
        raise ValueError(f"the CSV delimiter must be one character, not {delimiter!r}")
    reading = _Reading(path, fmt or detect_format(path), fields, max_doc_bytes, delimiter)
    collector = reading.collector()
    unsupported: list[str] = []
    count = sum(1 for _ in reading.documents(collector, unsupported))
    problems = collector.problems
    if problems and not skip_bad:
        raise BadInputError(problems)
    if not count:
        fix = f"point at a source with documents: {_SUPPORTED}"
        if unsupported:
            shown = ", ".join(unsupported[:_SHOWN_SKIPPED]) + (
                ", ..." if len(unsupported) > _SHOWN_SKIPPED else ""
            )
            files = "file" if len(unsupported) == 1 else "files"
            fix = (
                f"no {'/'.join(_FOLDER_KINDS)} files in {path}; skipped {len(unsupported)} {files}: "
                f"{shown}; convert them to one of those, or {fix}"
            )
        empty = Problem(str(path), "no documents found", fix)
        raise BadInputError([*problems, empty])
    if problems:
        logger.warning("skipped %d bad record(s) in %s; first: %s", len(problems), path, problems[0])
    return SourceReport(SourceDocuments(reading, count, collector.stamp, problems), problems)
