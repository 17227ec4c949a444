"""The flows' declarations, read without running anything: retries, timeouts, caching, tags and UI forms.

They only inspect code, so they sit in the fast tier; tests/flows runs the same settings for real.
"""

from __future__ import annotations

from typing import Any

from flows import steps
from tasks.methods.registry import REGISTRY


def test_every_step_declares_timeout_retry_condition_jitter_and_cache() -> None:
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

    assert enum(props["methods"]) == list(REGISTRY)  # the form offers every registered method
    assert enum(props["metrics"]) == ["nDCG@10", "R@100", "RR@10", "AP@100", "P@10"]
    assert props["methods"]["default"] == ["dense", "bm25", "hybrid"]
    assert "corpus" in props and props["corpus"].get("description")
