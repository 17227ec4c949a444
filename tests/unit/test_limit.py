"""LIMIT-style stress sets (issue 16, item 4): the written BEIR folder holds LIMIT's invariants.

The checks here read the files ``write_limit`` wrote and recompute every invariant themselves; they do not
trust the generator's own ``check_limit`` (tested apart, on sets broken on purpose).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections import Counter
from itertools import combinations
from math import comb
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tasks.synthetic import limit as lim

ROOT = Path(__file__).resolve().parents[2]
LIMIT_SMALL = ROOT / "bench" / "data" / "limit-small"
POOL = [f"Thing {i:04d}" for i in range(1_200)]  # room for 1,000 queries and their fillers


def pool_file(tmp_path: Path, attributes: list[str] = POOL) -> Path:
    path = tmp_path / "attributes.txt"
    path.write_text("\n".join(attributes) + "\n", encoding="utf-8")
    return path


def read_beir(folder: Path) -> tuple[dict[str, str], dict[str, str], list[tuple[str, str, str]]]:
    """``(corpus text by id, query text by id, qrels rows)`` as written."""
    corpus = {}
    for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert record["_id"] not in corpus and record["title"] == ""
        corpus[record["_id"]] = record["text"]
    queries = {
        q["_id"]: q["text"] for q in map(json.loads, (folder / "queries.jsonl").open(encoding="utf-8"))
    }
    with (folder / "qrels" / "test.tsv").open(encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["query-id", "corpus-id", "score"]
    return corpus, queries, [tuple(r) for r in rows[1:]]  # type: ignore[misc]


def liked(doc_id: str, text: str) -> list[str]:
    """The attributes of ``"<Name> likes A, B and C."``; the test pools hold no ", " nor " and "."""
    prefix = f"{doc_id} likes "
    assert text.startswith(prefix) and text.endswith("."), text
    head, _, last = text[len(prefix) : -1].rpartition(" and ")
    return [*head.split(", "), last] if head else [last]


def assert_limit(folder: Path, docs: int, queries: int, per_doc: int, pool: list[str]) -> set[str]:
    """Every LIMIT invariant, recomputed from the files; returns the core."""
    corpus, texts, rows = read_beir(folder)
    assert len(corpus) == docs and len(texts) == queries and len(rows) == 2 * queries
    likes = {d: liked(d, t) for d, t in corpus.items()}
    for doc, attrs in likes.items():  # a fixed number of distinct attributes, all from the pool
        assert len(attrs) == len(set(attrs)) == per_doc, doc
        assert set(attrs) <= set(pool), doc
    relevant: dict[str, set[str]] = {}
    for query, doc, score in rows:
        assert score == "1" and doc in corpus
        relevant.setdefault(query, set()).add(doc)
    assert set(relevant) == set(texts)
    assert all(len(pair) == 2 for pair in relevant.values())  # exactly two relevant documents per query
    asked = {q: t.removeprefix("Who likes ").removesuffix("?") for q, t in texts.items()}
    assert all(t == f"Who likes {asked[q]}?" for q, t in texts.items())
    assert len(set(asked.values())) == queries
    for query, attribute in asked.items():  # liked by exactly its two documents in the whole corpus
        assert {d for d, attrs in likes.items() if attribute in attrs} == relevant[query], query
    pairs = [frozenset(p) for p in relevant.values()]
    assert len(set(pairs)) == queries  # each query its own pair
    core = set().union(*pairs)
    c = len(core)
    assert comb(c, 2) >= queries > comb(c - 1, 2)  # the smallest core that has enough pairs
    distractors = set(corpus) - core
    assert len(distractors) == docs - c
    assert not any(set(likes[d]) & set(asked.values()) for d in distractors)  # fillers only
    return core


@pytest.mark.parametrize(
    ("docs", "queries", "per_doc"),
    [(46, 1_000, None), (300, 200, None), (12, 60, 11), (3, 1, 1), (2, 1, 3), (40, 10, 4)],
)
def test_written_set_holds_every_invariant(tmp_path, docs, queries, per_doc):
    report = lim.write_limit(tmp_path / "set", docs, queries, pool_file(tmp_path), per_doc=per_doc)
    k = per_doc or 45
    core = assert_limit(tmp_path / "set", docs, queries, k, POOL)
    assert (report.docs, report.queries, report.qrels, report.per_doc) == (docs, queries, 2 * queries, k)
    assert report.core == len(core) == lim.core_size(queries)
    assert report.distractors == docs - len(core)


def test_the_built_in_pool_and_names_make_a_valid_set(tmp_path):
    pool = lim.builtin_attributes()
    assert len(pool) == len({a.casefold() for a in pool}) == 630
    assert not any(", " in a or " and " in a for a in pool)  # so a document's list reads back unambiguously
    report = lim.write_limit(tmp_path / "set", 120, 585)  # the most queries the pool allows at 45 each
    assert_limit(tmp_path / "set", 120, 585, 45, pool)
    assert report.attributes == "built-in" and report.pool == 630


def test_core_and_pairs_follow_the_notebook():
    """The first Q pairs of the smallest core in lexicographic order: LIMIT-small's qrels exactly."""
    assert [lim.core_size(q) for q in (1, 2, 3, 4, 1_000, 1_035, 1_036)] == [2, 3, 3, 4, 46, 46, 47]
    pairs = lim.core_pairs(1_000)
    assert pairs == list(combinations(range(46), 2))[:1_000]
    loads = Counter(i for pair in pairs for i in pair)
    assert loads[0] == 45 and sum(loads.values()) == 2_000 and min(loads.values()) == 37
    # The shipped LIMIT-small: documents numbered in order of first appearance in its qrels.
    _, _, rows = read_beir(LIMIT_SMALL)
    order: dict[str, int] = {}
    by_query: dict[str, list[int]] = {}
    for query, doc, _ in rows:
        by_query.setdefault(query, []).append(order.setdefault(doc, len(order)))
    assert [tuple(sorted(p)) for p in by_query.values()] == pairs
    corpus = read_beir(LIMIT_SMALL)[0]
    assert {t.count(", ") + 2 for t in corpus.values()} == {lim.PER_DOC}  # 45 attributes each, as ours


def test_same_seed_same_files_other_seed_other_set(tmp_path):
    attributes = pool_file(tmp_path)
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        lim.write_limit(tmp_path / name, 80, 300, attributes, seed=seed)
    files = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")
    read = {n: [(tmp_path / n / f).read_bytes() for f in files] for n in "abc"}
    assert read["a"] == read["b"]
    assert all(x != y for x, y in zip(read["a"], read["c"], strict=True))


def test_per_doc_defaults_to_45_or_the_busiest_core_document(tmp_path):
    assert lim.generate_limit(50, 1_000, POOL).per_doc == 45
    big = lim.generate_limit(70, 2_000, POOL + [f"More {i}" for i in range(1_000)])  # core 64: 63 pairs
    assert len(big.core) == 64 and big.per_doc == 63


@pytest.mark.parametrize(
    ("docs", "queries", "per_doc", "pool", "message"),
    [
        (45, 1_000, None, POOL, r"core of 46 documents .* ask --docs 46 or more, or at most 990 --queries"),
        (46, 1_000, 44, POOL, r"--per-doc 44 is too small: .* in 45 pairs .* ask --per-doc 45 or more"),
        (
            46,
            1_000,
            None,
            POOL[:1_007],
            r"holds 1007 attributes, .* need 1008 .* --attributes FILE with 1008",
        ),
        (
            47,
            1_000,
            None,
            POOL[:1_044],
            r"need 1045 \(1000 for the queries, 45 distinct fillers for each distr",
        ),
        (5, 0, None, POOL, r"at least 1 query and 2 documents"),
    ],
)
def test_impossible_sizes_name_the_fix_and_write_nothing(tmp_path, docs, queries, per_doc, pool, message):
    out = tmp_path / "set"
    with pytest.raises(ValueError, match=message):
        lim.write_limit(out, docs, queries, pool_file(tmp_path, pool), per_doc=per_doc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attributes.txt"]  # no folder, no staging left


def test_the_built_in_pool_names_the_attributes_option(tmp_path):
    with pytest.raises(ValueError, match=r"^the built-in attribute pool holds 630 .* --attributes FILE"):
        lim.write_limit(tmp_path / "set", 46, 1_000)


def test_attribute_file_repeats_name_the_lines(tmp_path):
    path = pool_file(tmp_path, ["Tulips", "", "  Lakes ", "TULIPS"])
    with pytest.raises(
        ValueError, match=rf"^{path}:4: 'TULIPS' repeats line 1; each attribute must be listed"
    ):
        lim.read_attributes(path)
    assert lim.read_attributes(pool_file(tmp_path, ["Tulips", "", "  Sea   Otters "])) == [
        "Tulips",
        "Sea Otters",
    ]


def test_an_occupied_folder_is_refused_and_replaced_only_when_it_holds_a_beir_set(tmp_path):
    attributes = pool_file(tmp_path)
    out = tmp_path / "set"
    lim.write_limit(out, 10, 20, attributes, seed=1)
    first = (out / "corpus.jsonl").read_bytes()
    with pytest.raises(ValueError, match=r"is not empty .* pass --replace"):
        lim.write_limit(out, 10, 20, attributes, seed=2)
    assert (out / "corpus.jsonl").read_bytes() == first
    lim.write_limit(out, 10, 20, attributes, seed=2, replace=True)
    assert (out / "corpus.jsonl").read_bytes() != first
    assert_limit(out, 10, 20, 45, POOL)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds notes\.txt, not only a BEIR set"):
        lim.write_limit(out, 10, 20, attributes, replace=True)
    assert (out / "notes.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    lim.write_limit(tmp_path / "empty", 10, 20, attributes)  # an empty folder is fine
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def good_set() -> lim.LimitSet:
    return lim.generate_limit(12, 10, POOL, per_doc=6, seed=3)


def swap(limit: lim.LimitSet, doc: str, old: str, new: str) -> lim.LimitSet:
    likes = dict(limit.likes)
    likes[doc] = tuple(new if a == old else a for a in likes[doc])
    return dataclasses.replace(limit, likes=likes)


def test_check_limit_catches_each_broken_invariant():
    limit = good_set()
    lim.check_limit(limit, 12, 10)
    core = set(limit.core)
    distractor = next(d for d in limit.likes if d not in core)
    filler = next(a for a in limit.likes[distractor])
    asked = limit.queries["query_0"]
    a, b = limit.qrels["query_0"]
    third = next(d for d in limit.core if d not in (a, b))
    stranger = next(a for a in limit.likes[third] if a not in limit.queries.values())
    broken = {
        "distractor": swap(limit, distractor, filler, asked),
        "core document": swap(limit, third, stranger, asked),
        "duplicate attribute": swap(limit, a, asked, next(x for x in limit.likes[a] if x != asked)),
        "outside the pool": swap(limit, distractor, filler, "Not In The Pool"),
        "repeated pair": dataclasses.replace(limit, qrels={**limit.qrels, "query_1": limit.qrels["query_0"]}),
        "pair outside the core": dataclasses.replace(
            limit, qrels={**limit.qrels, "query_0": (a, distractor)}
        ),
        "core too large": dataclasses.replace(limit, core=(*limit.core, distractor)),
        "wrong size": dataclasses.replace(limit, per_doc=7),
    }
    messages = {
        "distractor": "distractor .* likes the query attribute",
        "core document": "query_0 .* is liked by",
        "duplicate attribute": "likes 5 distinct attributes in 6",
        "outside the pool": "not in the attribute pool",
        "repeated pair": "query_1 repeats the pair",
        "pair outside the core": "are not two core documents",
        "core too large": "not the smallest",
        "wrong size": "not 7",
    }
    for name, bad in broken.items():
        with pytest.raises(lim.InvariantError, match=messages[name]):
            lim.check_limit(bad, 12, 10)
    with pytest.raises(lim.InvariantError, match="asked 13 documents"):
        lim.check_limit(limit, 13, 10)


def test_zsr_testset_limit(tmp_path):
    from flows.cli import app

    out = tmp_path / "limit"
    args = ["testset", "limit", str(out), "--docs", "30", "--queries", "50", "--per-doc", "12", "--seed", "5"]
    result = CliRunner().invoke(app, [*args, "--attributes", str(pool_file(tmp_path))])
    assert result.exit_code == 0, result.output
    assert_limit(out, 30, 50, 12, POOL)
    assert f"wrote {out}: 30 documents (11 core, 19 distractors), 50 queries, 100 qrels" in result.output
    assert f"zsr ingest {out} --corpus NAME" in result.output
    assert f"zsr testset add NAME limit {out}" in result.output
    again = CliRunner().invoke(app, [*args, "--json"])
    assert again.exit_code == 2 and "is not empty" in again.output and "pass --replace" in again.output
    replaced = CliRunner().invoke(app, [*args, "--replace", "--json"])
    assert replaced.exit_code == 0, replaced.output
    report = json.loads(replaced.output)
    assert report["attributes"] == "built-in" and report["core"] == 11 and report["per_doc"] == 12
    assert_limit(out, 30, 50, 12, lim.builtin_attributes())
