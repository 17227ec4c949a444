"""The flows end to end under one Prefect harness: real model, a Cranfield slice, a temporary ZSR_HOME."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flows import steps
from storage.settings import get_settings
from storage.warehouse import Warehouse
from tasks.search import METHODS
from tests.flows.conftest import write_slice

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("harness")]


def artifacts(key: str) -> list[Any]:
    """Artifacts under ``key``, newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
        )


def task_runs(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def flow_run(flow_run_id: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def table(artifact: Any) -> list[dict[str, Any]]:
    data = artifact.data
    return json.loads(data) if isinstance(data, str) else data


def no_nan(rows: list[dict[str, Any]]) -> bool:
    return all(
        not (isinstance(v, float) and math.isnan(v)) and v is not None for r in rows for v in r.values()
    )


@pytest.fixture(scope="module")
def indexed(harness: None, source: Path) -> str:
    """The slice indexed as corpus ``flows`` with its qrels registered as test set ``human``."""
    from flows.reindex import reindex
    from tasks.api import open_store
    from tasks.testsets import register

    reindex(corpus="flows", source=str(source))
    register(get_settings().testsets_dir, open_store(), "flows", "human", source, replace=True)
    return "flows"


def test_reindex_reports_changes_and_is_idempotent(harness: None, tmp_path: Path) -> None:
    from flows.reindex import reindex

    small = write_slice(tmp_path / "small", queries=1, extra_docs=3)
    n_docs = len((small / "corpus.jsonl").read_text().splitlines())
    state = reindex(corpus="reidx", source=str(small), return_state=True)
    first = state.result()
    assert (first["index"]["added"], first["index"]["chunks_encoded"]) == (
        n_docs,
        first["index"]["chunks_written"],
    )
    assert first["views"]["title_views"] == n_docs
    assert flow_run(state.state_details.flow_run_id).name == "reindex-reidx"
    again = reindex(corpus="reidx", source=str(small), refresh_views=False)
    assert (again["index"]["unchanged"], again["index"]["chunks_encoded"], again["views"]) == (
        n_docs,
        0,
        None,
    )
    report = {r["what"]: r["count"] for r in table(artifacts("reindex-reidx")[0])}
    assert report["unchanged"] == n_docs and report["added"] == 0
    progress = artifacts("reindex-reidx-progress")
    assert progress and progress[-1].data == 100.0  # the first run embedded, and finished at 100 %


def test_evaluate_publishes_runs_and_deltas(indexed: str) -> None:
    from flows.evaluate import evaluate

    first = evaluate(corpus=indexed, testset="human", methods=["dense", "bm25"], metrics=["nDCG@10", "R@100"])
    assert [r.method for r in first.runs] == ["dense", "bm25"] and first.previous == {}
    assert first.label == "adhoc" and first.eval_id.split("-")[2] == "adhoc"
    state = evaluate(
        corpus=indexed,
        testset="human",
        methods=["dense", "bm25", "hybrid"],
        metrics=["nDCG@10", "R@100"],
        return_state=True,
    )
    second = state.result()
    assert flow_run(state.state_details.flow_run_id).name == "evaluate-flows-human"
    assert {m: p["run_id"] for m, p in second.previous.items()} == {r.method: r.run_id for r in first.runs}

    rows = table(artifacts("adhoc-flows-human-results")[0])
    assert [r["method"] for r in rows] == ["dense", "bm25", "hybrid"] and no_nan(rows)
    by_method = {r["method"]: r for r in rows}
    assert by_method["dense"]["Δ nDCG@10"] == "+0.0000"  # same index, same queries: same score
    assert by_method["hybrid"]["Δ nDCG@10"] == "new" and by_method["hybrid"]["previous run"] == "none"
    assert by_method["bm25"]["previous run"] == first.runs[1].run_id

    summary = artifacts("adhoc-flows-human-summary")[0].data
    assert second.report and Path(second.report).is_file() and f"file://{second.report}" in summary
    assert "nan" not in summary.lower() and first.eval_id in summary

    warehouse = Warehouse(get_settings().warehouse_dir)
    counted = warehouse.query(
        "SELECT eval_id, count(*) AS n FROM runs WHERE corpus = 'flows' GROUP BY eval_id ORDER BY eval_id"
    ).to_pylist()
    assert [(r["eval_id"], r["n"]) for r in counted] == [(first.eval_id, 2), (second.eval_id, 3)]
    tasks = {t.name.rsplit("-", 1)[0] for t in task_runs(state.state_details.flow_run_id)}
    assert {"open_searcher", "load_testset", "evaluate_method", "previous_runs", "write_report"} <= tasks


def test_evaluate_refuses_bad_input_before_any_work(indexed: str) -> None:
    from prefect.exceptions import ParameterTypeError

    from flows.evaluate import evaluate
    from tasks.testsets import UnknownTestSetError

    with pytest.raises(ParameterTypeError):
        evaluate(corpus=indexed, testset="human", methods=["splade"])
    with pytest.raises(UnknownTestSetError, match="not registered"):
        evaluate(corpus=indexed, testset="missing")


def test_synthesize_extractive_then_nothing_new(indexed: str) -> None:
    from flows.synthesize import synthesize

    state = synthesize(corpus=indexed, generator="extractive", roundtrip_k=5, return_state=True)
    first = state.result()
    assert first["synthesis"]["generated"] > 0 and first["views"]["query_views"] == first["synthesis"]["kept"]
    (task,) = [t for t in task_runs(state.state_details.flow_run_id) if t.name.startswith("generate_queries")]
    assert steps.LLM_TAG not in task.tags  # no LLM call, so no slot of the LLM limit taken
    again = synthesize(corpus=indexed, generator="extractive", roundtrip_k=5)["synthesis"]
    assert (again["generated"], again["already_done"]) == (0, first["synthesis"]["generated"])
    rows = {r["what"]: r["count"] for r in table(artifacts(f"synthesize-{indexed}")[0])}
    assert rows["already_done"] == first["synthesis"]["generated"]


def test_synthesize_with_llm_takes_the_llm_slot(indexed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client

    from flows.synthesize import synthesize
    from tests import fake_llm

    fake = fake_llm.install()
    fake.rule = lambda messages, params: "what is the pressure distribution on a wing"
    monkeypatch.setenv("ZSR_LLM_MODEL", "zsr-fake/writer")
    get_settings.cache_clear()
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=steps.LLM_TAG, concurrency_limit=1)
    try:
        state = synthesize(corpus=indexed, generator="llm", sample_docs=3, roundtrip_k=0, return_state=True)
        report = state.result()["synthesis"]
    finally:
        with get_client(sync_client=True) as client:
            client.delete_concurrency_limit_by_tag(steps.LLM_TAG)
        get_settings.cache_clear()
    assert report["documents"] == 3 and report["generated"] == 3 and len(fake.calls) == 3
    (task,) = [t for t in task_runs(state.state_details.flow_run_id) if t.name.startswith("generate_queries")]
    assert steps.LLM_TAG in task.tags and task.state.is_completed()
    calls = Warehouse(get_settings().warehouse_dir).query("SELECT count(*) AS n FROM llm_calls").to_pylist()
    assert calls[0]["n"] >= 3


def test_nightly_reindexes_synthesizes_evaluates_and_compares(harness: None, tmp_path: Path) -> None:
    from flows.nightly import nightly
    from tasks.api import open_store
    from tasks.testsets import register

    source = write_slice(tmp_path / "nightly", queries=2, extra_docs=6, skip_docs=3)
    first = nightly(corpus="nightly", source=str(source), methods=["bm25", "dense"], metrics=["nDCG@10"])
    assert first["evaluations"] == []  # nothing registered yet: indexed and synthesized only
    assert first["synthesis"]["synthesis"]["generated"] == first["index"]["index"]["added"]
    register(get_settings().testsets_dir, open_store(), "nightly", "human", source, replace=True)
    second = nightly(corpus="nightly", source=str(source), methods=["bm25", "dense"], metrics=["nDCG@10"])
    assert second["index"]["index"]["added"] == 0 and second["synthesis"]["synthesis"]["generated"] == 0
    assert [r["method"] for r in second["comparison"]] == ["bm25", "dense"]
    assert all("previous" not in r for r in second["comparison"])  # first evaluation: nothing to compare

    write_slice(source, queries=2, extra_docs=6)  # three more documents appear in the source
    state = nightly(
        corpus="nightly",
        source=str(source),
        methods=["bm25", "dense"],
        metrics=["nDCG@10"],
        return_state=True,
    )
    third = state.result()
    assert third["index"]["index"]["added"] == 3 and third["synthesis"]["synthesis"]["generated"] == 3
    assert len(third["evaluations"]) == 1
    compared = {r["method"]: r for r in third["comparison"]}
    assert compared["bm25"]["previous"] == second["evaluations"][0].runs[0].run_id
    assert compared["bm25"]["wins"] + compared["bm25"]["ties"] + compared["bm25"]["losses"] == 2
    markdown = artifacts("adhoc-nightly-comparison")[0].data
    assert "| human | bm25 |" in markdown and "nan" not in markdown.lower()
    assert flow_run(state.state_details.flow_run_id).name.startswith("nightly-nightly-")


def test_tasks_retry_with_jitter_only_on_transient_errors() -> None:
    from prefect import Task
    from prefect.cache_policies import NO_CACHE
    from prefect.states import Failed

    wrappers = [v for v in vars(steps).values() if isinstance(v, Task)]
    assert len(wrappers) >= 10
    for wrapper in wrappers:
        assert wrapper.timeout_seconds, wrapper.name
        assert wrapper.retry_jitter_factor == steps.JITTER and wrapper.retry_condition_fn is steps.transient
        assert wrapper.retry_delay_seconds == steps.RETRY_DELAYS or wrapper.retries == 0
    writes = (steps.index_source, steps.refresh_views, steps.generate_queries, steps.evaluate_method)
    assert all(w.cache_policy is NO_CACHE for w in writes)
    assert steps.generate_queries.tags == {steps.LLM_TAG}
    assert {m for m in ("dense", "hyde", "prf", "prf(first=rerank)", "rede-rf") if steps.calls_llm(m)} == {
        "hyde",
        "prf(first=rerank)",
        "rede-rf",
    }
    assert steps.evaluation_task("rerank").tags == {steps.LLM_TAG} and not steps.evaluation_task("bm25").tags
    assert not steps.transient(steps.index_source, None, Failed(data=FileNotFoundError("x")))  # type: ignore[arg-type]
    assert steps.transient(steps.index_source, None, Failed(data=OSError("connection reset")))  # type: ignore[arg-type]


def test_parameter_schemas_render_clean_forms() -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.evaluate import evaluate

    schema = parameter_schema(evaluate).model_dump()
    props, definitions = schema["properties"], schema.get("definitions", {})
    assert props["corpus"]["type"] == "string" and props["depth"]["anyOf"][0]["type"] == "integer"

    def enum(prop: dict[str, Any]) -> list[str]:
        items = prop["items"]
        ref = items.get("$ref", "").rsplit("/", 1)[-1]
        return (definitions[ref] if ref else items)["enum"]

    assert enum(props["methods"]) == list(METHODS)  # the form offers every registered method
    assert enum(props["metrics"]) == ["nDCG@10", "R@100", "RR@10", "AP@100", "P@10"]
    assert props["methods"]["default"] == ["dense", "bm25", "hybrid"]
    assert "corpus" in props and props["corpus"].get("description")


def test_cli_and_serve_work_without_a_prefect_server(tmp_path: Path) -> None:
    """`zsr` never needs the server: neither the CLI nor `zsr serve`'s module imports Prefect."""
    code = (
        "import sys, flows.cli, flows.serve\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))\n"
        "flows.cli.app(['corpora', '--json'])\n"
    )
    env = {**os.environ, "ZSR_HOME": str(tmp_path), "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.splitlines()[0] == "[]" and json.loads("\n".join(result.stdout.splitlines()[1:])) == []
    )
