"""Format readers: each yields a source's documents one record at a time, checked by a :class:`Collector`.

No reader holds a whole source: JSONL and CSV are read line by line, Parquet a record batch at a time and a
folder file by file, so reading costs memory for one record (one file of a folder), not for the source.
Every file a reader opens is stamped (:meth:`Collector.opened`), so two reading passes can be compared.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from pypdf import PdfReader
from selectolax.lexbor import LexborHTMLParser

from storage.types import BadInputError, Document, Problem
from tasks.ingest.records import Collector, FieldMap, Keys, resolve_fields

FOLDER_SUFFIXES = {".txt", ".md", ".markdown", ".html", ".htm", ".pdf"}
_CSV_FIELD_LIMIT = 2**31 - 1  # the largest value every platform's C long accepts
_OTHER_DELIMITERS = (";", "\t", "|")
_PARQUET_BATCH_ROWS = 1024


def fatal(path: Path, message: str, fix: str) -> BadInputError:
    """An error for a source that cannot be read at all, which ``skip_bad`` cannot help."""
    return BadInputError([Problem(str(path), message, fix)])


@contextmanager
def _opened(path: Path, collector: Collector) -> Iterator[BinaryIO]:
    """A single-file source, open; failing to open it is fatal, as there is nothing else to read."""
    try:
        file = path.open("rb")
    except OSError as err:
        raise BadInputError([_os_problem(path, err)]) from err
    with file:
        collector.opened(path, os.fstat(file.fileno()))
        yield file


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


def _decode_lines(path: Path, file: BinaryIO) -> Iterator[tuple[int, str, Problem | None]]:
    """Yield (line number, text, problem) per line, so a bad byte costs one record rather than the file.

    A bad line is still yielded, decoded with replacement characters, so CSV quoting stays in step. The lines
    are those the file splits into at each newline: one ending in a newline, or an empty one, ends with an
    empty line, as the readers expect.
    """
    offset, line_no, raw = 0, 0, b"\n"
    for line_no, raw in enumerate(file, start=1):
        line = raw.removesuffix(b"\n")
        if line_no == 1 and line.startswith(codecs.BOM_UTF8):  # Excel and Notepad add one
            line, offset = line[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
        yield line_no, *_decode(path, line_no, line, offset)
        offset += len(line) + 1
    if raw.endswith(b"\n"):
        yield line_no + 1, "", None


def _decode(path: Path, line_no: int, line: bytes, offset: int) -> tuple[str, Problem | None]:
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as err:
        message = f"not valid UTF-8: byte 0x{line[err.start]:02x} at byte offset {offset + err.start}"
        return line.decode("utf-8", "replace"), Problem(f"{path}:{line_no}", message, _iconv_fix(path))


def _jsonl_fields(path: Path, collector: Collector) -> list[str] | None:
    """Every key of the file's JSON objects in order of appearance; ``None`` when it holds no object.

    Fields are resolved over all records, as JSON records need not share keys: this is a pass of its own.
    """
    available: dict[str, None] = {}
    found = False
    with _opened(path, collector) as file:
        for _, text, problem in _decode_lines(path, file):
            if problem is not None or not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                found = True
                available.update(dict.fromkeys(record))
    return list(available) if found else None


def read_jsonl(path: Path, fields: FieldMap, collector: Collector) -> Iterator[Document]:
    """The documents of a JSONL file, line by line."""
    available = _jsonl_fields(path, collector)
    keys = None if available is None else resolve_fields(fields, available, path)
    with _opened(path, collector) as file:
        for line_no, text, problem in _decode_lines(path, file):
            location = f"{path}:{line_no}"
            if problem is not None:
                collector.problems.append(problem)
                if keys is not None:
                    _name_undecodable(collector, keys, text)
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
                if not isinstance(record, dict):
                    collector.problem(
                        location,
                        f"line is a JSON {type(record).__name__}, not an object",
                        'write one object per line, e.g. {"_id": "d1", "title": "...", "text": "..."}',
                    )
                elif keys is not None and (doc := collector.add_record(record, keys, location)):
                    yield doc


def _name_undecodable(collector: Collector, keys: Keys, text: str) -> None:
    """Name the last problem, a line with a bad byte, by the id its record still holds, if any."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return
    if isinstance(record, dict):
        collector.name_record(len(collector.problems) - 1, record.get(keys.id))


def read_csv(path: Path, fields: FieldMap, collector: Collector, delimiter: str) -> Iterator[Document]:
    """The documents of a CSV file, row by row (a quoted field may span lines)."""
    # The default 128 KiB field limit would reject long documents before the size check could name them.
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    bad_lines: dict[int, int] = {}  # line number -> index of its problem

    def lines(file: BinaryIO) -> Iterator[str]:
        for line_no, text, problem in _decode_lines(path, file):
            if problem is not None:
                bad_lines[line_no] = len(collector.problems)
                collector.problems.append(problem)
            yield text + "\n"

    with _opened(path, collector) as file:
        reader = csv.reader(lines(file), delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None:
                return
            if bad_lines.keys() & set(range(1, reader.line_num + 1)):
                raise BadInputError(collector.problems)
            header = [name.strip() for name in header]
            _check_delimiter(path, header, delimiter)
            keys = resolve_fields(fields, header, path)
            end = reader.line_num
            for row in reader:
                # A quoted field may span lines: the record starts after the previous one ends.
                start, end = end + 1, reader.line_num
                bad = [bad_lines.pop(n) for n in range(start, end + 1) if n in bad_lines]
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
                elif doc := collector.add_record(dict(zip(header, row, strict=True)), keys, location):
                    yield doc
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
        raise fatal(
            path,
            f"the header parses to one column {header[0]!r} with delimiter {delimiter!r}",
            f"it looks {found!r}-delimited: pass --delimiter {found!r}",
        )


def read_parquet(path: Path, fields: FieldMap, collector: Collector) -> Iterator[Document]:
    """The documents of a Parquet file, a record batch at a time."""
    with _opened(path, collector) as file:
        try:
            parquet = pq.ParquetFile(file)
            keys = resolve_fields(fields, parquet.schema_arrow.names, path)
            _check_parquet_types(path, parquet.schema_arrow, keys)
            row_no = 0
            for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
                for record in batch.to_pylist():
                    row_no += 1
                    if doc := collector.add_record(record, keys, f"{path}:row {row_no}"):
                        yield doc
        except pa.ArrowException as err:
            fix = "re-export it, or pass its format"
            raise fatal(path, f"not a readable Parquet file: {err}", fix) from err


def _is_text_type(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _is_text_type(kind.value_type)
    return (
        pa.types.is_null(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
    )


def _check_parquet_types(path: Path, schema: pa.Schema, keys: Keys) -> None:
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


def read_folder(root: Path, collector: Collector, unsupported: list[str]) -> Iterator[Document]:
    """The documents of a folder's document files, file by file; the other files go to ``unsupported``."""
    if not root.is_dir():
        message = "is not a folder" if root.exists() else "does not exist"
        raise fatal(root, message, "pass a folder of .txt/.md/.html/.pdf files, or a file with its --format")
    for path in _walk(root, collector, root, unsupported):
        rel = path.relative_to(root).as_posix()
        try:
            stat = path.stat()
            collector.opened(path, stat)
            if stat.st_size > collector.max_doc_bytes:  # checked before reading: it may be larger than memory
                collector.too_big(str(path), stat.st_size, rel)
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
        doc = collector.add(
            str(path),
            rel,
            title,
            text,
            metadata,
            empty_fix="add text or remove the file",
            default_title=path.stem,
        )
        if doc:
            yield doc


def _walk(folder: Path, collector: Collector, root: Path, unsupported: list[str]) -> Iterator[Path]:
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
            yield from _walk(entry, collector, root, unsupported)
        elif entry.suffix.lower() in FOLDER_SUFFIXES:
            yield entry
        else:
            unsupported.append(entry.relative_to(root).as_posix())


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
