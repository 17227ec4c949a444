"""``zsr adapt`` end to end on a tiny random model: trains, lowers the loss, survives SIGKILL, publishes.

One module, one corpus: a tiny sentence-transformer (tests/tiny_model.py) indexes 24 documents, the
extractive generator writes their queries, and a run killed after its first checkpoint is resumed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tasks.adapt.examples import split_queries
from tasks.synthetic.config import SynthesisConfig
from tasks.workspace import Workspace
from tests.adapt_kill_target import CONFIG
from tests.conftest import zsr_home_at
from tests.fakes import make_docs
from tests.tiny_model import tiny_sentence_transformer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def infonce(model, queries: list[str], positives: list[str]) -> float:
    """MNRL's loss over the whole set at once: each query against every positive, scale 20."""
    q = model.encode(queries, normalize_embeddings=True, show_progress_bar=False)
    p = model.encode(positives, normalize_embeddings=True, show_progress_bar=False)
    logits = 20 * q @ p.T
    logits -= logits.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(logits).sum(axis=1)) - np.diag(logits)))


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """The corpus, a test set sharing one synthetic query's words, a killed run and its resumed run."""
    tmp = tmp_path_factory.mktemp("adapt")
    model = tiny_sentence_transformer(tmp / "tiny")
    source = tmp / "corpus.jsonl"
    lines = [json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text}) for d in make_docs(24, 20)]
    source.write_text("\n".join(lines) + "\n")
    with zsr_home_at(tmp / "home") as home:
        ws = Workspace.open()
        ws.ingest(source, "c", model=str(model))
        ws.prepare_synthesis("c", SynthesisConfig(generator="extractive", roundtrip_k=0))(None)
        kept = [r for r in ws.store.synthetic.rows("c") if r["kept"]]
        leaked = min(kept, key=lambda r: r["query_id"])
        beir = tmp / "beir"
        (beir / "qrels").mkdir(parents=True)
        (beir / "queries.jsonl").write_text(json.dumps({"_id": "h1", "text": leaked["text"].upper()}) + "\n")
        (beir / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\nh1\t{leaked['doc_id']}\t1\n")
        ws.testsets.register("c", "human", beir)
        env = {**os.environ, "ZSR_HOME": str(home), "PYTHONPATH": str(ROOT)}
        killed = subprocess.run(
            [sys.executable, "-m", "tests.adapt_kill_target", "c", "6"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        work = list((home / "models" / "c" / ".work").glob("*/checkpoints/checkpoint-*"))
        report = ws.adapt("c", CONFIG)
        yield ws, report, killed, work, leaked, model


def test_a_killed_training_resumes_from_its_last_checkpoint(adapted):
    _, report, killed, work, _, _ = adapted

    assert killed.returncode == -9 and "step 6" in killed.stdout, killed.stderr[-2000:]
    assert [p.name for p in work] == ["checkpoint-4"]
    assert report.resumed_from == 4 and not report.reused
    assert [step for step, _ in report.losses] == [5, 6, 7, 8]  # the steps before were not run again
    assert report.manifest.steps == CONFIG.max_steps and report.manifest.stopped == "max-steps"
    assert not (Path(report.path).parent / ".work" / report.manifest.version).exists()


def test_training_lowers_the_loss_and_publishes_a_loadable_model_with_its_manifest(adapted):
    from sentence_transformers import SentenceTransformer

    ws, report, _, _, leaked, base_path = adapted
    manifest = report.manifest
    tests = [("h1", leaked["text"])]
    current = ws.store.documents.hashes("c")
    train = split_queries(ws.store.synthetic.rows("c"), current, tests, CONFIG.dev_share, CONFIG.seed)[0]
    docs = {d["doc_id"]: d for d in ws.store.documents.fetch("c", list(current), ["doc_id", "title", "text"])}
    queries = [r["text"] for r in train]
    positives = [f"{docs[r['doc_id']]['title']}\n{docs[r['doc_id']]['text']}" for r in train]

    before = infonce(SentenceTransformer(str(base_path)), queries, positives)
    after = infonce(SentenceTransformer(report.path), queries, positives)
    assert after < before - 0.1, (before, after)
    assert [m["version"] for m in ws.models("c")] == [manifest.version]
    assert manifest.base_model == str(base_path) and manifest.loss == "mnrl"
    assert manifest.train_queries == len(train) and manifest.dev_queries > 0
    assert set(manifest.dev) == {"base", "adapted"} and "nDCG@10" in manifest.dev["adapted"]


def test_a_test_set_query_is_never_trained_on(adapted):
    _, report, _, _, _, _ = adapted

    assert report.manifest.extra["excluded_testset_queries"] == 1


def test_the_same_adaptation_again_is_the_published_version(adapted):
    ws, report, _, _, _, _ = adapted

    again = ws.adapt("c", CONFIG)
    assert again.reused and again.path == report.path


def test_the_time_bound_stops_training_after_the_step_that_reached_it(adapted):
    ws, _, _, _, _, _ = adapted

    bounded = ws.adapt("c", replace(CONFIG, max_steps=50, max_minutes=1e-4))
    assert bounded.manifest.stopped == "max-minutes" and bounded.manifest.steps == 1
