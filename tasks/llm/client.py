"""The one LLM client: LiteLLM for every provider, with zsr's own retries, fallbacks, cache and usage log.

Exactly one retry layer lives here (LiteLLM's own retries are off: its retry settings are silently dropped
for some providers, litellm #32895): exponential backoff with full jitter, only on rate limits, timeouts,
connection errors, 5xx answers and bodies that are not JSON, within a time budget per model and request.
When a model still fails, the next fallback model is tried, at its own endpoint with its own key. Every
answer its caller accepts is cached on disk by (model, messages, parameters) before it is returned, so a
re-run or a resumed run repeats no call, and every call (cache hits included) leaves one usage row in the
warehouse. LiteLLM prints nothing: its help banners are off and its log records go to stderr, so ``--json``
output stays one document.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from storage.ids import content_hash
from storage.llm_cache import ResponseCache, cache_key
from tasks.llm.failover import Fallback, describe_failure, is_retryable, parse_fallbacks, server_failure

log = logging.getLogger(__name__)

Messages = list[dict[str, Any]]
UsageSink = Callable[[pa.Table], None]
LOCAL_PREFIX = "zsr-local/"
_PER_CALL = ("cache_hit", "retries", "latency_ms")  # facts about one call, not about the answer


class LLMError(RuntimeError):
    """Every model failed for a request; the one-line message names each model, endpoint, cause and fix."""


@dataclass(frozen=True)
class LLMConfig:
    """Which models to call and how patiently."""

    model: str = "zsr-local/smollm2"
    fallbacks: tuple[str | Fallback, ...] = ()  # a bare model string gets its provider's default endpoint
    api_base: str | None = None  # the primary model's endpoint only
    timeout: float = 120.0
    max_attempts: int = 10  # per model and request
    retry_seconds: float = 120.0  # per model and request: calls and waits; rides out a minute of 429s
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    concurrency: int = 4


@dataclass(frozen=True)
class Request:
    """One chat completion request; ``seed`` also tells apart samples of the same prompt."""

    messages: Messages
    temperature: float = 0.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_logprobs: int | None = None  # ask for the first token's top log-probabilities
    context: dict[str, Any] = field(default_factory=dict)  # ids that go into the usage row, not the key
    # What the caller can use (a judge: a grade it can read; HyDE: a non-empty passage). An answer it
    # rejects is handed back but never cached, and a rejected cached answer is asked again.
    accept: Callable[[Completion], bool] | None = field(default=None, compare=False)

    def params(self) -> dict[str, Any]:
        """The parameters that change the answer (and so the cache key)."""
        out: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.stop:
            out["stop"] = list(self.stop)
        if self.seed is not None:
            out["seed"] = self.seed
        if self.top_logprobs:
            out["logprobs"], out["top_logprobs"] = True, self.top_logprobs
        return out


@dataclass
class Completion:
    """An answer: its text, who gave it, what it cost."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    first_token_logprobs: dict[str, float] | None = None
    cache_hit: bool = False
    retries: int = 0
    latency_ms: float = 0.0


_quiet_lock = threading.Lock()


def quiet_litellm() -> None:
    """Make LiteLLM print nothing to stdout (idempotent).

    On a failed call it prints "Give Feedback / Get Help" banners unless ``suppress_debug_info`` is set, and
    its own log handler writes records below WARNING to stdout. Its loggers are handed to ours instead
    (propagation to the root logger, which writes to stderr), so ``--json`` output stays one document.
    """
    import litellm
    from litellm import _logging

    with _quiet_lock:
        litellm.suppress_debug_info = True
        litellm.set_verbose = False
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
            logging.getLogger(name).removeHandler(_logging.handler)


class _StdoutToStderr:
    """While any LLM call runs, ``sys.stdout`` is stderr: what LiteLLM or a provider still prints goes there.

    Counted, so overlapping calls from many threads restore stdout once, when the last one ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: Any = None

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._saved, sys.stdout = sys.stdout, sys.stderr
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                sys.stdout, self._saved = self._saved, None


_stdout_to_stderr = _StdoutToStderr()


class LLMClient:
    """Thread-safe; at most ``concurrency`` calls in flight, however many threads call; failures isolated."""

    def __init__(
        self,
        config: LLMConfig,
        cache: ResponseCache,
        usage_sink: UsageSink | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        slots: AbstractContextManager[Any] | None = None,
    ) -> None:
        """``slots`` bounds the calls in flight (default: ``config.concurrency`` for this client alone)."""
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map download at import
        import litellm

        litellm.telemetry = False
        quiet_litellm()
        self.config = config
        self.cache = cache
        self.usage_sink = usage_sink
        self.sleep = sleep
        self.clock = clock
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._slots: AbstractContextManager[Any] = slots or threading.BoundedSemaphore(
            config.concurrency
        )  # across every caller
        # The primary at its api_base; each fallback at its own (a bare model string: its provider's default).
        self.routes = (Fallback(config.model, config.api_base), *parse_fallbacks(list(config.fallbacks)))
        self.models = tuple(route.model for route in self.routes)
        self._failing: set[str] = set()  # models whose last request ran out of retries on server failures
        if any(m.startswith(LOCAL_PREFIX) for m in self.models):
            # Imported only for a local model: it loads torch, which no hosted model needs.
            from tasks.llm.local import register

            register()

    def complete(self, request: Request, purpose: str) -> Completion:
        """Answer one request from the cache, or from the first model that answers.

        An answer ``request.accept`` rejects is returned but not cached; one found in the cache is dropped
        and asked again.
        """
        key = cache_key(self.models[0], request.messages, request.params())
        started = time.perf_counter()
        cached = self.cache.get(key)
        if cached is not None:
            result = Completion(**{**cached, "cache_hit": True, "retries": 0, "latency_ms": 0.0})
            if request.accept is None or request.accept(result):
                self._record(purpose, request, result, None)
                return result
            self.cache.delete(key)
        causes = []
        for route in self.routes:
            try:
                result = self._call_with_retries(route, request)
            except _Failed as failed:  # every failure moves on to the next model
                causes.append(failed.cause)
                self._record(purpose, request, None, failed.cause, model=route.model)
                continue
            result.latency_ms = (time.perf_counter() - started) * 1000
            if request.accept is None or request.accept(result):
                self.cache.put(key, {k: v for k, v in asdict(result).items() if k not in _PER_CALL})
                self._record(purpose, request, result, None)
            else:
                self._record(
                    purpose, request, result, f"rejected by the caller, not cached: {result.text[:80]!r}"
                )
            return result
        raise LLMError(f"{purpose}: every model failed: " + "; then ".join(causes))

    def complete_many(self, requests: Sequence[Request], purpose: str) -> list[Completion | LLMError]:
        """Answer many requests concurrently; a request that fails yields its error, the rest go on."""

        def one(request: Request) -> Completion | LLMError:
            try:
                return self.complete(request, purpose)
            except LLMError as error:
                return error

        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            results = list(pool.map(one, requests))
        self.flush()
        return results

    def _call_with_retries(self, route: Fallback, request: Request) -> Completion:
        """One model's answer, retrying transient failures while ``retry_seconds`` (calls and waits) lasts.

        A model that ran out of retries on server failures gets one attempt per request (no backoff) until
        it answers again, so a dead server costs the first requests the budget, not every request.
        """
        import litellm

        # Checked when the client was built; unset since, it is sent empty and answered 401, which names it.
        key = {"api_key": os.environ.get(route.api_key_env, "")} if route.api_key_env else {}
        spent, attempt = 0.0, 0
        while True:
            attempt += 1
            started = self.clock()
            try:
                with self._slots, _stdout_to_stderr:
                    response = litellm.completion(
                        model=route.model,
                        messages=request.messages,
                        api_base=route.api_base,
                        timeout=self.config.timeout,
                        num_retries=0,
                        max_retries=0,
                        **key,
                        **request.params(),
                    )
                self._failing.discard(route.model)
                return _completion(response, route.model, attempt - 1)
            except Exception as error:
                spent += self.clock() - started
                # Full jitter (AWS architecture blog): spreads out clients that failed together.
                cap = min(self.config.backoff_max, self.config.backoff_base * 2 ** (attempt - 1))
                delay = random.uniform(0, cap)
                if (
                    not is_retryable(error)
                    or attempt >= self.config.max_attempts
                    or spent + delay > self.config.retry_seconds
                    or (route.model in self._failing and server_failure(error))
                ):
                    if server_failure(error) and route.model not in self._failing:
                        self._failing.add(route.model)
                        log.warning("%s keeps failing; later requests try it once each", route.model)
                    raise _Failed(describe_failure(error, route, attempt, spent)) from error
                log.warning("%s: %s; retry %d in %.1fs", route.model, type(error).__name__, attempt, delay)
                self.sleep(delay)
                spent += delay

    def _record(
        self,
        purpose: str,
        request: Request,
        result: Completion | None,
        error: str | None,
        model: str | None = None,
    ) -> None:
        row = {
            "call_id": content_hash(str(time.time_ns()), str(threading.get_ident()), purpose),
            "created_at": datetime.now(UTC),
            "purpose": purpose,
            "model": self.models[0],
            "answered_by": result.model if result else model,
            "prompt_tokens": result.prompt_tokens if result else 0,
            "completion_tokens": result.completion_tokens if result else 0,
            "latency_ms": result.latency_ms if result else None,
            "retries": result.retries if result else None,
            "cache_hit": result.cache_hit if result else False,
            "error": error,
            "context": json.dumps(request.context, sort_keys=True) if request.context else None,
        }
        with self._lock:
            self._rows.append(row)
            full = len(self._rows) >= 500
        if full:
            self.flush()

    @property
    def usage(self) -> list[dict[str, Any]]:
        """Usage rows not yet flushed to the sink."""
        with self._lock:
            return list(self._rows)

    def flush(self) -> None:
        """Hand the buffered usage rows to the sink (the warehouse) as one batch."""
        with self._lock:
            rows, self._rows = self._rows, []
        if rows and self.usage_sink:
            self.usage_sink(pa.Table.from_pylist(rows))


class _Failed(Exception):
    """A model gave up on a request; ``cause`` is the one-line account of why."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def _get(obj: Any, name: str) -> Any:
    """Providers hand back either pydantic objects or plain dicts for the same OpenAI shapes."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _completion(response: Any, model: str, retries: int) -> Completion:
    choice = response.choices[0]
    content = _get(_get(choice, "logprobs") or {}, "content")
    first = None
    if content:
        first = {_get(t, "token"): float(_get(t, "logprob")) for t in _get(content[0], "top_logprobs") or []}
    usage = _get(response, "usage")
    return Completion(
        text=_get(choice, "message").content or "",
        model=model,
        prompt_tokens=int(_get(usage, "prompt_tokens") or 0),
        completion_tokens=int(_get(usage, "completion_tokens") or 0),
        first_token_logprobs=first,
        retries=retries,
    )
