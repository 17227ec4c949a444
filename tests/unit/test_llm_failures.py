"""LLM failures are visible (issue 11): clean ``--json`` output, fallback shares beside every metric, one-line
errors with exit status 2; the fake LLM provider and the fake embedder, the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tasks.workspace
from storage.corpus_store import CorpusStore
from tasks.evaluation.testsets import register
from tasks.ingest.index import reindex
from tasks.llm.client import LLMClient
from tests.conftest import zsr_home_at
from tests.fakes import FakeEmbedder, make_docs, make_testset, write_beir
from tests.llm_server import ScriptedServer

ROOT = Path(__file__).resolve().parents[2]
RERANK = "rerank(depth=3, first=bm25)"  # a first stage without the embedder, then 3 judge calls per query


def build_home(home: Path) -> Path:
    """Corpus ``c`` (twelve documents, fake embedder) and its test set ``t`` (six judged queries)."""
    fake = FakeEmbedder()
    store = CorpusStore(str(home / "lancedb"))
    reindex(store, "c", make_docs(12), fake.space, lambda: fake)
    beir = write_beir(make_testset(), home / "beir")
    register(home / "testsets", store, "c", "t", beir, fmt="beir")
    return home


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_home(tmp_path_factory.mktemp("home"))


def run_cli(home: Path, server: ScriptedServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``zsr ARGS`` in a fresh process over ``home``, its LLM an ``openai/...`` model served by ``server``."""
    env = {
        **os.environ,
        "ZSR_HOME": str(home),
        "ZSR_LLM_MODEL": "openai/judge",
        "ZSR_LLM_API_BASE": server.url,
        "OPENAI_API_KEY": "sk-test",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    return subprocess.run(
        [sys.executable, "-m", "tests.cli_target", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    ("replies", "args"),
    [
        ((429, "1"), ["-v", "eval", "-c", "c", "-t", "t", "--methods", f"bm25,{RERANK}"]),  # INFO logs too
        ((500,), ["search", "term1 wing", "-c", "c", "-m", RERANK]),
    ],
    ids=["eval-rate-limited-once", "search-500s"],
)
def test_json_output_is_one_document_whatever_the_llm_does(built, tmp_path, replies, args):
    """LiteLLM prints help banners to stdout when a call fails; under --json only the JSON may be there."""
    home = tmp_path / "home"
    shutil.copytree(built, home)  # each run its own cache and warehouse
    with ScriptedServer(*replies) as server:
        result = run_cli(home, server, *args, "--json")
    assert len(server.seen) > 1, result.stderr  # the failure happened, and was retried or fallen back from
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # exactly one document: a banner before or after it would not parse


@pytest.fixture
def cli(built, tmp_path, monkeypatch):
    """``zsr`` in this process over a copy of the built home: fake embedder, retry delays not slept.

    Yields ``invoke(server, *args) -> Result`` with the LLM an ``openai/...`` model served by ``server``.
    """
    from flows.cli import app
    from flows.cli.common import err, out

    shutil.copytree(built, tmp_path / "home")
    monkeypatch.setattr(tasks.workspace, "load_embedder", lambda space, *args: FakeEmbedder(space=space))
    monkeypatch.setattr(tasks.workspace, "LLMClient", partial(LLMClient, sleep=lambda seconds: None))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ZSR_LLM_MODEL", "openai/judge")
    monkeypatch.setattr(out, "width", 200)  # tables unfolded and messages on one line, as on a wide terminal
    monkeypatch.setattr(err, "width", 200)

    def invoke(server: ScriptedServer, *args: str):
        monkeypatch.setenv("ZSR_LLM_API_BASE", server.url)
        with zsr_home_at(tmp_path / "home"):
            return CliRunner().invoke(app, list(args))

    return invoke


def test_eval_shows_the_fallback_share_and_llm_errors_beside_the_metric(cli):
    with ScriptedServer(500) as server:
        result = cli(server, "eval", "-c", "c", "-t", "t", "--methods", f"bm25,{RERANK}", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["method"]: row for row in json.loads(result.stdout)}
    assert (rows["bm25"]["fallback_share"], rows["bm25"]["llm_errors"], rows["bm25"]["warning"]) == (
        0.0,
        0,
        None,
    )
    rerank = rows[RERANK]
    assert (rerank["fallback_share"], rerank["llm_errors"]) == (1.0, 18)  # 6 queries x 3 judgements
    assert "6 of 6 queries (100%) fell back" in rerank["warning"] and "18 LLM errors" in rerank["warning"]
    assert [line for line in result.stderr.splitlines() if line.startswith("warning")] == [
        f"warning: {rerank['warning']}"
    ]


def test_eval_table_has_a_fallback_column_and_the_threshold_is_a_setting(cli, monkeypatch):
    with ScriptedServer(500) as server:
        result = cli(server, "eval", "-c", "c", "-t", "t", "--methods", f"bm25,{RERANK}")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "method" in line)
    assert "fallback" in header and "LLM errors" in header
    rerank = next(line for line in result.stdout.splitlines() if "rerank" in line)
    assert "100%" in rerank and "18" in rerank
    assert "6 of 6 queries (100%) fell back" in result.stderr

    monkeypatch.setenv("ZSR_FALLBACK_WARN_SHARE", "1.0")  # warn only above the threshold
    with ScriptedServer(500) as server:
        quiet = cli(server, "eval", "-c", "c", "-t", "t", "--methods", RERANK)
    assert quiet.exit_code == 0 and "fell back" not in quiet.stderr


def test_search_shows_the_fallback_and_llm_errors(cli):
    with ScriptedServer(500) as server:
        failed = cli(server, "search", "term1 wing", "-c", "c", "-m", RERANK, "--json")
    assert failed.exit_code == 0, failed.output
    body = json.loads(failed.stdout)
    assert (body["fallback"], body["llm_errors"]) == ("first-stage: 3 of 3 judgements failed", 3)
    assert "fell back" in body["warning"] and "warning: " + body["warning"] in failed.stderr
    with ScriptedServer("1") as server:
        fine = cli(server, "search", "term1 wing", "-c", "c", "-m", RERANK, "--json")
    assert {k: json.loads(fine.stdout)[k] for k in ("fallback", "llm_errors", "warning")} == {
        "fallback": None,
        "llm_errors": 0,
        "warning": None,
    }


def test_an_llm_that_keeps_failing_ends_a_command_with_one_line_and_status_2(cli):
    with ScriptedServer(500) as server:
        result = cli(server, "synthesize", "-c", "c", "--roundtrip-k", "0", "--json")
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: generation stopped") and server.url in line
    assert "synthesize:question: every model failed: openai/judge" in line  # as written, no emoji
    assert "HTTP 500" in line and "fix:" in line


def test_commands_without_an_llm_ignore_malformed_fallbacks(cli, monkeypatch):
    monkeypatch.setenv("ZSR_LLM_FALLBACKS", "openai/a,openai/b")  # not JSON
    with ScriptedServer("1") as server:
        bm25 = cli(server, "search", "term1 wing", "-c", "c", "-m", "bm25", "--json")
        assert bm25.exit_code == 0, bm25.output
        assert json.loads(bm25.stdout)["hits"][0]["doc_id"] == "d1"
        rerank = cli(server, "search", "term1 wing", "-c", "c", "-m", RERANK)
    assert rerank.exit_code == 2 and server.seen == []
    (line,) = rerank.stderr.strip().splitlines()
    assert "ZSR_LLM_FALLBACKS" in line and "JSON list" in line and "api_key_env" in line


def test_results_artifact_shows_the_fallback_share_and_warns(monkeypatch):
    from flows.evaluate import Evaluation, results_table, summary
    from tests.records import run_result

    runs = [
        run_result("r1", "bm25", {"nDCG@10": 0.4}, 40),
        run_result("r2", "hyde", {"nDCG@10": 0.3}, 40, fallback_share=1.0, llm_errors=320),
        run_result("r3", "rerank", {"nDCG@10": 0.5}, 40, fallback_share=0.1, llm_errors=4),
    ]
    evaluation = Evaluation("c", "t", "adhoc", "e1", ["nDCG@10"], runs)
    rows = results_table(evaluation)
    assert [(r["fallback"], r["LLM errors"]) for r in rows] == [("0%", 0), ("100%", 320), ("10%", 4)]
    assert [bool(r["warning"]) for r in rows] == [False, True, False]
    assert "40 of 40 queries (100%) fell back" in rows[1]["warning"]
    markdown = summary(evaluation, 40)
    assert "| hyde | 0.3000 | new | 100% |" in markdown
    assert "> **Warning**: hyde: 40 of 40 queries (100%) fell back; 320 LLM errors" in markdown
    monkeypatch.setenv("ZSR_FALLBACK_WARN_SHARE", "0.05")
    from tasks.settings import get_settings

    get_settings.cache_clear()
    try:
        assert [
            bool(r["warning"]) for r in results_table(Evaluation("c", "t", "a", "e", ["nDCG@10"], runs))
        ] == [
            False,
            True,
            True,
        ]
    finally:
        get_settings.cache_clear()
