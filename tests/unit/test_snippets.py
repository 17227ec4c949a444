"""Search snippets (issue 13): a hit's best-matching chunk, trimmed around the match, query terms marked."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import tasks.workspace
from storage.corpus_store import CorpusStore
from storage.types import Document
from tasks.ingest.index import reindex
from tasks.methods.feedback import Analyzer
from tasks.methods.snippets import snippet, trim
from tests.conftest import zsr_home_at
from tests.fakes import FakeEmbedder, make_docs

FILLER = "wing lift drag pressure layer boundary flow heat mach shock "
LONG = Document(
    "long",
    "Long report",
    FILLER * 3 + "the vortex shedding behind cylinders was measured " + FILLER * 3,
)


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer()


def marked(found) -> list[str]:
    return [found.text[a:b] for a, b in found.spans]


def test_the_chunk_with_the_query_terms_wins_and_its_terms_are_marked(analyzer):
    chunks = [("wing lift drag", None), ("a Vortex sheds behind the cylinder", None), ("heat flow", None)]
    found = snippet("vortex shedding", chunks, analyzer)
    assert found.text == "a Vortex sheds behind the cylinder"
    assert marked(found) == ["Vortex", "sheds"]  # any case, any form with the query word's stem


def test_among_equal_matches_the_chunk_nearest_the_query_vector_wins(analyzer):
    chunks = [("lift at low speed", np.array([1.0, 0.0])), ("lift near stall", np.array([0.0, 1.0]))]
    assert snippet("lift", chunks, analyzer, np.array([0.1, 0.9])).text == "lift near stall"
    assert snippet("lift", chunks, analyzer).text == "lift at low speed"  # no vector: the first


def test_long_text_is_trimmed_around_the_first_match(analyzer):
    text = "word " * 100 + "vortex " + "word " * 100
    found = trim(text.strip(), [(500, 506)], width=200)
    assert len(found.text) <= 202 and found.text.startswith("…") and found.text.endswith("…")
    assert marked(found) == ["vortex"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    fake = FakeEmbedder()
    reindex(CorpusStore(str(tmp_path / "lancedb")), "c", [*make_docs(6), LONG], fake.space, lambda: fake)
    monkeypatch.setattr(tasks.workspace, "load_embedder", lambda space, *args: FakeEmbedder(space=space))
    with zsr_home_at(tmp_path):
        yield tmp_path


@pytest.mark.parametrize("method", ["bm25", "dense", "hybrid"])
def test_search_hits_carry_the_matching_chunk_of_a_long_document(home, method):
    workspace = tasks.workspace.Workspace.open()
    store = workspace.store
    chunks = store.views.chunks("c", store.registry.corpus("c").space, ["long"])["long"]
    assert len(chunks) > 2  # the document really is split
    hits = {h.doc_id: h for h in workspace.find("c", "vortex shedding", method, k=7).hits}
    hit = hits["long"]
    assert "vortex shedding behind" in hit.snippet and "Long report" not in hit.snippet
    assert [hit.snippet[a:b] for a, b in hit.highlights] == ["vortex", "shedding"]


def test_json_snippets_are_plain_text(home):
    from flows.cli import app

    result = CliRunner().invoke(app, ["search", "vortex shedding", "-c", "c", "-m", "bm25", "--json"])
    assert result.exit_code == 0, result.output
    hit = json.loads(result.stdout)["hits"][0]
    assert hit["doc_id"] == "long" and "vortex shedding" in hit["snippet"] and "highlights" not in hit
    shown = CliRunner().invoke(app, ["search", "vortex shedding", "-c", "c", "-m", "bm25"])
    assert shown.exit_code == 0 and "vortex shedding" in shown.stdout


def test_the_terminal_shows_the_title_over_the_snippet_its_terms_in_bold():
    from flows.cli.corpus import hit_text

    hit = tasks.workspace.Hit(1, "d", 1.0, "A title", "text", "a vortex sheds", ((2, 8), (9, 14)))
    shown = hit_text(hit)
    assert shown.plain == "A title\na vortex sheds"
    start = len("A title\n")
    bold = [shown.plain[s.start : s.end] for s in shown.spans if "bold" in str(s.style) and s.start >= start]
    assert bold == ["vortex", "sheds"]
