from __future__ import annotations

import json
from pathlib import Path

import pytest

import tasks.evaluation.testsets as testsets
from storage.registry import UnknownCorpusError
from storage.types import BadInputError
from tasks.ingest.index import reindex
from tests.fakes import make_docs

QUERIES = {"q1": "wing lift", "q2": "shock layer", "q3": "never judged"}
QRELS = [("q1", "d1", 1), ("q1", "d2", 0), ("q2", "d3", 2)]


@pytest.fixture
def store(tmp_store, fake):
    reindex(tmp_store, "c", make_docs(10), fake.space, lambda: fake)
    return tmp_store


def write_beir(folder: Path, queries=QUERIES, qrels=QRELS, split: str = "test") -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"_id": qid, "text": text}) + "\n" for qid, text in queries.items())
    (folder / "queries.jsonl").write_text(lines)
    rows = "".join(f"{q}\t{d}\t{g}\n" for q, d, g in qrels)
    (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    return folder


def test_beir_round_trip_drops_unjudged_queries_and_keeps_grade_zero(tmp_path, store):
    root = tmp_path / "testsets"
    testset, report = testsets.register(root, store, "c", "dev", write_beir(tmp_path / "src"))
    assert testset.queries == {"q1": "wing lift", "q2": "shock layer"}
    assert testset.qrels == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    assert (testset.kind, testset.source) == ("human", str((tmp_path / "src").resolve()))
    assert (report.n_queries, report.n_qrels, report.n_judged_queries) == (3, 3, 2)
    assert report.unjudged_queries == ["q3"] and report.missing_docs == [] and len(report.warnings) == 1
    assert testsets.load(root, "c", "dev") == testset
    assert sorted(p.name for p in (root / "c").iterdir()) == ["dev"]  # no work folder left behind

    again, _ = testsets.register(root, store, "c", "dev", tmp_path / "src", replace=True)
    assert again.content_hash == testset.content_hash
    assert testsets.load(root, "c", "dev") == again


def test_registered_copy_is_independent_of_the_original(tmp_path, store):
    root, src = tmp_path / "testsets", write_beir(tmp_path / "src")
    testset, _ = testsets.register(root, store, "c", "dev", src)
    write_beir(src, qrels=[("q1", "d5", 1)])
    assert testsets.load(root, "c", "dev") == testset


def test_edited_copy_fails_to_load(tmp_path, store):
    root = tmp_path / "testsets"
    testsets.register(root, store, "c", "dev", write_beir(tmp_path / "src"))
    with (root / "c" / "dev" / "qrels" / "test.tsv").open("a") as out:
        out.write("q1\td4\t1\n")
    with pytest.raises(BadInputError, match="edited after registration"):
        testsets.load(root, "c", "dev")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("topics.jsonl", '{"_id": "q1", "text": "wing lift"}\n{"_id": 2, "text": "shock layer"}\n'),
        ("topics.tsv", "q1\twing lift\n\n2\tshock layer\n"),
    ],
)
def test_trec_qrels_with_jsonl_or_tsv_queries(tmp_path, store, name, content):
    (tmp_path / name).write_text(content)
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\nq1 0 d2 0\n2  Q0\td3   2\n")
    testset, _ = testsets.register(
        tmp_path / "testsets", store, "c", "trec", tmp_path / "qrels.txt", queries=tmp_path / name
    )
    assert testset.queries == {"q1": "wing lift", "2": "shock layer"}
    assert testset.qrels == {"q1": {"d1": 1, "d2": 0}, "2": {"d3": 2}}


def test_trec_needs_a_queries_file(tmp_path):
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\n")
    with pytest.raises(BadInputError, match="queries file"):
        testsets.read_testset_files(tmp_path / "qrels.txt")


def test_unknown_format_is_an_error(tmp_path):
    with pytest.raises(BadInputError, match="unknown test set format 'csv'"):
        testsets.read_testset_files(write_beir(tmp_path / "src"), fmt="csv")  # type: ignore[arg-type]


def test_beir_split_that_does_not_exist_lists_the_ones_that_do(tmp_path):
    with pytest.raises(BadInputError, match=r"found: test"):
        testsets.read_testset_files(write_beir(tmp_path / "src"), split="dev")


def test_beir_qrels_without_header_keep_their_first_judgement(tmp_path):
    src = write_beir(tmp_path / "src")
    (src / "qrels" / "test.tsv").write_text("q1\td1\t1\nq2\td3\t2\n")
    assert testsets.read_testset_files(src)[1] == {"q1": {"d1": 1}, "q2": {"d3": 2}}


def test_missing_documents_are_reported_and_kept(tmp_path, store):
    src = write_beir(tmp_path / "src", qrels=[*QRELS, ("q1", "d99", 1)])
    testset, report = testsets.register(tmp_path / "testsets", store, "c", "dev", src)
    assert report.missing_docs == [("q1", "d99")]
    assert testset.qrels["q1"] == {"d1": 1, "d2": 0, "d99": 1}
    assert any("1 of 4 judgements" in w and "d99" in w for w in report.warnings)


def test_no_judged_document_in_the_corpus_is_an_error(tmp_path, store):
    src = write_beir(tmp_path / "src", qrels=[("q1", "x1", 1), ("q2", "x2", 1)])
    with pytest.raises(BadInputError, match="belong to corpus 'c'"):
        testsets.register(tmp_path / "testsets", store, "c", "dev", src)
    assert not (tmp_path / "testsets" / "c" / "dev").exists()


def test_queries_without_text_are_dropped(tmp_path, store):
    src = write_beir(tmp_path / "src", qrels=[*QRELS, ("q9", "d4", 1)])
    testset, report = testsets.register(tmp_path / "testsets", store, "c", "dev", src)
    assert report.queries_without_text == ["q9"] and "q9" not in testset.qrels


def test_duplicate_query_id_names_both_lines(tmp_path):
    src = write_beir(tmp_path / "src")
    with (src / "queries.jsonl").open("a") as out:
        out.write('{"_id": "q1", "text": "again"}\n')
    with pytest.raises(BadInputError) as err:
        testsets.read_testset_files(src)
    assert "queries.jsonl:4" in str(err.value) and "queries.jsonl:1" in str(err.value)


def test_malformed_qrels_lines_name_file_and_line(tmp_path):
    src = write_beir(tmp_path / "src")
    with (src / "qrels" / "test.tsv").open("a") as out:
        out.write("q1\td5\n\nq1\td6\thigh\n")
    with pytest.raises(BadInputError) as err:
        testsets.read_testset_files(src)
    problems = err.value.problems
    assert [p.location for p in problems] == [f"{src}/qrels/test.tsv:5", f"{src}/qrels/test.tsv:7"]
    assert "expected 3 columns, found 2" in problems[0].message
    assert "not an integer" in problems[1].message


def test_conflicting_grades_are_an_error_but_repeats_are_not(tmp_path):
    src = write_beir(tmp_path / "src", qrels=[*QRELS, ("q1", "d1", 1), ("q2", "d3", 1)])
    with pytest.raises(BadInputError) as err:
        testsets.read_testset_files(src)
    (problem,) = err.value.problems
    assert problem.location.endswith("test.tsv:6") and "test.tsv:4" in problem.message


@pytest.mark.parametrize(
    ("qrels", "message"),
    [
        ([("q7", "d1", 1)], "no query has both text and a judgement"),
        ([], r"test.tsv: holds no judgements \(the file is empty\)"),
    ],
    ids=["no-common-query", "empty-qrels"],
)
def test_unusable_test_set_is_an_error(tmp_path, store, qrels, message):
    src = write_beir(tmp_path / "src", qrels=qrels)
    with pytest.raises(BadInputError, match=message):
        testsets.register(tmp_path / "testsets", store, "c", "dev", src)
    assert not (tmp_path / "testsets" / "c" / "dev").exists()


def test_unknown_corpus_is_raised_before_reading(tmp_path, store):
    with pytest.raises(UnknownCorpusError):
        testsets.register(tmp_path / "testsets", store, "nope", "dev", tmp_path / "missing")


def test_name_is_validated(tmp_path, store):
    with pytest.raises(ValueError, match="not allowed"):
        testsets.register(tmp_path / "testsets", store, "c", "../dev", write_beir(tmp_path / "src"))


def test_registered_name_needs_replace(tmp_path, store):
    root, src = tmp_path / "testsets", write_beir(tmp_path / "src")
    first, _ = testsets.register(root, store, "c", "dev", src)
    write_beir(src, qrels=[("q1", "d5", 1)])
    with pytest.raises(ValueError, match="already registered"):
        testsets.register(root, store, "c", "dev", src)
    assert testsets.load(root, "c", "dev") == first
    replaced, _ = testsets.register(root, store, "c", "dev", src, replace=True)
    assert testsets.load(root, "c", "dev").qrels == replaced.qrels == {"q1": {"d5": 1}}


def test_list_testsets_and_unknown_name(tmp_path, store):
    root, src = tmp_path / "testsets", write_beir(tmp_path / "src")
    assert testsets.list_testsets(root) == []
    for name in ("b", "a"):
        testsets.register(root, store, "c", name, src)
    listed = testsets.list_testsets(root, "c")
    assert [(t["corpus"], t["name"], t["n_queries"], t["n_qrels"]) for t in listed] == [
        ("c", "a", 2, 3),
        ("c", "b", 2, 3),
    ]
    assert set(listed[0]) == {"corpus", "name", "kind", "n_queries", "n_qrels", "created_at", "source"}
    assert testsets.list_testsets(root) == listed and testsets.list_testsets(root, "other") == []
    with pytest.raises(testsets.UnknownTestSetError, match=r"known: a, b"):
        testsets.load(root, "c", "nope")


def test_failed_replace_leaves_the_old_set_in_place(tmp_path, store, monkeypatch):
    root, src = tmp_path / "testsets", write_beir(tmp_path / "src")
    first, _ = testsets.register(root, store, "c", "dev", src)
    rename = Path.rename

    def crash_on_swap_in(self, target):
        if self.name == "new":
            raise OSError("disk gone")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", crash_on_swap_in)
    with pytest.raises(OSError, match="disk gone"):
        testsets.register(root, store, "c", "dev", write_beir(src, qrels=[("q1", "d5", 1)]), replace=True)
    monkeypatch.undo()
    assert testsets.load(root, "c", "dev") == first
    assert sorted(p.name for p in (root / "c").iterdir()) == ["dev"]


def test_trec_qrels_ids_are_percent_decoded_as_zsr_export_encodes_them(tmp_path, store):
    (tmp_path / "qrels.txt").write_text("query%201 0 Ada%20Lovelace 1\nquery%201 0 100%25%09x 0\nq2 0 d1 2\n")

    qrels = testsets._read_qrels(tmp_path / "qrels.txt", trec=True)

    assert qrels == {"query 1": {"Ada Lovelace": 1, "100%\tx": 0}, "q2": {"d1": 2}}
