from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.types import BadInputError, Problem
from tasks.ingest.records import normalise_text
from tasks.ingest.sources import FieldMap, detect_format, read_source

REPO = Path(__file__).resolve().parents[2]


def _jsonl(path: Path, *records: object) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _problems(excinfo: pytest.ExceptionInfo[BadInputError]) -> list[Problem]:
    return excinfo.value.problems


def _pdf_bytes(text: str, title: str) -> bytes:
    """A minimal one-page PDF with ``text`` drawn in Helvetica and ``title`` in its Info dictionary."""
    content = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({title}) >>".encode(),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


# --- formats -------------------------------------------------------------------------------------------


def test_beir_folder(tmp_path: Path) -> None:
    _jsonl(
        tmp_path / "corpus.jsonl",
        {"_id": "d1", "title": "First", "text": "Alpha text.", "metadata": {"url": "http://a"}},
        {"_id": 2, "title": "", "text": "Beta text."},
    )
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "alpha"}\n')

    assert detect_format(tmp_path) == "beir"
    docs = list(read_source(tmp_path).documents)

    assert [(d.doc_id, d.title, d.text) for d in docs] == [
        ("d1", "First", "Alpha text."),
        ("2", "", "Beta text."),
    ]
    assert docs[0].metadata == {"url": "http://a"}
    assert docs[1].metadata == {}
    assert docs[0].location == f"{tmp_path / 'corpus.jsonl'}:1"


def test_jsonl_custom_fields_and_extra_metadata(tmp_path: Path) -> None:
    path = tmp_path / "docs.ndjson"
    path.write_text(
        json.dumps({"pid": 12, "headline": "Twelve", "body_text": "Body.", "lang": "en", "score": None})
        + "\n\n"
        + json.dumps({"pid": " p2 ", "headline": "Two", "body_text": "More.", "metadata": {"lang": "de"}})
        + "\n"
    )

    report = read_source(path, fields=FieldMap(id="pid", title="headline", text="body_text"))

    first, second = report.documents
    assert (first.doc_id, first.title, first.text) == ("12", "Twelve", "Body.")
    assert first.metadata == {"lang": "en"}  # None values are dropped
    assert second.doc_id == "p2"
    assert second.metadata == {"lang": "de"}  # a "metadata" dict is merged in
    assert second.location == f"{path}:3"  # blank lines still count
    assert report.skipped == []


def test_csv_with_multiline_field_and_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    path.write_text(
        'id,title,text,source\n7,Seven,"line one\nline two",web\nb,Bee,plain,\n', encoding="utf-8"
    )

    docs = list(read_source(path).documents)

    assert [d.doc_id for d in docs] == ["7", "b"]
    assert docs[0].text == "line one\nline two"
    assert docs[0].metadata == {"source": "web"}
    assert docs[1].location == f"{path}:4"  # the record after a two-line record starts on line 4


def test_csv_field_longer_than_csv_module_default_limit(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text("id,text\nd1," + "x" * 200_000 + "\n")

    (doc,) = read_source(path).documents

    assert len(doc.text) == 200_000


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "docs.parquet"
    table = pa.table({"doc_id": [12, 13], "content": ["Twelve.", "Thirteen."], "year": [2020, None]})
    pq.write_table(table, path)

    assert detect_format(path) == "parquet"
    docs = list(read_source(path).documents)

    assert [(d.doc_id, d.title, d.text) for d in docs] == [("12", "", "Twelve."), ("13", "", "Thirteen.")]
    assert docs[0].metadata == {"year": 2020}
    assert docs[1].metadata == {}
    assert docs[1].location == f"{path}:row 2"


def test_folder_of_text_markdown_and_html(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.md").write_text("intro\n# Heading A\n\nSome *markdown*.\n")
    (tmp_path / "plain.TXT").write_text("Just text.\n")
    (tmp_path / "page.html").write_text(
        "<html><head><title>Page Title</title><style>p {color: red}</style></head>"
        "<body><p>Visible paragraph.</p><script>alert('x')</script>"
        "<noscript>enable js</noscript></body></html>"
    )
    (tmp_path / "h1.htm").write_text("<body><h1>Only Heading</h1><p>Body.</p></body>")
    (tmp_path / "skip.py").write_text("print('not a document')")
    (tmp_path / ".hidden.txt").write_text("hidden")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD.txt").write_text("hidden too")

    assert detect_format(tmp_path) == "folder"
    docs = {d.doc_id: d for d in read_source(tmp_path).documents}

    assert list(docs) == ["h1.htm", "notes/a.md", "page.html", "plain.TXT"]
    assert docs["notes/a.md"].title == "Heading A"
    assert docs["notes/a.md"].metadata == {"path": "notes/a.md", "format": "md"}
    assert docs["plain.TXT"].title == "plain"  # no title: the file stem
    assert docs["plain.TXT"].metadata["format"] == "txt"
    assert docs["page.html"].title == "Page Title"
    assert docs["page.html"].text == "Visible paragraph."  # script, style and noscript dropped
    assert docs["h1.htm"].title == "Only Heading"
    assert docs["notes/a.md"].location == str(tmp_path / "notes" / "a.md")


def test_folder_pdf(tmp_path: Path) -> None:
    (tmp_path / "hello.pdf").write_bytes(_pdf_bytes("Hello PDF world", "Greeting"))

    (doc,) = read_source(tmp_path).documents

    assert doc.text == "Hello PDF world"
    assert doc.title == "Greeting"
    assert doc.metadata == {"path": "hello.pdf", "format": "pdf"}


def test_unparseable_pdf_is_a_record_problem(tmp_path: Path) -> None:
    (tmp_path / "broken.pdf").write_bytes(b"this is not a pdf at all")
    (tmp_path / "good.txt").write_text("fine")

    with pytest.raises(BadInputError) as excinfo:
        read_source(tmp_path)
    report = read_source(tmp_path, skip_bad=True)

    (problem,) = _problems(excinfo)
    assert problem.location == str(tmp_path / "broken.pdf")
    assert "PDF" in problem.message
    assert [d.doc_id for d in report.documents] == ["good.txt"]
    assert report.skipped == [problem]


# --- normalisation -------------------------------------------------------------------------------------


def test_normalise_text() -> None:
    raw = "  Cafe\u0301\x00 \t and\x07  tea   \r\nline two   \n\n\n\n\nend\t\n"

    assert normalise_text(raw) == "Café and tea\nline two\n\nend"
    assert normalise_text("keep\ttabs? no: one space") == "keep tabs? no: one space"


def test_title_newlines_collapse_to_spaces(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", {"id": "a", "title": " Two\n\nline  title ", "text": "x"})

    (doc,) = read_source(path).documents

    assert doc.title == "Two line title"


# --- detection -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.jsonl", "jsonl"), ("a.NDJSON", "jsonl"), ("a.csv", "csv"), ("a.parquet", "parquet")],
)
def test_detect_format_by_extension(tmp_path: Path, name: str, expected: str) -> None:
    (tmp_path / name).write_bytes(b"")
    assert detect_format(tmp_path / name) == expected


def test_detect_format_rejects_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "docs.xlsx"
    path.write_bytes(b"")

    with pytest.raises(BadInputError) as excinfo:
        detect_format(path)

    (problem,) = _problems(excinfo)
    assert problem.location == str(path)
    assert ".jsonl" in problem.fix and ".csv" in problem.fix and ".parquet" in problem.fix


# --- bad input -----------------------------------------------------------------------------------------


def _bad_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b'{"_id": "a", "text": "first a"}\n'  # 1 good
        b'{"_id": "b", "text": \n'  # 2 malformed JSON
        b'["not", "an", "object"]\n'  # 3 array
        b'{"text": "no id here"}\n'  # 4 missing id
        b'{"_id": "a", "text": "second a"}\n'  # 5 duplicate of line 1
        b'{"_id": "c", "title": " ", "text": "  \\u0007 "}\n'  # 6 no title nor text after normalisation
        b'{"_id": "d", "text": "caf\xe9"}\n'  # 7 latin-1 byte
        b'{"_id": "e", "text": "last good"}\n'  # 8 good
    )
    return path


def test_all_problems_raised_at_once_with_file_line_and_fix(tmp_path: Path) -> None:
    path = _bad_jsonl(tmp_path)

    with pytest.raises(BadInputError) as excinfo:
        read_source(path)

    by_line = {p.location.rsplit(":", 1)[1]: p for p in _problems(excinfo)}
    assert sorted(by_line, key=int) == ["2", "3", "4", "5", "6", "7"]
    assert all(p.location.startswith(str(path)) and p.fix for p in by_line.values())
    assert "malformed JSON" in by_line["2"].message
    assert "not an object" in by_line["3"].message
    assert "missing id" in by_line["4"].message
    assert by_line["5"].record_id == "a" and f"{path}:1" in by_line["5"].message
    assert by_line["6"].message == "has neither title nor text" and "fill" in by_line["6"].fix
    assert "UTF-8" in by_line["7"].message and "iconv" in by_line["7"].fix
    assert "nothing was written" in str(excinfo.value)


def test_skip_bad_keeps_good_records_and_first_duplicate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _bad_jsonl(tmp_path)

    with caplog.at_level(logging.WARNING, logger="tasks.ingest.sources"):
        report = read_source(path, skip_bad=True)

    assert [(d.doc_id, d.text) for d in report.documents] == [("a", "first a"), ("e", "last good")]
    assert len(report.skipped) == 6
    assert "skipped 6 bad record(s)" in caplog.text


def test_non_utf8_line_names_line_and_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"id,text\nok,fine\nbad,caf\xe9\n")

    with pytest.raises(BadInputError) as excinfo:
        read_source(path)
    report = read_source(path, skip_bad=True)

    (problem,) = _problems(excinfo)
    assert problem.location == f"{path}:3"
    assert "byte 0xe9 at byte offset 23" in problem.message  # 8 + 8 bytes of earlier lines, then "bad,caf"
    assert "iconv -f latin1 -t utf-8" in problem.fix
    assert [d.doc_id for d in report.documents] == ["ok"]


def test_non_utf8_text_file_in_folder(tmp_path: Path) -> None:
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9")
    (tmp_path / "ok.txt").write_text("ok")

    report = read_source(tmp_path, skip_bad=True)

    (problem,) = report.skipped
    assert problem.location == str(tmp_path / "latin.txt")
    assert "byte offset 3" in problem.message
    assert [d.doc_id for d in report.documents] == ["ok.txt"]


def test_document_over_size_limit(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", {"_id": "big", "text": "x" * 2000}, {"_id": "small", "text": "y"})

    with pytest.raises(BadInputError) as excinfo:
        read_source(path, max_doc_bytes=1000)

    (problem,) = _problems(excinfo)
    assert problem.location == f"{path}:1" and problem.record_id == "big"
    assert "MB" in problem.message and "2,000 bytes" in problem.message and "1,000 bytes" in problem.message
    assert "ZSR_MAX_DOC_BYTES" in problem.fix and "split" in problem.fix


def test_ten_megabyte_file_against_default_limit(tmp_path: Path) -> None:
    (tmp_path / "huge.txt").write_bytes(b"word " * 2_000_000)
    (tmp_path / "small.txt").write_text("small")

    report = read_source(tmp_path, skip_bad=True)

    (problem,) = report.skipped
    assert problem.location == str(tmp_path / "huge.txt")
    assert "10.00 MB" in problem.message and "5.00 MB limit" in problem.message
    assert [d.doc_id for d in report.documents] == ["small.txt"]


def test_unreadable_single_file_is_fatal_even_with_skip_bad(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.mkdir()  # reading a directory fails even as root, unlike chmod 000

    with pytest.raises(BadInputError) as excinfo:
        read_source(path, fmt="jsonl", skip_bad=True)

    (problem,) = _problems(excinfo)
    assert problem.location == str(path)
    assert "cannot read" in problem.message and "--format folder" in problem.fix


def test_missing_file_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(BadInputError) as excinfo:
        read_source(tmp_path / "nope.csv", skip_bad=True)

    (problem,) = _problems(excinfo)
    assert problem.location == str(tmp_path / "nope.csv")
    assert "does not exist" in problem.message and "check the path" in problem.fix


def test_unreadable_file_in_folder_is_a_record_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked.txt"
    locked.write_text("secret")
    (tmp_path / "open.txt").write_text("open")
    read_bytes = Path.read_bytes

    def deny(self: Path) -> bytes:
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    report = read_source(tmp_path, skip_bad=True)

    (problem,) = report.skipped
    assert problem.location == str(locked)
    assert "Permission denied" in problem.message and "chmod" in problem.fix
    assert [d.doc_id for d in report.documents] == ["open.txt"]


def test_unknown_explicit_csv_field_lists_available_fields(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("doc,body\n1,text\n")

    with pytest.raises(BadInputError) as excinfo:
        read_source(path, fields=FieldMap(id="pid"), skip_bad=True)

    (problem,) = _problems(excinfo)
    assert problem.location == str(path)
    assert "'pid' not found" in problem.message and "'doc', 'body'" in problem.message
    assert "--id-field" in problem.fix


def test_unknown_parquet_title_field(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"id": ["a"], "text": ["t"]}), path)

    with pytest.raises(BadInputError) as excinfo:
        read_source(path, fields=FieldMap(title="headline"))

    (problem,) = _problems(excinfo)
    assert "'headline' not found" in problem.message and "'id', 'text'" in problem.message
    assert "--title-field" in problem.fix


def test_jsonl_without_any_text_field_is_reported_once(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", {"_id": "a", "passage": "x"}, {"_id": "b", "passage": "y"})

    with pytest.raises(BadInputError) as excinfo:
        read_source(path, skip_bad=True)

    (problem,) = _problems(excinfo)  # one source-level problem, not one per line
    assert problem.location == str(path)
    assert "no text field" in problem.message and "'passage'" in problem.message
    assert "--text-field" in problem.fix


def test_jsonl_field_present_in_some_records_only(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", {"pid": "a", "text": "x"}, {"id": "b", "text": "y"})

    report = read_source(path, fields=FieldMap(id="pid"), skip_bad=True)

    assert [d.doc_id for d in report.documents] == ["a"]
    (problem,) = report.skipped
    assert problem.location == f"{path}:2" and "missing id" in problem.message


def test_csv_row_with_wrong_field_count(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,text\na,one\nb,two,extra\n")

    with pytest.raises(BadInputError) as excinfo:
        read_source(path)

    (problem,) = _problems(excinfo)
    assert problem.location == f"{path}:3"
    assert "3 fields" in problem.message and "quote" in problem.fix


@pytest.mark.parametrize("make", ["empty_folder", "empty_jsonl"])
def test_empty_source(tmp_path: Path, make: str) -> None:
    if make == "empty_folder":
        source = tmp_path / "docs"
        source.mkdir()
        (source / "ignored.py").write_text("x = 1")
    else:
        source = tmp_path / "d.jsonl"
        source.write_text("\n\n")

    with pytest.raises(BadInputError) as excinfo:
        read_source(source, skip_bad=True)

    (problem,) = _problems(excinfo)
    assert problem.location == str(source)
    assert problem.message == "no documents found" and "folder" in problem.fix


def test_all_records_bad_with_skip_bad_reports_them_and_no_documents(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("{broken\n")

    with pytest.raises(BadInputError) as excinfo:
        read_source(path, skip_bad=True)

    messages = [p.message for p in _problems(excinfo)]
    assert messages[0].startswith("malformed JSON") and messages[-1] == "no documents found"


def test_module_does_not_import_prefect() -> None:
    code = "import sys, tasks.ingest.sources; assert 'prefect' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# --- ids of skipped records (so re-indexing keeps, not deletes, what they hold) ---------------------------


def test_skipped_records_carry_their_id_where_it_can_be_read(tmp_path: Path) -> None:
    report = read_source(_bad_jsonl(tmp_path), skip_bad=True)

    by_line = {p.location.rsplit(":", 1)[1]: p.record_id for p in report.skipped}
    # malformed JSON, a JSON array and a record without id have none; a bad byte in the text hides no id
    assert by_line == {"2": None, "3": None, "4": None, "5": "a", "6": "c", "7": "d"}
    assert report.skipped_ids == {"a", "c", "d"} and report.skipped_without_id == 3


def test_a_bad_byte_inside_the_id_leaves_the_id_unknown(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"_id": "caf\xe9", "text": "x"}\n{"_id": "ok", "text": "fine"}\n')

    report = read_source(path, skip_bad=True)

    assert [p.record_id for p in report.skipped] == [None] and report.skipped_without_id == 1


def test_skipped_csv_rows_and_folder_files_carry_their_id(tmp_path: Path) -> None:
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(b"id,text\nok,fine\nbad,caf\xe9\nshort\n")
    report = read_source(csv_path, skip_bad=True)
    # the row with a missing field may be misaligned: its id is not trusted
    assert [p.record_id for p in report.skipped] == ["bad", None]

    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "broken.pdf").write_bytes(b"not a pdf")
    (folder / "latin.txt").write_bytes(b"caf\xe9")
    (folder / "ok.txt").write_text("ok")
    report = read_source(folder, skip_bad=True)
    assert sorted(p.record_id for p in report.skipped) == ["latin.txt", "sub/broken.pdf"]
    assert report.skipped_without_id == 0


# --- typed Parquet columns, title-only records, odd ids, unsupported folders, CSV delimiters (#11) -----


@pytest.mark.parametrize(
    ("column", "values", "arrow_type"),
    [
        ("text", [[1, 2], [3]], "list<element: int64>"),
        ("text", [b"\xff\x00", b"ok"], "binary"),
        ("id", [1.0, float("nan")], "double"),
        ("title", [[1], [2]], "list<element: int64>"),
    ],
)
def test_parquet_column_of_the_wrong_type_is_refused_naming_file_column_and_type(
    tmp_path: Path, column: str, values: list[object], arrow_type: str
) -> None:
    columns: dict[str, list[object]] = {"id": ["a", "b"], "title": ["A", "B"], "text": ["one", "two"]}
    columns[column] = values
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table(columns), path)

    with pytest.raises(BadInputError) as excinfo:
        read_source(path, skip_bad=True)

    (problem,) = _problems(excinfo)
    assert problem.location == str(path)
    assert f"column {column!r}" in problem.message and arrow_type in problem.message
    assert "string" in problem.fix and f"--{column}-field" in problem.fix


def test_parquet_integer_ids_convert_exactly_and_null_ids_are_record_problems(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    big = 2**62 + 1  # not exact as a float
    table = pa.table({"id": pa.array([17, None, big], pa.int64()), "text": ["a", "b", None]})
    pq.write_table(table, path)

    report = read_source(path, skip_bad=True)

    assert [d.doc_id for d in report.documents] == ["17"]
    assert [(p.location, p.record_id) for p in report.skipped] == [
        (f"{path}:row 2", None),
        (f"{path}:row 3", str(big)),
    ]


def test_title_only_record_is_a_document_and_one_with_neither_is_refused(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl",
        {"_id": "1", "title": "On the theory of flat plates", "text": ""},
        {"_id": "2", "title": " ", "text": ""},
        {"_id": "3", "text": "body only"},
    )

    report = read_source(path, skip_bad=True)

    assert [(d.doc_id, d.title, d.text) for d in report.documents] == [
        ("1", "On the theory of flat plates", ""),
        ("3", "", "body only"),
    ]
    (problem,) = report.skipped
    assert problem.location == f"{path}:2" and problem.record_id == "2"
    assert "neither title nor text" in problem.message


def test_empty_folder_file_is_still_refused_though_its_name_would_title_it(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "empty.txt").write_text("  \n")
    (folder / "ok.txt").write_text("ok")

    report = read_source(folder, skip_bad=True)

    assert [(d.doc_id, d.title) for d in report.documents] == [("ok.txt", "ok")]
    assert [p.record_id for p in report.skipped] == ["empty.txt"]


def test_ids_with_spaces_are_kept_and_control_characters_refused(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl",
        {"_id": "Ada Lovelace", "text": "a"},
        {"_id": "nul\x00id", "text": "b"},
        {"_id": "bell\x07", "text": "c"},
        {"_id": "tab\tid", "text": "d"},
    )

    report = read_source(path, skip_bad=True)

    assert [d.doc_id for d in report.documents] == ["Ada Lovelace"]
    assert [p.location for p in report.skipped] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert all("control character" in p.message and "id" in p.fix for p in report.skipped)
    assert "U+0000" in report.skipped[0].message


def test_folder_with_only_unsupported_files_names_what_it_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.py", "b.docx", "sub/c.rtf", ".hidden.txt"):
        (folder / name).write_text("x")

    with pytest.raises(BadInputError) as excinfo:
        read_source(folder)

    (problem,) = _problems(excinfo)
    assert problem.message == "no documents found"
    assert f"no .txt/.md/.html/.pdf files in {folder}" in problem.fix
    assert "skipped 3 files: a.py, b.docx, sub/c.rtf" in problem.fix


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_csv_with_another_delimiter_suggests_it_and_reads_with_it(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(delimiter.join(["id", "text"]) + "\n" + delimiter.join(["a", "one, two"]) + "\n")

    with pytest.raises(BadInputError) as excinfo:
        read_source(path)

    (problem,) = _problems(excinfo)
    assert problem.location == str(path)
    assert f"--delimiter {delimiter!r}" in problem.fix and f"{delimiter!r}-delimited" in problem.fix

    (doc,) = read_source(path, delimiter=delimiter).documents
    assert (doc.doc_id, doc.text) == ("a", "one, two")


@pytest.mark.parametrize(("delimiter", "given"), [(";", ";"), ("\t", "\\t")])
def test_zsr_ingest_takes_the_delimiter_the_hint_names(tmp_path: Path, delimiter: str, given: str) -> None:
    """The CLI end to end (fake embedder): refused with the hint, then read with the option as printed."""
    path = tmp_path / "d.csv"
    path.write_text(delimiter.join(["id", "text"]) + "\n" + delimiter.join(["a", "one, two"]) + "\n")

    def zsr(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tests.cli_target", "ingest", str(path), "-c", "csv", *args],
            cwd=REPO,
            env={**os.environ, "ZSR_HOME": str(tmp_path / "home")},
            capture_output=True,
            text=True,
            timeout=300,
        )

    refused = zsr()
    assert refused.returncode == 2 and f"--delimiter {delimiter!r}" in refused.stderr, refused.stderr
    report = zsr("--delimiter", given, "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["added"] == 1
