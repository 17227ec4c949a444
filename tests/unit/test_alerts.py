"""The regression decision: comparison rows in, regressions out (tasks/evaluation/alerts.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tasks.evaluation.alerts import Regression, find_regressions, summary


def row(method: str, before: float, after: float, p: float | None, testset: str = "human") -> dict[str, Any]:
    """A nightly comparison row with a previous run."""
    return {
        "testset": testset,
        "method": method,
        "run": f"run-{method}-new",
        "previous": f"run-{method}-old",
        "before": before,
        "after": after,
        "wins": 0,
        "ties": 0,
        "losses": 0,
        "t_test_p": p,
        "wilcoxon_p": 0.9,  # never consulted: the rule is the t-test's
    }


def regressions(*rows: dict[str, Any], p_max: float = 0.05, min_drop: float = 0.01) -> list[str]:
    return [r.method for r in find_regressions(rows, "nDCG@10", p_max, min_drop)]


def test_a_significant_drop_above_the_minimum_is_a_regression() -> None:
    (found,) = find_regressions([row("bm25", 0.6, 0.2, 0.003)], "nDCG@10", 0.05, 0.01)
    assert found == Regression(
        testset="human",
        method="bm25",
        measure="nDCG@10",
        before=0.6,
        after=0.2,
        delta=pytest.approx(-0.4),
        p=0.003,
        run="run-bm25-new",
        previous="run-bm25-old",
    )
    assert found.line() == "human/bm25: nDCG@10 0.6000 -> 0.2000 (-0.4000, t-test p 0.003)"
    assert found.as_dict()["delta"] == pytest.approx(-0.4)


def test_no_previous_run_is_no_regression() -> None:
    new = {"testset": "human", "method": "hybrid", "run": "run-hybrid-new"}
    assert regressions(new) == []


@pytest.mark.parametrize("p", [None, math.nan], ids=["None", "NaN"])
def test_undefined_p_all_ties_is_no_regression(p: float | None) -> None:
    assert regressions(row("bm25", 0.5, 0.5, p), row("dense", 0.6, 0.3, p)) == []


def test_an_improvement_with_a_small_p_is_no_regression() -> None:
    assert regressions(row("bm25", 0.2, 0.6, 0.001)) == []


def test_a_drop_below_the_minimum_effect_is_no_regression() -> None:
    assert regressions(row("bm25", 0.600, 0.595, 0.0001)) == []  # significant, but -0.005 < 0.01
    assert regressions(row("bm25", 0.600, 0.595, 0.0001), min_drop=0.005) == ["bm25"]  # at the minimum
    assert regressions(row("bm25", 0.6, 0.5, 0.0001), min_drop=0.2) == []


def test_a_drop_that_is_not_significant_is_no_regression() -> None:
    assert regressions(row("bm25", 0.6, 0.2, 0.05)) == []  # p must be below the threshold
    assert regressions(row("bm25", 0.6, 0.2, 0.3)) == []
    assert regressions(row("bm25", 0.6, 0.2, 0.3), p_max=0.5) == ["bm25"]


def test_only_the_regressed_rows_in_their_order_and_the_summary_names_them() -> None:
    rows = [
        row("dense", 0.7, 0.4, 0.01, testset="synthetic"),
        {"testset": "human", "method": "hybrid", "run": "run-hybrid-new"},
        row("bm25", 0.5, 0.51, 0.2),
        row("bm25", 0.6, 0.2, 0.003),
    ]
    found = find_regressions(rows, "nDCG@10", 0.05, 0.01)
    assert [(r.testset, r.method) for r in found] == [("synthetic", "dense"), ("human", "bm25")]
    text = summary("demo", found)
    assert text.startswith("2 regression(s) on demo; synthetic/dense: nDCG@10 0.7000 -> 0.4000")
    assert "human/bm25" in text and "hybrid" not in text


NEW_BLOCK = "0b10c000-0000-4000-8000-000000000001"


class FakeApi:
    """Stack.api's signature over a dict of paths: records calls, answers what a fresh server would."""

    def __init__(self, existing: bool) -> None:
        self.calls: list[tuple[str, str]] = []
        self.created: list[Any] = []
        self.existing = existing

    def __call__(self, method: str, path: str, json: Any = None, ok: tuple[int, ...] = ()) -> Any:
        import httpx

        self.calls.append((method, path))
        if method == "POST" and path in ("/automations/", "/block_documents/"):
            self.created.append(json)
        answers: dict[tuple[str, str], tuple[int, Any]] = {
            ("POST", "/automations/filter"): (200, [{"id": "old-automation"}] if self.existing else []),
            ("GET", "/block_types/slug/webhook/block_documents/name/zsr-regression-webhook"): (
                (200, {"id": "old-block"}) if self.existing else (404, {"detail": "not found"})
            ),
            ("GET", "/block_types/slug/webhook"): (200, {"id": "webhook-type"}),
            ("POST", "/block_schemas/filter"): (200, [{"id": "webhook-schema"}]),
            ("POST", "/block_documents/"): (201, {"id": NEW_BLOCK}),
        }
        status, body = answers.get((method, path), (200, {}))
        return httpx.Response(status, json=body)


@pytest.mark.parametrize("webhook", [None, "http://127.0.0.1:9/hook"], ids=["event-feed", "webhook"])
def test_serve_replaces_the_regression_automation_and_prefect_accepts_it(webhook: str | None) -> None:
    from prefect.server.events.schemas.automations import AutomationCreate

    from flows.cli.alerts import REGRESSION_AUTOMATION, replace_regression_alert

    api = FakeApi(existing=True)
    automation = replace_regression_alert(api, webhook)
    assert ("DELETE", "/automations/old-automation") in api.calls  # idempotent: the old one goes first
    assert ("DELETE", "/block_documents/old-block") in api.calls  # and a stale URL with it
    assert api.calls.index(("DELETE", "/automations/old-automation")) < api.calls.index(
        ("DELETE", "/block_documents/old-block")
    )
    checked = AutomationCreate.model_validate(automation)  # what the server validates (payload template too)
    assert checked.name == REGRESSION_AUTOMATION and checked.enabled
    trigger = checked.trigger
    assert trigger.expect == {"zsr.evaluation.regressed"} and trigger.posture == "Reactive"
    assert trigger.match.model_dump() == {"prefect.resource.id": "zsr.corpus.*"}
    assert (trigger.threshold, trigger.within.total_seconds()) == (1, 0)
    (action,) = checked.actions
    if webhook is None:
        assert action.type == "do-nothing" and len(api.created) == 1  # the automation, no block
    else:
        block, _ = api.created
        assert block["data"]["url"] == webhook and block["block_schema_id"] == "webhook-schema"
        assert action.type == "call-webhook" and str(action.block_document_id) == NEW_BLOCK
        assert action.payload.startswith('{"text": {{ event.payload.summary | tojson }}')


def test_serve_on_a_fresh_server_deletes_nothing() -> None:
    from flows.cli.alerts import replace_regression_alert

    api = FakeApi(existing=False)
    replace_regression_alert(api, None)
    assert not [call for call in api.calls if call[0] == "DELETE"]
