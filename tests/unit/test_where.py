"""``--where``: metadata filters applied before the top k (dense, bm25, hybrid), clear errors for bad ones,
and metadata keys that later ingests add or contradict (issue 13, item 3)."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

import tasks.workspace
from storage.metadata import FilterError
from storage.types import BadInputError, Document
from tasks.ingest.index import reindex
from tasks.ingest.views import build_views
from tasks.methods.search import Searcher
from tests.conftest import zsr_home_at
from tests.fakes import FakeEmbedder

VOCAB = ["wing", "flow", "heat", "shock", "boundary", "layer", "mach", "pressure"]


def corpus_docs(n: int = 40) -> list[Document]:
    """``n`` documents; one in eight is from 'nasa', and those say little about "wing flow" (rank low)."""
    docs = []
    for i in range(n):
        nasa = i % 8 == 0
        words = (
            ["shock", "layer", "mach"] if nasa else ["wing", "flow", "wing", "flow", VOCAB[i % len(VOCAB)]]
        )
        metadata = {"year": 1960 + i, "source": "nasa" if nasa else "esa", "lang": "en", "tags": ["x"]}
        docs.append(
            Document(f"d{i:02d}", f"report {i}", " ".join([*words, "wing"]), metadata, f"src.jsonl:{i + 1}")
        )
    return docs


@pytest.fixture
def indexed(tmp_store, fake):
    reindex(tmp_store, "c", corpus_docs(), fake.space, lambda: fake)
    return tmp_store


def searcher(store, fake, where: str | None) -> Searcher:
    return Searcher(store, "c", lambda: fake, where=where)


def nasa(doc_id: str) -> bool:
    return int(doc_id[1:]) % 8 == 0


@pytest.mark.parametrize("method", ["dense", "bm25", "hybrid", "hybrid(fusion=rrf)"])
def test_a_filter_keeps_only_matching_documents_and_k_of_them(indexed, fake, method, monkeypatch):
    unfiltered = searcher(indexed, fake, None).search("wing flow", method, 5)
    assert not any(nasa(d) for d, _ in unfiltered)  # a filter applied after the top 5 would leave nothing
    calls = []
    dense = indexed.search.dense
    monkeypatch.setattr(indexed.search, "dense", lambda *a, **kw: calls.append(a) or dense(*a, **kw))
    hits = searcher(indexed, fake, "source = 'nasa'").search("wing flow", method, 5)
    assert len(hits) == 5 and all(nasa(d) for d, _ in hits), hits
    assert len(calls) == (0 if method == "bm25" else 1)  # ranked among matching rows: no widened retry
    hits = searcher(indexed, fake, "source = 'nasa' AND year >= 1980").search("wing flow", method, 10)
    assert sorted(d for d, _ in hits) == ["d24", "d32"]  # fewer match than k: all of them, no more


def test_a_narrow_filter_still_gives_k_hits_through_the_ann_index(tmp_store, fake):
    docs = [*corpus_docs(), *corpus_docs(400)[40:]]  # 400 documents, 50 of them nasa
    reindex(tmp_store, "c", docs, fake.space, lambda: fake, ann_min_rows=100)
    assert any(i.columns == ["vector"] for i in tmp_store.views.table("c", fake.space).list_indices())
    hits = searcher(tmp_store, fake, "source = 'nasa' AND year < 2000").search("wing flow", "dense", 5)
    assert len(hits) == 5 and all(nasa(d) and int(d[1:]) < 40 for d, _ in hits), hits


def test_filters_take_lances_syntax_over_keys(indexed, fake):
    found = searcher(indexed, fake, "year BETWEEN 1961 AND 1963 OR lower(source) IN ('xyz')").search(
        "wing", "bm25", 10
    )
    assert sorted(d for d, _ in found) == ["d01", "d02", "d03"]
    assert searcher(indexed, fake, "\"lang\" = 'fr'").search("wing", "dense", 10) == []


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (
            "yeer > 1990",
            r"unknown metadata key 'yeer' in --where; filterable: lang \(text\), source \(text\), "
            r"year \(int\)$",
        ),
        ("Year > 1990", r"unknown metadata key 'Year' in --where \(did you mean 'year'\?\)"),
        ("vector IS NOT NULL", "unknown metadata key 'vector'"),  # other columns are out of reach
        ("doc_id = 'd01'", "unknown metadata key 'doc_id'"),
        ("tags = 'x'", "unknown metadata key 'tags'"),  # lists stay in the JSON column
        ("year IN (SELECT year FROM c__documents)", "unknown metadata key 'SELECT'"),
        ("year > 1990; DROP TABLE x", "unexpected ';' at character 12"),
        ("year > 1) OR (year < 3", r"unbalanced parentheses in --where"),
        ("year > 1990 -- comment", "unknown metadata key 'comment'"),
        (
            "year >",
            r"bad --where 'year >': syntax error \(Expected: an expression, found: EOF\); filterable:",
        ),
        (
            "year > 'abc'",
            r"type mismatch in --where .*: \"abc\" is text, compared with a key of type int; "
            r"filterable: lang \(text\)",
        ),
        ("source = 3", r"type mismatch .*: 3 is int, compared with a key of type text"),
        ("year", r"it is not a condition"),
        ("sleep(10) = 1", "unknown function 'sleep'"),
        ("  ", "--where is empty"),
    ],
)
def test_bad_filters_fail_before_searching_with_a_clear_message(indexed, fake, where, message):
    with pytest.raises(FilterError, match=message) as caught:
        searcher(indexed, fake, where)
    text = str(caught.value)
    assert not re.search(r"\blance|rust|\.rs\b|datafusion|meta__|`|\n", text, re.I), text
    assert fake.as_queries == []  # nothing was searched


def test_a_corpus_without_metadata_says_so(tmp_store, fake):
    docs = [Document(f"d{i}", "", f"wing {i}", {}, f"f:{i}") for i in range(3)]
    reindex(tmp_store, "c", docs, fake.space, lambda: fake)
    with pytest.raises(FilterError, match="has no filterable metadata"):
        searcher(tmp_store, fake, "year > 1")


def test_a_later_ingest_adds_a_key_and_keeps_the_documents_before_it(indexed, fake):
    old = corpus_docs()
    new = [Document("n1", "new", "wing flow", {"year": 2001, "source": "esa", "pages": 12}, "more.jsonl:1")]
    report = reindex(indexed, "c", [*old, *new], fake.space, lambda: fake)
    assert (report.added, report.unchanged) == (1, 40)
    assert len(searcher(indexed, fake, "year >= 1960").search("wing", "bm25", 100)) == 41
    for method in ("dense", "bm25"):
        assert [d for d, _ in searcher(indexed, fake, "pages > 10").search("wing", method, 10)] == ["n1"]
        assert len(searcher(indexed, fake, "pages IS NULL").search("wing", method, 100)) == 40
    reindex(indexed, "c", old, fake.space, lambda: fake)  # n1 is gone, and with it the only 'pages'
    with pytest.raises(FilterError, match="unknown metadata key 'pages'"):
        searcher(indexed, fake, "pages > 10")
    assert "meta__pages" not in indexed.views.table("c", fake.space).schema.names


def test_a_type_conflict_names_the_record_and_the_fix_and_writes_nothing(indexed, fake):
    before = indexed.versions("c")
    bad = Document("d03", "report 3", "wing", {"year": "nineteen-sixty", "source": "esa"}, "src.jsonl:4")
    with pytest.raises(
        BadInputError,
        match=r"src.jsonl:4 \(id 'd03'\): metadata key 'year' is text here "
        r"\('nineteen-sixty'\) but is stored as int; fix: give 'year' int values",
    ):
        reindex(indexed, "c", [*corpus_docs()[:3], bad], fake.space, lambda: fake)
    assert indexed.versions("c") == before


def test_a_first_ingest_refused_for_its_metadata_creates_nothing(tmp_store, fake):
    docs = [Document("a", "", "wing", {"year": 1990}, "f:1"), Document("b", "", "flow", {"year": "x"}, "f:2")]
    with pytest.raises(
        BadInputError,
        match=r"f:2 \(id 'b'\): metadata key 'year' is text here \('x'\) but was "
        r"given by f:1 as int",
    ):
        reindex(tmp_store, "c", docs, fake.space, lambda: fake)
    assert tmp_store.lance.names() == []


def test_ints_and_floats_of_one_key_make_a_float_column(tmp_store, fake):
    docs = [Document(f"d{i}", "", f"wing {i}", {"score": v}, f"f:{i}") for i, v in enumerate([1, 2.5, 3])]
    reindex(tmp_store, "c", docs, fake.space, lambda: fake)
    hits = searcher(tmp_store, fake, "score >= 2").search("wing", "bm25", 10)
    assert sorted(d for d, _ in hits) == ["d1", "d2"]


def test_title_views_and_the_expanded_index_carry_the_metadata(indexed, fake):
    build_views(indexed, "c", lambda: fake)
    engine = searcher(indexed, fake, "source = 'nasa'")
    titles = engine.search_vectors(engine.encode(["report"], queries=True), 5, ("title",))[0]
    assert len(titles) == 5 and all(nasa(d) for d, _ in titles), titles
    hits = searcher(indexed, fake, "source = 'nasa'").search("report", "multiview", 5)
    assert len(hits) == 5 and all(nasa(d) for d, _ in hits)
    hits = searcher(indexed, fake, "source = 'nasa'").search("wing flow", "d2q", 5)
    assert len(hits) == 5 and all(nasa(d) for d, _ in hits)
    new = Document("n1", "new", "wing flow", {"pages": 12}, "more.jsonl:1")
    reindex(indexed, "c", [*corpus_docs(), new], fake.space, lambda: fake)  # the expanded index lags
    with pytest.raises(FilterError, match=r"predates some of its metadata keys; run `zsr synthesize"):
        searcher(indexed, fake, "pages > 1").search("wing", "d2q", 5)
    assert len(searcher(indexed, fake, "source = 'nasa'").search("wing flow", "d2q", 5)) == 5


def test_zsr_search_where_on_the_command_line(tmp_path, monkeypatch):
    from flows.cli import app
    from flows.cli.common import err, out

    monkeypatch.setattr(tasks.workspace, "load_embedder", lambda space, *args: FakeEmbedder(space=space))
    monkeypatch.setattr(out, "width", 80)
    monkeypatch.setattr(err, "width", 80)
    source = tmp_path / "docs.jsonl"
    records = [{"_id": d.doc_id, "title": d.title, "text": d.text, **d.metadata} for d in corpus_docs()]
    source.write_text("".join(json.dumps(r) + "\n" for r in records))

    def zsr(*args: str):
        with zsr_home_at(tmp_path / "home"):
            return CliRunner().invoke(app, list(args))

    assert zsr("ingest", str(source), "-c", "c").exit_code == 0
    found = zsr("search", "wing flow", "-c", "c", "-k", "4", "--where", "source = 'nasa'", "--json")
    assert found.exit_code == 0, found.output
    answer = json.loads(found.stdout)
    assert answer["where"] == "source = 'nasa'" and len(answer["hits"]) == 4
    assert all(nasa(h["doc_id"]) for h in answer["hits"])
    assert set(answer["hits"][0]) == {"rank", "doc_id", "score", "title", "text", "snippet"}  # as before
    shown = zsr("search", "wing flow", "-c", "c", "--where", "year > 1995 AND lang = 'en'")
    assert shown.exit_code == 0 and "d36" in shown.stdout and "d35" not in shown.stdout, shown.output
    bad = zsr("search", "wing", "-c", "c", "--where", "yeer > 1990")
    assert bad.exit_code == 2
    assert bad.stderr.strip() == (
        "error: unknown metadata key 'yeer' in --where; filterable: lang (text), source (text), year (int)"
    )


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch):
    """The corpus and the filters of the README's "Filtering on metadata" section, read from README.md."""
    import re
    import shlex
    from pathlib import Path

    from flows.cli import app

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Filtering on metadata") :]
    section = section[: section.index("\n### ", 5)]
    corpus = re.search(r"^```jsonl\n(.*?)^```", section, re.S | re.M).group(1)
    commands = re.search(r"^```bash\n(.*?)^```", section, re.S | re.M).group(1)
    (tmp_path / "reports.jsonl").write_text(corpus)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tasks.workspace, "load_embedder", lambda space, *args: FakeEmbedder(space=space))
    answers = []
    with zsr_home_at(tmp_path / "home"):
        for line in commands.splitlines():
            if line.startswith("zsr "):
                args = shlex.split(line.split("  #")[0])[1:]
                answers.append(CliRunner().invoke(app, args))
    ingest, nasa_only, either, typo = answers
    assert ingest.exit_code == 0 and nasa_only.exit_code == 0 and either.exit_code == 0, ingest.output
    assert "r1" in nasa_only.stdout and not re.search(r"\br[234]\b", nasa_only.stdout)
    assert sorted(h["doc_id"] for h in json.loads(either.stdout)["hits"]) == ["r1", "r2", "r3"]
    assert typo.exit_code == 2
    assert f"# {typo.stderr.strip()}" in commands  # the error line as the README shows it
