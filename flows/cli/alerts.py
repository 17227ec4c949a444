"""The regression automation ``zsr serve`` creates: the nightly's ``zsr.evaluation.regressed`` event, routed.

With ``ZSR_REGRESSION_WEBHOOK`` set, serve keeps a Prefect Webhook block (``zsr-regression-webhook``, the
URL stored as a secret) and the automation calls it with a JSON body: ``text`` (one line per regression,
which is what Slack and Teams incoming webhooks show), ``corpus``, ``artifact_key``, ``regressions`` and
``event_id``. Unset, the automation's one action is Prefect's ``do-nothing``: no network, and its firing is
still recorded as ``prefect.automation.triggered`` and ``prefect.automation.action.executed`` events beside
the regression event in the UI's event feed, while the nightly run's own log holds the regressions as an
error line. Both are replaced at every start, so a changed URL (or none) takes effect then. Like the
rest of serve, this talks REST and imports no Prefect code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tasks.evaluation.alerts import REGRESSED_EVENT, corpus_resource

REGRESSION_AUTOMATION = "zsr: nightly regression"
WEBHOOK_BLOCK = "zsr-regression-webhook"
PAYLOAD = (  # a Jinja template over the triggering event (Prefect renders it; `tojson` quotes each value)
    '{"text": {{ event.payload.summary | tojson }}, '
    '"corpus": {{ event.resource["prefect.resource.name"] | tojson }}, '
    '"artifact_key": {{ event.payload.artifact_key | tojson }}, '
    '"regressions": {{ event.payload.regressions | tojson }}, '
    '"event_id": "{{ event.id }}"}'
)

Api = Callable[..., httpx.Response]  # Stack.api: (method, path, json=None, ok=()) -> response


def regression_automation(webhook_block_id: str | None) -> dict[str, Any]:
    """The automation: every regression event fires it once; it calls the webhook block, or does nothing."""
    if webhook_block_id:
        action: dict[str, Any] = {
            "type": "call-webhook",
            "block_document_id": webhook_block_id,
            "payload": PAYLOAD,
        }
    else:
        action = {"type": "do-nothing"}
    return {
        "name": REGRESSION_AUTOMATION,
        "description": "A nightly evaluation dropped significantly (ZSR_REGRESSION_P, "
        "ZSR_REGRESSION_MIN_DROP): "
        + ("call ZSR_REGRESSION_WEBHOOK." if webhook_block_id else "recorded in the event feed only."),
        "enabled": True,
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "match": {"prefect.resource.id": corpus_resource("*")},
            "expect": [REGRESSED_EVENT],
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": 0,
        },
        "actions": [action],
    }


def replace_regression_alert(api: Api, webhook: str | None) -> dict[str, Any]:
    """Delete the automation and block a previous serve made, create them from ``webhook``; returns it."""
    named = {"automations": {"name": {"any_": [REGRESSION_AUTOMATION]}}}
    for old in api("POST", "/automations/filter", named).json():
        api("DELETE", f"/automations/{old['id']}")
    found = api("GET", f"/block_types/slug/webhook/block_documents/name/{WEBHOOK_BLOCK}", ok=(404,))
    if found.status_code != 404:
        api("DELETE", f"/block_documents/{found.json()['id']}")
    block_id = _webhook_block(api, webhook) if webhook else None
    automation = regression_automation(block_id)
    api("POST", "/automations/", automation)
    return automation


def _webhook_block(api: Api, url: str) -> str:
    """A Webhook block document posting JSON to ``url``; returns its id."""
    block_type = api("GET", "/block_types/slug/webhook").json()
    (schema, *_) = api(
        "POST", "/block_schemas/filter", {"block_schemas": {"block_type_id": {"any_": [block_type["id"]]}}}
    ).json()
    document = {
        "name": WEBHOOK_BLOCK,
        "block_type_id": block_type["id"],
        "block_schema_id": schema["id"],
        "data": {"url": url, "method": "POST", "headers": {"Content-Type": "application/json"}},
    }
    return str(api("POST", "/block_documents/", document).json()["id"])
