"""The LLM client's retry, backoff, fallback, cache and usage logic, against LiteLLM's mock responses."""

from __future__ import annotations

import logging
import random
import socket
import statistics
import threading
from concurrent.futures import ThreadPoolExecutor

import litellm
import pyarrow as pa
import pytest

from storage.llm_cache import ResponseCache, cache_key
from tasks.llm.client import Fallback, LLMClient, LLMConfig, LLMError, Request
from tests import fake_llm
from tests.llm_server import INVALID_JSON, STALL, ScriptedServer

REAL_COMPLETION = litellm.completion


class Script:
    """Replays LiteLLM's own mock machinery: each call answers with the next scripted response or error."""

    def __init__(self, monkeypatch, *answers):
        self.answers = list(answers)
        self.models: list[str] = []
        self.kwargs: list[dict] = []
        monkeypatch.setattr(litellm, "completion", self)

    def __call__(self, **kwargs):
        self.models.append(kwargs["model"])
        self.kwargs.append(kwargs)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        assert kwargs["num_retries"] == 0 and kwargs["max_retries"] == 0  # LiteLLM's own retries stay off
        return REAL_COMPLETION(**kwargs, mock_response=answer)


def rate_limited():
    return litellm.RateLimitError(message="slow down", llm_provider="openai", model="m")


def server_error():
    return litellm.InternalServerError(message="boom", llm_provider="openai", model="m")


def bad_request():
    return litellm.BadRequestError(message="bad", llm_provider="openai", model="m")


def connection_refused():
    return litellm.APIConnectionError(message="connection refused", llm_provider="openai", model="m")


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
    timeout = litellm.Timeout("slow", "m", "openai")
    script = Script(monkeypatch, rate_limited(), server_error(), timeout, connection_refused(), "ok")
    client = make_client(backoff_base=1.0)
    result = client.complete(ASK, purpose="test")
    assert result.text == "ok" and result.retries == 4 and len(script.models) == 5
    assert len(client.sleeps) == 4
    assert all(0 <= delay <= cap for delay, cap in zip(client.sleeps, (1, 2, 4, 8), strict=True))


@pytest.mark.parametrize(
    "error", [litellm.BadRequestError, litellm.AuthenticationError, litellm.NotFoundError]
)
def test_client_errors_are_not_retried(monkeypatch, make_client, error):
    script = Script(monkeypatch, error(message="no", llm_provider="openai", model="m"))
    client = make_client()
    with pytest.raises(LLMError, match=error.__name__):
        client.complete(ASK, purpose="test")
    assert len(script.models) == 1 and client.sleeps == []


def test_backoff_doubles_up_to_its_ceiling_with_full_jitter(monkeypatch, make_client):
    """Retry n waits uniform(0, min(backoff_max, backoff_base * 2**(n-1))), spread over all of it."""

    def completion(**kwargs):
        raise rate_limited()

    monkeypatch.setattr(litellm, "completion", completion)
    random.seed(11)
    client = make_client(max_attempts=8, backoff_base=0.5, backoff_max=10.0)
    rounds = 200
    for _ in range(rounds):
        with pytest.raises(LLMError, match="RateLimitError"):
            client.complete(ASK, purpose="test")
    caps = (0.5, 1, 2, 4, 8, 10, 10)  # doubling from backoff_base until backoff_max holds it
    assert len(client.sleeps) == rounds * len(caps)
    for retry, cap in enumerate(caps):
        delays = client.sleeps[retry :: len(caps)]
        assert all(0 <= delay <= cap for delay in delays), (retry, max(delays))
        assert len(set(delays)) == rounds, retry  # every draw its own: jittered
        assert min(delays) < 0.25 * cap and max(delays) > 0.75 * cap, (retry, min(delays), max(delays))
        assert 0.4 * cap < statistics.mean(delays) < 0.6 * cap, retry  # uniform on [0, cap] averages cap / 2


def test_a_refused_connection_is_retried(monkeypatch, make_client):
    with socket.socket() as probe:  # a port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    client = make_client(api_base=f"http://127.0.0.1:{port}/v1", max_attempts=3)
    with pytest.raises(LLMError, match="Connection error"):  # LiteLLM reports it as a 500
        client.complete(ASK, purpose="test")
    assert len(client.sleeps) == 2


def test_timeout_and_api_base_reach_litellm(monkeypatch, make_client):
    script = Script(monkeypatch, "ok")
    client = make_client(api_base="http://gpu-box:8000/v1", timeout=7.5)
    client.complete(ASK, purpose="test")
    assert (script.kwargs[0]["api_base"], script.kwargs[0]["timeout"]) == ("http://gpu-box:8000/v1", 7.5)


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


def test_api_base_and_the_providers_key_reach_the_server(monkeypatch, make_client):
    """zsr has no API-key setting: LiteLLM reads the provider's own variable (``OPENAI_API_KEY``)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-zsr-test")
    with ScriptedServer("hello from the server") as server:
        client = make_client(model="openai/gpt-test", api_base=server.url)
        answer = client.complete(ASK, purpose="test")
    assert answer.text == "hello from the server"
    [(path, authorization, body)] = server.seen
    assert (path, authorization, body["model"]) == ("/v1/chat/completions", "Bearer sk-zsr-test", "gpt-test")


def test_a_server_slower_than_the_timeout_is_a_timeout(monkeypatch, make_client):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-zsr-test")
    with ScriptedServer(STALL) as server:
        client = make_client(model="openai/gpt-test", api_base=server.url, timeout=0.5, max_attempts=2)
        with pytest.raises(LLMError, match="Timeout"):
            client.complete(ASK, purpose="test")
    assert len(server.seen) == 2 and len(client.sleeps) == 1  # a timeout is retried


class Gate:
    """A stand-in ``litellm.completion`` that holds every call until the test lets one through.

    It counts the calls in flight; :meth:`let_through` frees them one at a time, each time once as many are
    in flight as the client may send and 20 ms have passed for any call beyond those to arrive: a correct
    bound is reached every round, and a broken one shows (no grace period can prove that none would come).
    """

    def __init__(self, monkeypatch) -> None:
        self.cond = threading.Condition()
        self.in_flight = self.most = self.finished = self.passes = 0
        monkeypatch.setattr(litellm, "completion", self)

    def __call__(self, **kwargs):
        with self.cond:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.passes > 0)
            self.passes -= 1
            self.in_flight -= 1
            self.finished += 1
            self.cond.notify_all()
        return REAL_COMPLETION(**kwargs, mock_response="ok")

    def let_through(self, total: int, limit: int) -> None:
        try:
            for finished in range(total):
                with self.cond:
                    need = min(limit, total - finished)
                    full = self.cond.wait_for(lambda need=need: self.in_flight >= need, 30)
                    assert full, f"only {self.in_flight} in flight after {finished} answers, expected {limit}"
                    if self.cond.wait_for(lambda: self.in_flight > limit, 0.02):
                        return  # over the bound: ``most`` tells
                    self.passes += 1
                    self.cond.notify_all()
                    assert self.cond.wait_for(lambda done=finished: self.finished > done, 30)
        finally:
            with self.cond:  # an assertion above must not leave callers waiting forever
                self.passes += total
                self.cond.notify_all()


def questions(n: int) -> list[Request]:
    return [Request([{"role": "user", "content": f"question {i}"}]) for i in range(n)]


def test_no_more_requests_in_flight_than_the_concurrency(monkeypatch, make_client):
    gate = Gate(monkeypatch)
    client = make_client(concurrency=3)
    with ThreadPoolExecutor(1) as caller:
        answers = caller.submit(client.complete_many, questions(20), "test")
        gate.let_through(20, limit=3)
    assert [getattr(a, "text", a) for a in answers.result()] == ["ok"] * 20
    assert gate.most == 3


def test_the_concurrency_bound_holds_across_callers_of_one_client(monkeypatch, make_client):
    gate = Gate(monkeypatch)
    client = make_client(concurrency=3)
    asks = questions(20)
    with ThreadPoolExecutor(2) as callers:
        answers = [callers.submit(client.complete_many, part, "test") for part in (asks[:10], asks[10:])]
        gate.let_through(20, limit=3)
    assert sum(len(a.result()) for a in answers) == 20
    assert gate.most == 3


def test_rejected_answers_are_not_cached_and_cached_junk_is_asked_again(monkeypatch, make_client):
    script = Script(monkeypatch, "maybe", "1")
    client = make_client()
    digit = Request(ASK.messages, max_tokens=1, accept=lambda c: c.text.strip().isdigit())
    junk = client.complete(digit, purpose="judge")
    assert (junk.text, len(client.cache)) == ("maybe", 0)  # handed to the caller, never replayed
    valid = client.complete(digit, purpose="judge")
    assert (valid.text, valid.cache_hit, len(script.models)) == ("1", False, 2)
    assert client.complete(digit, purpose="judge").cache_hit and len(script.models) == 2
    assert [r["error"] for r in client.usage] == ["rejected by the caller, not cached: 'maybe'", None, None]

    key = cache_key(
        "openai/primary", ASK.messages, ASK.params()
    )  # junk cached before callers could refuse it
    client.cache.put(
        key, {"text": "   ", "model": "openai/primary", "prompt_tokens": 1, "completion_tokens": 1}
    )
    script.answers = ["a real answer"]
    again = client.complete(Request(ASK.messages, max_tokens=16, accept=lambda c: bool(c.text.strip())), "t")
    assert (again.text, again.cache_hit, len(script.models)) == ("a real answer", False, 3)
    assert client.cache.get(key)["text"] == "a real answer"


def test_a_fallback_goes_to_its_own_api_base_with_its_own_key(monkeypatch, make_client):
    """vLLM first, a hosted model second: the fallback must not be sent to the failing server."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-primary")
    monkeypatch.setenv("BACKUP_KEY", "sk-backup")
    with ScriptedServer(500) as failing, ScriptedServer("from the backup") as backup:
        client = make_client(
            api_base=failing.url,
            fallbacks=(Fallback("openai/backup", api_base=backup.url, api_key_env="BACKUP_KEY"),),
            retry_seconds=5,
        )
        answer = client.complete(ASK, purpose="test")
    assert (answer.text, answer.model) == ("from the backup", "openai/backup")
    assert len(failing.seen) > 1 and {auth for _, auth, _ in failing.seen} == {"Bearer sk-primary"}
    assert [(body["model"], auth) for _, auth, body in backup.seen] == [("backup", "Bearer sk-backup")]


def test_a_fallback_without_an_api_base_gets_none(monkeypatch, make_client):
    script = Script(monkeypatch, bad_request(), "ok")
    client = make_client(api_base="http://gpu-box:8000/v1", fallbacks=("openai/backup",))
    client.complete(ASK, purpose="test")
    assert [(k["model"], k["api_base"]) for k in script.kwargs] == [
        ("openai/primary", "http://gpu-box:8000/v1"),
        ("openai/backup", None),  # the provider's own endpoint, not the primary's server
    ]
    assert all("api_key" not in k for k in script.kwargs)  # LiteLLM reads the provider's variable


@pytest.mark.parametrize(
    ("model", "failure", "status"),
    [
        ("openai/primary", 500, "HTTP 500"),
        ("openai/primary", INVALID_JSON, "HTTP 500"),  # LiteLLM's openai provider reports a bad body as a 500
        ("hosted_vllm/primary", INVALID_JSON, "HTTP 200"),  # its hosted_vllm provider as an APIError with 200
    ],
    ids=["http-500", "invalid-json", "invalid-json-vllm"],
)
def test_retry_time_is_bounded_and_the_error_is_one_line(monkeypatch, make_client, model, failure, status):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    random.seed(5)
    with ScriptedServer(failure) as server:
        client = make_client(model=model, api_base=server.url, retry_seconds=30, max_attempts=1000)
        with pytest.raises(LLMError) as raised:
            client.complete(ASK, purpose="judge")
    assert sum(client.sleeps) <= 30 and len(client.sleeps) >= 4  # retried, within the budget
    assert len(server.seen) == len(client.sleeps) + 1
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"judge: every model failed: {model}")
    assert f"at {server.url}" in message and status in message
    assert "fix: check the server" in message and "ZSR_LLM_FALLBACKS" in message


def test_the_retry_budget_counts_time_spent_in_calls(monkeypatch, make_client):
    def completion(**kwargs):
        clock["now"] += 4.0  # each call takes 4 s before it fails
        raise server_error()

    clock = {"now": 0.0}
    monkeypatch.setattr(litellm, "completion", completion)
    client = make_client(retry_seconds=10, backoff_base=0.01, max_attempts=100)
    client.clock = lambda: clock["now"]
    with pytest.raises(LLMError, match="after 3 attempts"):
        client.complete(ASK, purpose="test")  # the third call ends past 10 s: no fourth


def test_a_model_that_exhausted_its_retries_is_tried_once_until_it_answers(monkeypatch, make_client):
    script = Script(monkeypatch, *[server_error()] * 3, server_error(), "back", "again")
    client = make_client(max_attempts=3)
    with pytest.raises(LLMError):
        client.complete(ASK, purpose="test")
    assert (len(script.models), len(client.sleeps)) == (3, 2)
    with pytest.raises(LLMError, match="1 attempt"):  # still failing: no second round of backoff
        client.complete(Request(ASK.messages, seed=1), purpose="test")
    assert (len(script.models), len(client.sleeps)) == (4, 2)
    assert client.complete(Request(ASK.messages, seed=2), purpose="test").text == "back"
    script.answers = [server_error(), "recovered"]  # answering again restores its retries
    assert client.complete(Request(ASK.messages, seed=3), purpose="test").text == "recovered"
    assert len(client.sleeps) == 3


def test_litellm_prints_no_banner_when_calls_fail(monkeypatch, make_client, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with ScriptedServer(429, 500, "ok") as server:
        client = make_client(api_base=server.url)
        assert client.complete(ASK, purpose="test").text == "ok"
    printed = capsys.readouterr()
    assert printed.out == "" and "Give Feedback" not in printed.err  # off, not merely moved


def test_what_a_provider_prints_during_a_call_goes_to_stderr(tmp_path, capsys):
    provider = fake_llm.install()
    provider.rule = lambda messages, params: print("provider chatter") or "ok"
    client = LLMClient(LLMConfig(model="zsr-fake/m"), ResponseCache(tmp_path / "c.sqlite"))
    answers = client.complete_many(questions(6), purpose="test")
    assert [a.text for a in answers] == ["ok"] * 6
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.count("provider chatter") == 6
    print("after the calls")  # stdout is stdout again once no call is running
    assert capsys.readouterr().out == "after the calls\n"


def test_litellm_log_records_never_reach_stdout(make_client, capsys):
    """LiteLLM's own handler writes records below WARNING to stdout; the client hands them to ours."""
    make_client()
    logger = logging.getLogger("LiteLLM")
    level = logger.level
    logger.setLevel(logging.DEBUG)  # as with zsr -v, or LITELLM_LOG=DEBUG
    try:
        logger.info("an info record")
        logger.warning("a warning record")
    finally:
        logger.setLevel(level)
    assert capsys.readouterr().out == ""
