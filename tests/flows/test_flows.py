"""The flows end to end under one Prefect harness: real model, a Cranfield slice, a temporary ZSR_HOME."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from flows import steps
from storage.warehouse import Warehouse
from tasks.settings import get_settings
from tasks.synthetic.config import SynthesisConfig
from tasks.workspace import Workspace
from tests.flows.conftest import write_slice

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("harness")]
ROOT = Path(__file__).resolve().parents[2]


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


def settled(task_run_id: Any, timeout: float = 60.0) -> tuple[Any, list[Any]]:
    """The task run and its state history once the server holds its final state.

    Task run states reach the server as events, a moment after the flow call returns.
    """
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_task_run(task_run_id)
            history = client.read_task_run_states(task_run_id)
            if run.state and run.state.is_final() and history and history[-1].is_final():
                return run, history
            if time.monotonic() > deadline:
                pytest.fail(f"task run {task_run_id} not final after {timeout:.0f} s: {run.state}")
            time.sleep(0.2)


def run_alone(step: Any, *args: Any) -> tuple[Any, Any, list[Any]]:
    """``step(*args)`` as the one task of a flow: the flow's final state, the task run and its states."""
    from prefect import flow

    @flow(name="one-step")
    def one_step() -> Any:
        return step(*args)

    state = one_step(return_state=True)
    deadline = time.monotonic() + 60
    while not (runs := task_runs(state.state_details.flow_run_id)):
        if time.monotonic() > deadline:
            pytest.fail("the task run never reached the server")
        time.sleep(0.2)
    (run,) = runs
    return (state, *settled(run.id))


def spy_jitter(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """``(delay, jitter factor)`` of every retry delay the task engine spreads at random."""
    from prefect import task_engine

    real, calls = task_engine.clamped_poisson_interval, []

    def spy(average_interval: float, clamping_factor: float = 0.3) -> float:
        calls.append((average_interval, clamping_factor))
        return real(average_interval, clamping_factor=clamping_factor)

    monkeypatch.setattr(task_engine, "clamped_poisson_interval", spy)
    return calls


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

    reindex(corpus="flows", source=str(source))
    Workspace.open().testsets.register("flows", "human", source, replace=True)
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


def test_evaluate_publishes_runs_and_deltas(indexed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.evaluate import evaluate
    from tasks.evaluation import runs

    sequences: list[Any] = []  # the flow runs the one evaluation sequence, with the steps as tasks
    sequence = runs.evaluate

    def spy(steps: Any, corpus: str, testset: str, *a: Any, **kw: Any) -> Any:
        sequences.append((steps, leased("corpus", corpus), leased("testset", corpus, testset)))
        return sequence(steps, corpus, testset, *a, **kw)

    monkeypatch.setattr(runs, "evaluate", spy)
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
    # ... holding its corpus and test set for the whole sequence, so `zsr rm` refuses them meanwhile
    assert sequences == [(steps.ORCHESTRATED, True, True)] * 2


def leased(kind: str, *names: str) -> bool:
    """Whether a job holds the lease on a corpus or test set (a delete could not take it now)."""
    from tasks.leases import InUseError, exclusive, lock_path

    try:
        with exclusive(lock_path(get_settings().home_dir / "locks", kind, *names), kind):
            return False
    except InUseError:
        return True


def test_evaluate_refuses_bad_input_before_any_work(indexed: str) -> None:
    from prefect.exceptions import ParameterTypeError

    from flows.evaluate import evaluate
    from tasks.evaluation.testsets import UnknownTestSetError

    with pytest.raises(ParameterTypeError):
        evaluate(corpus=indexed, testset="human", methods=["splade"])
    with pytest.raises(UnknownTestSetError, match="not registered"):
        evaluate(corpus=indexed, testset="missing")


def test_synthesize_extractive_then_nothing_new(indexed: str) -> None:
    from flows.synthesize import synthesize

    extractive = SynthesisConfig(generator="extractive", roundtrip_k=5)
    state = synthesize(corpus=indexed, synthesis=extractive, return_state=True)
    first = state.result()
    assert flow_run(state.state_details.flow_run_id).name == f"synthesize-{indexed}-extractive"
    assert first["synthesis"]["generated"] > 0 and first["views"]["query_views"] == first["synthesis"]["kept"]
    (task,) = [t for t in task_runs(state.state_details.flow_run_id) if t.name.startswith("generate_queries")]
    assert steps.LLM_TAG not in task.tags  # no LLM call, so no slot of the LLM limit taken
    again = synthesize(corpus=indexed, synthesis=extractive)["synthesis"]
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
        config = SynthesisConfig(generator="llm", sample_docs=3, roundtrip_k=0)
        state = synthesize(corpus=indexed, synthesis=config, return_state=True)
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

    source = write_slice(tmp_path / "nightly", queries=2, extra_docs=6, skip_docs=3)
    first = nightly(corpus="nightly", source=str(source), methods=["bm25", "dense"], metrics=["nDCG@10"])
    assert first["evaluations"] == []  # nothing registered yet: indexed and synthesized only
    assert first["synthesis"]["synthesis"]["generated"] == first["index"]["index"]["added"]
    Workspace.open().testsets.register("nightly", "human", source, replace=True)
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


def events(name: str, resource_id: str, timeout: float = 60.0) -> list[Any]:
    """Events of that name about that resource, as the server holds them (they arrive a moment later)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    query = EventFilter(event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource_id]))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:  # limit: the client's default (100) is over the server's 50
        while (
            not (found := client.read_events(filter=query, limit=50).events) and time.monotonic() < deadline
        ):
            time.sleep(0.5)
    return found


def test_nightly_regression_ends_regressed_with_its_artifact_and_an_event(
    harness: None, tmp_path: Path
) -> None:
    """Plant: the second night's source loses every judged document, so the re-index deletes them."""
    from prefect.server.utilities.user_templates import render_user_template_sync

    from flows.cli.alerts import PAYLOAD
    from flows.nightly import nightly
    from tasks.evaluation import alerts

    source = write_slice(tmp_path / "regress", queries=4, extra_docs=6)
    Workspace.open().ingest(source, "regress", fmt="beir")
    Workspace.open().testsets.register("regress", "human", source, replace=True)
    params: dict[str, Any] = {"corpus": "regress", "source": str(source), "methods": ["bm25"]}
    params["metrics"] = ["nDCG@10"]
    assert nightly(**params)["comparison"][0]["run"]  # the baseline: first evaluation, nothing to compare
    judged = {line.split("\t")[1] for line in (source / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    docs = (source / "corpus.jsonl").read_text().splitlines()
    (source / "corpus.jsonl").write_text(
        "".join(d + "\n" for d in docs if json.loads(d)["_id"] not in judged)
    )

    state = nightly(**params, return_state=True)
    run_id = state.state_details.flow_run_id
    assert state.is_failed() and state.name == alerts.REGRESSED_STATE, state
    held = flow_run(run_id).state
    assert (held.type.value, held.name) == ("FAILED", "Regressed") and "human/bm25: nDCG@10" in held.message
    result = state.result(raise_on_failure=False)  # the run's result stays readable in its failed state
    (row,) = result["comparison"]
    assert row["after"] == 0.0 < row["before"] and row["t_test_p"] < 0.05
    markdown = artifacts("adhoc-regress-comparison")[0].data
    assert "| human | bm25 |" in markdown and "**Regressed**" in markdown and "- human/bm25:" in markdown

    (event,) = events(alerts.REGRESSED_EVENT, alerts.corpus_resource("regress"))
    assert event.resource["zsr.measure"] == "nDCG@10" and event.resource["zsr.deployment"] == "adhoc"
    assert f"prefect.flow-run.{run_id}" in {r.id for r in event.related}  # Prefect adds the run's context
    assert event.payload["artifact_key"] == "adhoc-regress-comparison"
    (regression,) = event.payload["regressions"]
    assert (regression["method"], regression["testset"], regression["run"]) == ("bm25", "human", row["run"])
    assert regression["previous"] == row["previous"] and regression["delta"] == -row["before"]
    body = json.loads(render_user_template_sync(PAYLOAD, {"event": event}))  # what serve's webhook sends
    assert body["text"] == held.message and body["corpus"] == "regress" and body["event_id"] == str(event.id)
    assert body["regressions"] == event.payload["regressions"]


@pytest.mark.parametrize("failures", [1, 5])
def test_transient_error_is_retried_with_zsr_jitter(failures: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real wrapper whose library call fails: Prefect retries it by zsr's condition and jitter."""
    attempts: list[str] = []

    def flaky(root: Path, corpus: str) -> list[dict[str, Any]]:
        attempts.append(corpus)
        if len(attempts) <= failures:
            raise ConnectionResetError(f"object store reset the connection (attempt {len(attempts)})")
        return [{"name": "human"}]

    monkeypatch.setattr("tasks.evaluation.testsets.list_testsets", flaky)
    jitter = spy_jitter(monkeypatch)
    step = steps.find_testsets.with_options(retry_delay_seconds=[0.1, 0.2])  # zsr's own: 2 and 10 s
    assert step.retry_condition_fn is steps.transient and step.retry_jitter_factor == steps.JITTER
    state, run, history = run_alone(step, "flaky")

    tries = min(failures + 1, 1 + steps.find_testsets.retries)
    assert attempts == ["flaky"] * tries and run.run_count == tries
    planned = [0.1, 0.2][: tries - 1]
    assert [c for c in jitter if c[0] in (0.1, 0.2)] == [(p, steps.JITTER) for p in planned]
    waits = [s for s in history if s.name == "AwaitingRetry"]  # each retry scheduled after its delay
    delays = [(s.state_details.scheduled_time - s.timestamp).total_seconds() for s in waits]
    assert len(delays) == len(planned)
    assert all(0 < d <= p * (1 + steps.JITTER) for d, p in zip(delays, planned, strict=True)), delays
    if failures < tries:
        assert state.is_completed() and state.result() == ["human"]
        assert run.state.type.value == "COMPLETED" and run.state.name == "Completed"
    else:
        assert state.is_failed() and run.state.is_failed()
        assert f"(attempt {tries})" in (state.message or ""), state.message


@pytest.mark.parametrize(
    "error",
    [
        ValueError("unknown method 'splad'; run zsr methods for the list"),
        FileNotFoundError("no test sets in /nowhere/testsets: register one with zsr testset add"),
    ],
    ids=["ValueError", "FileNotFoundError"],
)
def test_bad_input_fails_at_once_with_its_message(error: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[str] = []

    def broken(root: Path, corpus: str) -> list[dict[str, Any]]:
        attempts.append(corpus)
        raise error

    monkeypatch.setattr("tasks.evaluation.testsets.list_testsets", broken)
    step = steps.find_testsets.with_options(retry_delay_seconds=[0.1, 0.2])
    assert step.retries == 2 and step.retry_condition_fn is steps.transient
    state, run, history = run_alone(step, "broken")
    assert attempts == ["broken"] and run.run_count == 1
    assert run.state.is_failed() and "AwaitingRetry" not in [s.name for s in history]
    assert state.is_failed() and str(error) in (state.message or ""), state.message
    with pytest.raises(type(error), match="zsr"):
        state.result()


def test_hung_step_times_out_and_a_retry_recovers(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def hangs(root: Path, corpus: str) -> list[dict[str, Any]]:
        calls.append(corpus)
        if corpus == "hung" or len(calls) == 1:
            try:
                for _ in range(600):  # 30 s in short sleeps, which a timeout can interrupt in any thread
                    time.sleep(0.05)
            except BaseException:
                calls.append("interrupted")
                raise
        return []

    monkeypatch.setattr("tasks.evaluation.testsets.list_testsets", hangs)
    step = steps.find_testsets.with_options(timeout_seconds=1, retry_delay_seconds=[0.1])
    state, run, _ = run_alone(step.with_options(retries=0), "hung")
    assert calls == ["hung", "interrupted"] and run.run_count == 1
    assert run.state.is_failed() and run.state.name == "TimedOut", run.state
    assert state.is_failed() and isinstance(state.result(raise_on_failure=False), TimeoutError)

    calls.clear()
    state, run, history = run_alone(step, "slow-once")  # a timeout is transient: retried
    assert calls == ["slow-once", "interrupted", "slow-once"] and run.run_count == 2
    assert "AwaitingRetry" in [s.name for s in history]
    assert state.is_completed() and run.state.name == "Completed" and state.result() == []


def test_pure_steps_hit_their_cache_writes_run_again(
    harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``check_methods`` (INPUTS + TASK_SOURCE) is answered from the cache; ``index_source`` runs again."""
    from prefect import flow

    parsed: list[Any] = []
    check = steps.check
    monkeypatch.setattr(steps, "check", lambda *args: (parsed.append(args), check(*args))[1])
    small = write_slice(tmp_path / "cached", queries=1, extra_docs=2)
    n_docs = len((small / "corpus.jsonl").read_text().splitlines())
    methods, metrics = ["bm25", "dense"], ["nDCG@17"]  # inputs no other test passes: the first call runs

    @flow(name="pure-and-write")
    def pure_and_write() -> tuple[list[Any], dict[str, Any]]:
        checked = steps.check_methods(methods, metrics, return_state=True)
        indexed = steps.index_source(str(small), "cached", None, False, False, return_state=True)
        ids = [checked.state_details.task_run_id, indexed.state_details.task_run_id]
        return ids, indexed.result()

    first_ids, first = pure_and_write()
    second_ids, second = pure_and_write()
    first_runs = [settled(i)[0] for i in first_ids]
    second_runs = [settled(i)[0] for i in second_ids]
    assert [r.state.name for r in first_runs] == ["Completed", "Completed"]
    assert [r.state.name for r in second_runs] == ["Cached", "Completed"]
    assert second_runs[0].state.is_completed() and len(parsed) == 1  # its body ran once: then the cache
    assert first["added"] == n_docs and (second["added"], second["unchanged"]) == (0, n_docs)


@dataclass
class _Report:
    generated: int


class InFlight:
    """How many calls are inside at once; each waits up to ``patience`` s for another to join it.

    The wait makes overlap certain wherever the orchestrator allows it, so the maximum shows the limit.
    """

    def __init__(self, patience: float) -> None:
        self.patience, self.now, self.most = patience, 0, 0
        self.changed = threading.Condition()

    def __call__(self) -> None:
        with self.changed:
            self.now += 1
            self.most = max(self.most, self.now)
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.most >= 2, timeout=self.patience)
            self.now -= 1


@pytest.mark.parametrize("limit", [1, 2])
def test_llm_limit_bounds_concurrent_llm_steps(limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Generation with the LLM and an LLM method's evaluation, submitted together, share the ``llm`` limit.

    With a limit of 1 they run one after the other; the control, a limit of 2, lets them overlap.
    """
    from prefect import flow
    from prefect.client.orchestration import get_client

    # Overlapping calls leave as soon as they meet, so the control can wait long for its partner; a limit of
    # 1 makes each call wait the whole patience, alone, which gives a broken limit 10 s to let the other in.
    inside = InFlight(patience=10.0 if limit == 1 else 60.0)

    def prepare_synthesis(self: Workspace, corpus: str, config: SynthesisConfig) -> Callable[[Any], _Report]:
        return lambda progress: (inside(), _Report(generated=1))[1]

    def run_method(self: Workspace, *args: Any) -> str:
        inside()
        return "run-hyde"

    monkeypatch.setattr(Workspace, "prepare_synthesis", prepare_synthesis)
    monkeypatch.setattr(Workspace, "run_method", run_method)
    plan = SimpleNamespace(testset=SimpleNamespace(corpus="llm-limit", name="human"))

    @flow(name="two-llm-steps")
    def two_llm_steps() -> tuple[list[Any], tuple[Any, Any]]:
        generating = steps.generate_queries.submit("llm-limit", SynthesisConfig(roundtrip_k=0))
        evaluating = steps.evaluation_task("hyde").submit(None, plan, "hyde", "llm-limit-progress")
        return [generating.task_run_id, evaluating.task_run_id], (generating.result(), evaluating.result())

    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=steps.LLM_TAG, concurrency_limit=limit)
    try:
        ids, results = two_llm_steps()
    finally:
        with get_client(sync_client=True) as client:
            client.delete_concurrency_limit_by_tag(steps.LLM_TAG)
    assert results == ({"generated": 1}, "run-hyde")
    assert inside.most == limit
    runs = [settled(i)[0] for i in ids]
    assert all(steps.LLM_TAG in r.tags and r.state.is_completed() for r in runs), [r.tags for r in runs]


NO_SERVER_SCRIPT = """
import contextlib, io, json, shlex, sys
import flows, flows.cli, flows.cli.serve

def prefect_modules():
    return sorted(m for m in sys.modules if m.split(".")[0] == "prefect")

at_import = prefect_modules()
source, trec = (shlex.quote(a) for a in sys.argv[1:3])

def zsr(command, parse=True):
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        code = flows.cli.app(shlex.split(command), standalone_mode=False)
    if code not in (None, 0):
        sys.exit(f"zsr {command} exited {code}")
    return json.loads(captured.getvalue()) if parse else captured.getvalue()

out = {"flows": flows.__file__, "at_import": at_import, "corpora": zsr("corpora --json")}
out["ingest"] = zsr(f"ingest {source} --corpus cli --json")
out["search"] = zsr("search 'pressure on a wing' --corpus cli -m bm25 -k 3 --json")
out["testset"] = zsr(f"testset add cli human {source} --json")
out["eval"] = zsr("eval -c cli -t human --methods bm25,dense --metrics nDCG@10 --json")
run_a, run_b = (r["run_id"] for r in out["eval"])
out["runs"] = zsr("runs --json")
out["compare"] = zsr(f"compare {run_a} {run_b} --json")
out["report"] = zsr(f"report {run_a}", parse=False)
zsr(f"export {run_a} --output {trec}", parse=False)
out["export"] = zsr(f"export {run_b}", parse=False)
out["sql"] = zsr("sql 'SELECT 1 AS one' --json")
out["synthesize"] = zsr("synthesize -c cli --generator extractive --docs 3 --roundtrip-method bm25 --json")
out["at_end"] = prefect_modules()
print(json.dumps(out, default=str))
"""


def test_cli_and_serve_work_without_a_prefect_server(tmp_path: Path) -> None:
    """Every `zsr` command runs with the Prefect API unreachable, and none imports Prefect.

    One process runs them in turn (one model load), from the checkout this test file belongs to.
    """
    source = write_slice(tmp_path / "slice", queries=2, extra_docs=6)
    trec = tmp_path / "run.trec"
    env = {**os.environ, "ZSR_HOME": str(tmp_path / "home"), "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    result = subprocess.run(
        [sys.executable, "-c", NO_SERVER_SCRIPT, str(source), str(trec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert Path(out["flows"]).resolve().parent.parent == ROOT  # the code under test, not an installed copy
    assert out["at_import"] == [] and out["corpora"] == []
    n_docs = len((source / "corpus.jsonl").read_text().splitlines())
    assert out["ingest"]["added"] == n_docs and out["search"]["hits"]
    assert out["testset"]["n_queries"] == 2
    runs = {r["method"]: r["run_id"] for r in out["eval"]}
    assert set(runs) == {"bm25", "dense"} and set(runs.values()) <= {r["run_id"] for r in out["runs"]}
    assert (out["compare"]["run_a"]["run_id"], out["compare"]["run_b"]["run_id"]) == (
        runs["bm25"],
        runs["dense"],
    )
    assert Path(out["report"].split("report: ", 1)[1].strip()).is_file()
    exported = {
        run: text.splitlines()
        for run, text in [(runs["bm25"], trec.read_text()), (runs["dense"], out["export"])]
    }
    assert all(
        lines and all(line.split()[1::4] == ["Q0", run] for line in lines) for run, lines in exported.items()
    )
    assert out["sql"] == [{"one": 1}]
    assert out["synthesize"]["synthesis"]["generated"] > 0
    assert out["at_end"] == []  # no command imported Prefect, not even late
