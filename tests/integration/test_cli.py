"""The ``zsr`` CLI end to end with the real embedded model on the bundled demo slice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.cli.corpus import DEMO_DATA
from tests.conftest import zsr_home_at

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with zsr_home_at(tmp_path_factory.mktemp("zsr-home")) as path:
        yield path


def zsr(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def zsr_json(*args: str):
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_ingest_then_reingest_encodes_nothing(home):
    first = zsr_json("ingest", str(DEMO_DATA), "--corpus", "demo")
    assert (first["added"], first["chunks_encoded"]) == (323, first["chunks_written"])
    second = zsr_json("ingest", str(DEMO_DATA), "--corpus", "demo")
    assert (second["unchanged"], second["added"], second["chunks_encoded"]) == (323, 0, 0)
    assert second["versions"] == first["versions"]


def test_search_each_method(home):
    zsr_json("ingest", str(DEMO_DATA), "--corpus", "demo")
    for method in ("dense", "bm25", "hybrid", "hybrid(fusion=rrf)"):
        result = zsr_json(
            "search", "boundary layer heat transfer", "--corpus", "demo", "--method", method, "-k", "5"
        )
        assert len(result["hits"]) == 5
        assert [h["rank"] for h in result["hits"]] == [1, 2, 3, 4, 5]
        text = " ".join((h["title"] + " " + h["text"]).lower() for h in result["hits"][:3])
        assert "heat" in text or "boundary" in text, method
    code, output = zsr("search", "wings", "--corpus", "demo", "--method", "splade")
    assert code == 2 and "unknown method 'splade'" in output


def test_search_output_is_clean(home):
    """Nothing but results: no Lance deprecation warnings (80 lines in a demo before) or other logs."""
    zsr_json("ingest", str(DEMO_DATA), "--corpus", "demo")
    for method, as_json in (("dense", True), ("hybrid", False), ("multiview", True)):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "flows.cli",
                "search",
                "wing flutter",
                "-c",
                "demo",
                "-m",
                method,
                "-k",
                "3",
            ]
            + (["--json"] if as_json else []),
            cwd=ROOT,
            env={**os.environ, "ZSR_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0 and result.stderr == "", result.stderr
        if as_json:
            assert len(json.loads(result.stdout)["hits"]) == 3


def test_corpora_and_methods(home):
    zsr_json("ingest", str(DEMO_DATA), "--corpus", "demo")
    rows = zsr_json("corpora")
    demo = next(r for r in rows if r["name"] == "demo")
    assert demo["documents_rows"] == 323 and demo["views_rows"] >= 323 and demo["model"] == "all-MiniLM-L6-v2"
    assert demo["documents_version"] > 0
    methods = {m["method"]: m for m in zsr_json("methods")}
    assert methods["hybrid"]["params"]["rrf_k"]["default"] == 60


def test_demo_scores_are_real(home):
    result = zsr_json("demo", "--corpus", "demo2")
    runs = {r["method"]: r for r in result["runs"]}
    assert set(runs) == {"dense", "bm25", "hybrid"} and runs["dense"]["n_queries"] == 40
    # The slice is easier than the full collection (fewer distractors); these are floors, well below
    # what the methods reach, that a broken pipeline (random or empty rankings) cannot pass.
    for method, run in runs.items():
        assert run["metrics"]["nDCG@10"] > 0.4, method
    assert Path(result["report"]).is_file()


def test_eval_workflow(home, tmp_path):
    zsr_json("ingest", str(DEMO_DATA), "--corpus", "demo")
    added = zsr_json("testset", "add", "demo", "human", str(DEMO_DATA), "--replace")
    assert added["n_judged_queries"] == 40
    assert [t["name"] for t in zsr_json("testset", "list", "--corpus", "demo")] == ["human"]
    runs = zsr_json(
        "eval",
        "-c",
        "demo",
        "-t",
        "human",
        "--methods",
        "bm25,hybrid(fusion=rrf)",
        "--metrics",
        "nDCG@10,R@100",
    )
    assert [r["method"] for r in runs] == ["bm25", "hybrid(fusion=rrf)"]
    a, b = runs[0]["run_id"], runs[1]["run_id"]
    listed = zsr_json("runs", "--corpus", "demo")
    assert {a, b} <= {r["run_id"] for r in listed}
    comparison = zsr_json("compare", a, b)
    assert comparison["wins"] + comparison["ties"] + comparison["losses"] == 40
    assert comparison["t_test_p"] is not None and comparison["gains"][0]["text"]
    code, output = zsr("compare", a, b)
    assert code == 0 and "Wilcoxon" in output and "biggest gains for B" in output
    rows = zsr_json("sql", f"SELECT measure, value FROM metrics WHERE run_id = '{b}' ORDER BY measure")
    assert [r["measure"] for r in rows] == ["R@100", "nDCG@10"]
    assert rows[1]["value"] == pytest.approx(runs[1]["metrics"]["nDCG@10"])
    out = tmp_path / "run.trec"
    code, _ = zsr("export", b, "-o", str(out))
    lines = out.read_text().splitlines()
    assert code == 0 and len(lines) == 40 * 100 and lines[0].split()[1] == "Q0"
    code, output = zsr("report", a)
    report = Path(output.split("report:")[1].split()[0])
    assert code == 0 and report.is_file() and "hybrid(fusion=rrf)" in report.read_text()


def test_eval_errors_before_any_work(home):
    zsr_json("ingest", str(DEMO_DATA), "--corpus", "demo")
    for args, message in [
        (["-c", "demo", "-t", "human", "--methods", "dense,splade"], "unknown method 'splade'"),
        (["-c", "demo", "-t", "human", "--metrics", "nDCG@10,MRR@x"], "unknown measure"),
        (["-c", "demo", "-t", "nope"], "test set 'nope' is not registered"),
        (["-c", "never", "-t", "human"], "never ingested"),
    ]:
        code, output = zsr("eval", *args)
        assert code == 2 and message in output, (args, output)
    code, output = zsr("sql", "SELECT * FROM no_such_view")
    assert code == 2 and "no_such_view" in output
    code, output = zsr("compare", "x", "y")
    assert code == 2 and "zsr runs" in output


def test_bad_input_fails_cleanly_and_writes_nothing(home, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"_id": "1", "text": "fine"}\n{"_id": "2", "text": \n{"_id": "1", "text": "dup"}\n')
    code, output = zsr("ingest", str(source), "--corpus", "bad")
    assert code == 2
    assert "bad.jsonl:2" in output and "bad.jsonl:3" in output and "nothing was written" in output
    assert all(r["name"] != "bad" for r in zsr_json("corpora"))
    report = zsr_json("ingest", str(source), "--corpus", "bad", "--skip-bad")
    assert report["added"] == 1 and len(report["skipped"]) == 2
    code, output = zsr("search", "x", "--corpus", "never")
    assert code == 2 and "zsr ingest" in output


def test_synthesize_then_search_the_views(home, tmp_path):
    zsr_json("ingest", str(DEMO_DATA), "--corpus", "demo")
    examples = tmp_path / "shots.jsonl"
    examples.write_text('{"passage": "Lift of thin wings."}\n')
    for args, message in [
        (["--generator", "gpt"], "unknown generator 'gpt'"),
        (["--examples", str(examples)], "'passage' and 'query'"),
        (["--corpus", "never"], "never ingested"),
    ]:
        code, output = zsr("synthesize", "--corpus", "demo", *args)
        assert code == 2 and message in output, (args, output)
    result = zsr_json(
        "synthesize", "-c", "demo", "--generator", "extractive", "--docs", "6", "--roundtrip-k", "0"
    )
    synthesis, views = result["synthesis"], result["views"]
    assert (synthesis["documents"], synthesis["generated"], synthesis["kept"]) == (6, 6, 6)
    assert synthesis["generator"].startswith("extractive") and synthesis["llm_calls"] == 0
    assert views["query_views"] == 6 and views["expanded_documents"] == 6
    again = zsr_json(
        "synthesize", "-c", "demo", "--generator", "extractive", "--docs", "6", "--roundtrip-k", "0"
    )
    assert (again["synthesis"]["generated"], again["synthesis"]["already_done"]) == (0, 6)
    hits = zsr_json("search", "boundary layer", "-c", "demo", "--method", "multiview", "-k", "3")["hits"]
    assert len(hits) == 3


def test_console_script_runs(home):
    result = subprocess.run(
        [str(Path(sys.executable).with_name("zsr")), "methods", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert {"dense", "bm25", "hybrid", "multiview", "d2q"} <= {m["method"] for m in json.loads(result.stdout)}


def test_real_tokenizer_chunks_fit_the_window():
    from storage.types import Document
    from tasks.ingest.chunking import chunk_documents
    from tasks.ingest.embed import load_embedder, vector_space

    embedder = load_embedder(vector_space("all-MiniLM-L6-v2"))
    assert embedder.max_tokens == 254 and embedder.dim == 384
    text = " ".join(["the shock wave interacts with the laminar boundary layer near the leading edge"] * 80)
    chunks = chunk_documents([Document("x", "Shock interaction", text)], embedder, overlap=32)
    assert len(chunks) > 1
    for chunk in chunks:
        assert len(embedder.token_offsets([chunk.text])[0]) <= embedder.max_tokens
