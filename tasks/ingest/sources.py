"""Read a document source (BEIR folder, JSONL, CSV, Parquet or a folder of files) into normalised Documents.

Every bad record becomes a :class:`Problem` naming its file, line and fix. Without ``skip_bad`` all of them
are raised together in one :class:`BadInputError`, so a user fixes a source in one round, not one per record.
A skipped record's problem carries the record's id wherever it can be read (``record_id``), because
re-indexing keeps the indexed version of a skipped record rather than deleting it as gone from the source.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
from pypdf import PdfReader
from selectolax.lexbor import LexborHTMLParser

from storage.types import BadInputError, Document, Problem
from tasks.ingest.formats import SourceFormat

logger = logging.getLogger(__name__)


_FORMAT_BY_SUFFIX: dict[str, SourceFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
}
_FOLDER_SUFFIXES = {".txt", ".md", ".markdown", ".html", ".htm", ".pdf"}
_FOLDER_KINDS = (".txt", ".md", ".html", ".pdf")
_SUPPORTED = (
    "a BEIR folder (with corpus.jsonl), a folder of .txt/.md/.html/.pdf files, "
    "or a .jsonl/.ndjson, .csv or .parquet file"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # category Cc, less tab and newline
_BLANKS = re.compile(r"[ \t]+")
_CSV_FIELD_LIMIT = 2**31 - 1  # the largest value every platform's C long accepts
_ID_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # category Cc: breaks TSV qrels, TREC lines, terminals
_OTHER_DELIMITERS = (";", "\t", "|")
_SHOWN_SKIPPED = 5


@dataclass(frozen=True)
class FieldMap:
    """Which record fields hold the id, title and text; ``None`` picks the first usual name present."""

    id: str | None = None
    title: str | None = None
    text: str | None = None


AUTO_FIELDS = FieldMap()


@dataclass
class SourceReport:
    """The documents read, and the bad records left out of them (only with ``skip_bad``)."""

    documents: list[Document]
    skipped: list[Problem]

    @property
    def skipped_ids(self) -> set[str]:
        """Ids of the skipped records whose id could be read."""
        return {p.record_id for p in self.skipped if p.record_id}

    @property
    def skipped_without_id(self) -> int:
        """Skipped records whose id could not be read (malformed JSON, no id field, an unreadable folder)."""
        return sum(not p.record_id for p in self.skipped)


class _Keys(NamedTuple):
    id: str
    title: str | None
    text: str


def detect_format(path: Path) -> SourceFormat:
    """Tell a source's format from its path: a folder's contents or a file's extension.

    Raises:
        BadInputError: the path does not exist or its format is not one we read.
    """
    if not path.exists():
        raise _fatal(path, "does not exist", f"check the path (relative to {Path.cwd()})")
    if path.is_dir():
        return "beir" if (path / "corpus.jsonl").is_file() else "folder"
    fmt = _FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise _fatal(path, f"unsupported format {path.suffix or '(no extension)'!r}", f"use {_SUPPORTED}")
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
    """Read every document of a source, normalised, with ids as stripped strings.

    Args:
        path: The file or folder to read.
        fmt: Its format; detected from the path when ``None``.
        fields: Record fields holding id, title and text (ignored for folders, whose ids are relative paths).
        skip_bad: Leave bad records out and report them in ``skipped`` instead of raising.
        max_doc_bytes: The largest document (UTF-8 title plus text) accepted.
        delimiter: The CSV field delimiter (one character).

    Returns:
        The documents in source order, and the skipped records.

    Raises:
        BadInputError: with every problem found, when any record is bad and ``skip_bad`` is off; always
            when the source as a whole is unusable (missing, unreadable, unknown fields, no documents).
    """
    if len(delimiter) != 1:
        raise ValueError(f"the CSV delimiter must be one character, not {delimiter!r}")
    fmt = fmt or detect_format(path)
    collector = _Collector(max_doc_bytes)
    unsupported: list[str] = []
    if fmt == "folder":
        unsupported = _read_folder(path, collector)
    elif fmt == "parquet":
        _read_parquet(path, fields, collector)
    elif fmt == "csv":
        _read_csv(path, fields, collector, delimiter)
    else:
        _read_jsonl(path / "corpus.jsonl" if fmt == "beir" else path, fields, collector)

    problems = collector.problems
    if problems and not skip_bad:
        raise BadInputError(problems)
    if not collector.documents:
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
    return SourceReport(collector.documents, problems)


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


class _Collector:
    """Validates documents as they are read and keeps the good ones and the problems, in source order."""

    def __init__(self, max_doc_bytes: int) -> None:
        self.max_doc_bytes = max_doc_bytes
        self.documents: list[Document] = []
        self.problems: list[Problem] = []
        self.first_seen: dict[str, str] = {}

    def problem(self, location: str, message: str, fix: str, record_id: str | None = None) -> None:
        self.problems.append(Problem(location, message, fix, record_id))

    def name_record(self, index: int, raw_id: Any) -> None:
        """Give problem ``index`` the id read from its record with bad bytes replaced, if that id is intact.

        An id holding a replacement character may not be the record's real id, so it stays unknown.
        """
        doc_id = "" if raw_id is None else str(raw_id).strip()
        if doc_id and "\ufffd" not in doc_id:
            self.problems[index] = replace(self.problems[index], record_id=doc_id)

    def too_big(self, location: str, size: int, record_id: str) -> None:
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
    ) -> None:
        """Keep a document, or record why not: a control character in its id, a duplicate id, no content.

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
            return
        # Ids are registered even for records that fail later checks, so a duplicate always points at the
        # first line that used the id.
        if doc_id in self.first_seen:
            self.problem(
                location,
                f"duplicate id (first used at {self.first_seen[doc_id]})",
                "give every record a unique id, or remove the duplicate",
                doc_id,
            )
            return
        self.first_seen[doc_id] = location
        title, text = _normalise_title(title), normalise_text(text)
        if not text and not title:
            self.problem(location, "has neither title nor text", empty_fix, doc_id)
            return
        title = title or default_title
        size = len(title.encode()) + len(text.encode())
        if size > self.max_doc_bytes:
            self.too_big(location, size, doc_id)
        else:
            self.documents.append(Document(doc_id, title, text, metadata, location))


def _add_record(collector: _Collector, record: dict[str, Any], keys: _Keys, location: str) -> None:
    """Map one JSON/CSV/Parquet record through the resolved field names; other fields become metadata."""
    raw_id = record.get(keys.id)
    doc_id = "" if raw_id is None else str(raw_id).strip()
    if not doc_id:
        collector.problem(
            location,
            f"missing id: field {keys.id!r} is absent or empty",
            f"give the record a unique, non-empty {keys.id!r}, or remove it",
        )
        return
    metadata = {k: v for k, v in record.items() if k not in keys and v is not None}
    if isinstance(metadata.get("metadata"), dict):  # BEIR nests extra fields under "metadata"
        metadata.update(metadata.pop("metadata"))
    collector.add(
        location,
        doc_id,
        _as_str(record.get(keys.title)) if keys.title else "",
        _as_str(record.get(keys.text)),
        metadata,
        empty_fix=f"remove the record or fill its {keys.text!r} field",
    )


def _as_str(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def _resolve_fields(fields: FieldMap, available: list[str], source: Path) -> _Keys:
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
    return _Keys(id_key, title_key, text_key)


def _fatal(path: Path, message: str, fix: str) -> BadInputError:
    """An error for a source that cannot be read at all, which ``skip_bad`` cannot help."""
    return BadInputError([Problem(str(path), message, fix)])


def _read_bytes(path: Path) -> bytes:
    """Read a single-file source; failing to is fatal, as there is nothing else to read."""
    try:
        return path.read_bytes()
    except OSError as err:
        raise BadInputError([_os_problem(path, err)]) from err


def _os_problem(path: Path, err: OSError) -> Problem:
    if isinstance(err, FileNotFoundError):
        fix = f"check the path (relative to {Path.cwd()})"
    elif isinstance(err, IsADirectoryError):
        fix = "point at a file, or read the folder with --format folder"
    elif isinstance(err, PermissionError):
        fix = "make the file readable by this user (e.g. chmod a+r)"
    else:
        fix = "check the file can be read (disk, mount, permissions)"
    return Problem(str(path), f"cannot read file: {err.strerror or err}", fix)


def _iconv_fix(path: Path) -> str:
    return f"re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}"


def _decode_lines(path: Path, data: bytes) -> Iterator[tuple[int, str, Problem | None]]:
    """Yield (line number, text, problem) per line, so a bad byte costs one record rather than the file.

    A bad line is still yielded, decoded with replacement characters, so CSV quoting stays in step.
    """
    offset = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0  # Excel and Notepad add one
    for line_no, raw in enumerate(data[offset:].split(b"\n"), start=1):
        try:
            text, problem = raw.decode("utf-8"), None
        except UnicodeDecodeError as err:
            text = raw.decode("utf-8", "replace")
            message = f"not valid UTF-8: byte 0x{raw[err.start]:02x} at byte offset {offset + err.start}"
            problem = Problem(f"{path}:{line_no}", message, _iconv_fix(path))
        yield line_no, text, problem
        offset += len(raw) + 1


def _read_jsonl(path: Path, fields: FieldMap, collector: _Collector) -> None:
    records: list[tuple[str, dict[str, Any]]] = []
    undecodable: list[tuple[int, str]] = []  # (index in problems, the line with replacement characters)
    for line_no, text, problem in _decode_lines(path, _read_bytes(path)):
        location = f"{path}:{line_no}"
        if problem is not None:
            undecodable.append((len(collector.problems), text))
            collector.problems.append(problem)
        elif text.strip():
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                collector.problem(
                    location,
                    f"malformed JSON: {err.msg} (column {err.colno})",
                    "make the line one complete JSON object (double-quoted strings, no trailing commas)",
                )
                continue
            if isinstance(record, dict):
                records.append((location, record))
            else:
                collector.problem(
                    location,
                    f"line is a JSON {type(record).__name__}, not an object",
                    'write one object per line, e.g. {"_id": "d1", "title": "...", "text": "..."}',
                )
    if not records:
        return
    # Fields are resolved over all records, as JSON records need not share keys.
    available = list(dict.fromkeys(key for _, record in records for key in record))
    keys = _resolve_fields(fields, available, path)
    for location, record in records:
        _add_record(collector, record, keys, location)
    for index, text in undecodable:
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            collector.name_record(index, record.get(keys.id))


def _read_csv(path: Path, fields: FieldMap, collector: _Collector, delimiter: str) -> None:
    # The default 128 KiB field limit would reject long documents before the size check could name them.
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    bad_lines: dict[int, int] = {}  # line number -> index of its problem
    lines: list[str] = []
    for line_no, text, problem in _decode_lines(path, _read_bytes(path)):
        if problem is not None:
            bad_lines[line_no] = len(collector.problems)
            collector.problems.append(problem)
        lines.append(text + "\n")
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            return
        if bad_lines.keys() & set(range(1, reader.line_num + 1)):
            raise BadInputError(collector.problems)
        header = [name.strip() for name in header]
        _check_delimiter(path, header, delimiter)
        keys = _resolve_fields(fields, header, path)
        end = reader.line_num
        for row in reader:
            # A quoted field may span lines: the record starts after the previous one ends.
            start, end = end + 1, reader.line_num
            bad = [bad_lines[n] for n in range(start, end + 1) if n in bad_lines]
            if bad and len(row) == len(header):
                for index in bad:
                    collector.name_record(index, dict(zip(header, row, strict=True)).get(keys.id))
            if not row or bad:
                continue
            location = f"{path}:{start}"
            if len(row) != len(header):
                collector.problem(
                    location,
                    f"row has {len(row)} fields but the header has {len(header)}",
                    "quote fields that contain commas, so every row has as many fields as the header",
                )
            else:
                _add_record(collector, dict(zip(header, row, strict=True)), keys, location)
    except csv.Error as err:
        where = Problem(
            f"{path}:{reader.line_num}",
            f"malformed CSV: {err}",
            'fix the quoting on that line (a quote inside a quoted field is written "")',
        )
        raise BadInputError([*collector.problems, where]) from err


def _check_delimiter(path: Path, header: list[str], delimiter: str) -> None:
    """Refuse a one-column header that holds another usual delimiter: the file was split on the wrong one."""
    if len(header) != 1:
        return
    found = next((d for d in _OTHER_DELIMITERS if d != delimiter and d in header[0]), None)
    if found is not None:
        raise _fatal(
            path,
            f"the header parses to one column {header[0]!r} with delimiter {delimiter!r}",
            f"it looks {found!r}-delimited: pass --delimiter {found!r}",
        )


def _read_parquet(path: Path, fields: FieldMap, collector: _Collector) -> None:
    data = _read_bytes(path)
    try:
        table = pq.read_table(io.BytesIO(data))
    except pa.ArrowException as err:
        raise _fatal(path, f"not a readable Parquet file: {err}", "re-export it, or pass its format") from err
    keys = _resolve_fields(fields, table.column_names, path)
    _check_parquet_types(path, table.schema, keys)
    for row_no, record in enumerate(table.to_pylist(), start=1):
        _add_record(collector, record, keys, f"{path}:row {row_no}")


def _is_text_type(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _is_text_type(kind.value_type)
    return (
        pa.types.is_null(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
    )


def _check_parquet_types(path: Path, schema: pa.Schema, keys: _Keys) -> None:
    """Refuse id, title and text columns that are not strings, rather than index ``str()`` of their values.

    A list would become the text "[1, 2]", bytes their repr, a float id "1.0" or "nan". Integer ids convert
    exactly, so they are accepted.
    """
    problems = []
    for role, name in (("id", keys.id), ("title", keys.title), ("text", keys.text)):
        if name is None:
            continue
        kind = schema.field(name).type
        if _is_text_type(kind) or (role == "id" and pa.types.is_integer(kind)):
            continue
        allowed = "a string or integer" if role == "id" else "a string"
        problems.append(
            Problem(
                str(path),
                f"{role} column {name!r} has Arrow type {kind}, not {allowed} column",
                f"cast the column to string when writing the file (e.g. df[{name!r}].astype(str) after "
                f"checking the values), or pass --{role}-field naming a string column",
            )
        )
    if problems:
        raise BadInputError(problems)


def _read_folder(root: Path, collector: _Collector) -> list[str]:
    """Read a folder's document files; returns the other files it skipped, relative to ``root``."""
    if not root.is_dir():
        message = "is not a folder" if root.exists() else "does not exist"
        raise _fatal(root, message, "pass a folder of .txt/.md/.html/.pdf files, or a file with its --format")
    unsupported: list[Path] = []
    for path in _walk(root, collector, unsupported):
        rel = path.relative_to(root).as_posix()
        try:
            size = path.stat().st_size
            if size > collector.max_doc_bytes:  # checked before reading: it may be larger than memory
                collector.too_big(str(path), size, rel)
                continue
            data = path.read_bytes()
        except OSError as err:
            collector.problems.append(replace(_os_problem(path, err), record_id=rel))
            continue
        ext = path.suffix.lower().lstrip(".")
        parsed = _parse_file(path, ext, data)
        if isinstance(parsed, Problem):
            collector.problems.append(replace(parsed, record_id=rel))
            continue
        title, text = parsed
        metadata = {"path": rel, "format": ext}
        collector.add(
            str(path),
            rel,
            title,
            text,
            metadata,
            empty_fix="add text or remove the file",
            default_title=path.stem,
        )
    return [path.relative_to(root).as_posix() for path in unsupported]


def _walk(folder: Path, collector: _Collector, unsupported: list[Path]) -> Iterator[Path]:
    """Document files under ``folder`` in sorted order, skipping hidden files and folders (.git, .cache)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        collector.problems.append(_os_problem(folder, err))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from _walk(entry, collector, unsupported)
        elif entry.suffix.lower() in _FOLDER_SUFFIXES:
            yield entry
        else:
            unsupported.append(entry)


def _parse_file(path: Path, ext: str, data: bytes) -> tuple[str, str] | Problem:
    """Title and text of one folder file, or the problem that stops it being read."""
    if ext == "pdf":
        try:
            reader = PdfReader(io.BytesIO(data))
            text = "\n".join(page.extract_text() for page in reader.pages)
            title = (reader.metadata.title if reader.metadata else None) or ""
        except Exception as err:  # pypdf raises many unrelated types on damaged or encrypted files
            return Problem(str(path), f"cannot parse PDF: {err}", "re-export the PDF, or remove it")
        return title, text
    body = data.removeprefix(codecs.BOM_UTF8)
    try:
        content = body.decode("utf-8")
    except UnicodeDecodeError as err:
        offset = len(data) - len(body) + err.start
        message = f"not valid UTF-8: byte 0x{body[err.start]:02x} at byte offset {offset}"
        return Problem(str(path), message, _iconv_fix(path))
    if ext in ("html", "htm"):
        tree = LexborHTMLParser(content)
        heads = (tree.css_first("title"), tree.css_first("h1"))
        title = next((node.text() for node in heads if node is not None and node.text().strip()), "")
        tree.strip_tags(["script", "style", "noscript"])
        return title, tree.body.text(separator="\n") if tree.body is not None else ""
    if ext in ("md", "markdown"):
        return next((line[2:] for line in content.splitlines() if line.startswith("# ")), ""), content
    return "", content
