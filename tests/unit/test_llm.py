"""The LLM client's retry, backoff, fallback, cache and usage logic, against LiteLLM's mock responses."""

from __future__ import annotations

import random

import litellm
import pyarrow as pa
import pytest

from storage.llm_cache import ResponseCache
from tasks.llm import LLMClient, LLMConfig, LLMError, Request

REAL_COMPLETION = litellm.completion


class Script:
    """Replays LiteLLM's own mock machinery: each call answers with the next scripted response or error."""

    def __init__(self, monkeypatch, *answers):
        self.answers = list(answers)
        self.models: list[str] = []
        monkeypatch.setattr(litellm, "completion", self)

    def __call__(self, **kwargs):
        self.models.append(kwargs["model"])
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        assert kwargs["num_retries"] == 0 and kwargs["max_retries"] == 0  # LiteLLM's own retries stay off
        return REAL_COMPLETION(**kwargs, mock_response=answer)


def rate_limited():
    return litellm.RateLimitError(message="slow down", llm_provider="openai", model="m")


def server_error():
    return litellm.InternalServerError(message="boom", llm_provider="openai", model="m")


def bad_request():
    return litellm.BadRequestError(message="bad", llm_provider="openai", model="m")


@pytest.fixture
def make_client(tmp_path):
    sleeps: list[float] = []
    batches: list[pa.Table] = []

    def make(**config):
        config = {"model": "openai/primary", **config}
        client = LLMClient(
            LLMConfig(**config), ResponseCache(tmp_path / "cache.sqlite"), batches.append, sleeps.append
        )
        client.sleeps, client.batches = sleeps, batches
        return client

    return make


ASK = Request([{"role": "user", "content": "Write a query."}], max_tokens=16)


def test_answers_are_cached_and_logged(monkeypatch, make_client):
    script = Script(monkeypatch, "what is lift")
    client = make_client()
    first = client.complete(ASK, purpose="test")
    again = client.complete(ASK, purpose="test")
    assert (first.text, first.cache_hit, again.text, again.cache_hit) == (
        "what is lift",
        False,
        "what is lift",
        True,
    )
    assert len(script.models) == 1 and first.prompt_tokens > 0
    other = client.complete(Request(ASK.messages, max_tokens=16, seed=1), purpose="test")  # another sample
    assert not other.cache_hit and len(script.models) == 2
    # a new client on the same cache file (a re-run) repeats nothing
    rerun = make_client()
    assert rerun.complete(ASK, purpose="test").cache_hit and len(script.models) == 2
    client.flush()
    rows = pa.concat_tables(client.batches).to_pylist()
    assert [r["cache_hit"] for r in rows] == [False, True, False]
    assert all(r["purpose"] == "test" and r["model"] == "openai/primary" for r in rows)


def test_retries_with_backoff_on_transient_errors_only(monkeypatch, make_client):
    script = Script(monkeypatch, rate_limited(), server_error(), litellm.Timeout("slow", "m", "openai"), "ok")
    client = make_client(backoff_base=1.0)
    result = client.complete(ASK, purpose="test")
    assert result.text == "ok" and result.retries == 3 and len(script.models) == 4
    assert len(client.sleeps) == 3
    assert all(0 <= delay <= cap for delay, cap in zip(client.sleeps, (1, 2, 4), strict=True))


def test_non_retryable_error_falls_back_at_once(monkeypatch, make_client):
    script = Script(monkeypatch, bad_request(), "from the fallback")
    client = make_client(fallbacks=("openai/backup",))
    result = client.complete(ASK, purpose="test")
    assert (result.text, result.model) == ("from the fallback", "openai/backup")
    assert script.models == ["openai/primary", "openai/backup"] and client.sleeps == []


def test_permanent_failure_names_every_model_and_caches_nothing(monkeypatch, make_client):
    Script(monkeypatch, bad_request())
    client = make_client(fallbacks=("openai/backup",))
    with pytest.raises(LLMError, match=r"openai/primary: BadRequestError.*openai/backup: BadRequestError"):
        client.complete(ASK, purpose="test")
    assert len(client.cache) == 0
    assert [r["error"] is not None for r in client.usage] == [True, True]


def test_rides_out_a_minute_of_rate_limits(monkeypatch, make_client):
    random.seed(3)
    clock = {"now": 0.0}
    answers = []

    def completion(**kwargs):
        answers.append(clock["now"])
        answer = rate_limited() if clock["now"] < 60 else "finally"
        return REAL_COMPLETION(**kwargs, mock_response=answer)

    monkeypatch.setattr(litellm, "completion", completion)
    client = make_client()
    client.sleep = lambda s: clock.__setitem__("now", clock["now"] + s)
    result = client.complete(ASK, purpose="test")
    assert result.text == "finally" and clock["now"] >= 60 and result.retries == len(answers) - 1


def test_gives_up_after_the_attempt_budget(monkeypatch, make_client):
    script = Script(monkeypatch, server_error())
    client = make_client(max_attempts=3)
    with pytest.raises(LLMError, match="InternalServerError"):
        client.complete(ASK, purpose="test")
    assert len(script.models) == 3 and len(client.sleeps) == 2


def test_many_requests_isolate_failures(monkeypatch, make_client):
    def completion(**kwargs):
        text = kwargs["messages"][0]["content"]
        return REAL_COMPLETION(
            **kwargs, mock_response=bad_request() if "bad" in text else f"answer to {text}"
        )

    monkeypatch.setattr(litellm, "completion", completion)
    client = make_client(concurrency=3)
    prompts = ["a", "bad one", "c", "d"]
    results = client.complete_many(
        [Request([{"role": "user", "content": p}]) for p in prompts], purpose="batch"
    )
    assert [r.text if not isinstance(r, LLMError) else "error" for r in results] == [
        "answer to a",
        "error",
        "answer to c",
        "answer to d",
    ]
    assert sum(t.num_rows for t in client.batches) == 4  # flushed once at the end
