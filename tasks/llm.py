"""The one LLM client: LiteLLM for every provider, with zsr's own retries, fallbacks, cache and usage log.

Exactly one retry layer lives here (LiteLLM's own retries are off: its retry settings are silently dropped
for some providers, litellm #32895): exponential backoff with full jitter, only on rate limits, timeouts,
connection errors and 5xx answers. When a model still fails, the next fallback model is tried. Every
response is cached on disk by (model, messages, parameters) before it is returned, so a re-run or a
resumed run repeats no call, and every call (cache hits included) leaves one usage row in the warehouse.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from storage.ids import content_hash
from storage.llm_cache import ResponseCache, cache_key

log = logging.getLogger(__name__)

Messages = list[dict[str, Any]]
UsageSink = Callable[[pa.Table], None]
LOCAL_PREFIX = "zsr-local/"
_PER_CALL = ("cache_hit", "retries", "latency_ms")  # facts about one call, not about the answer


class LLMError(RuntimeError):
    """Every model failed for a request; the message names each model and its cause."""


@dataclass(frozen=True)
class LLMConfig:
    """Which models to call and how patiently."""

    model: str = "zsr-local/smollm2"
    fallbacks: tuple[str, ...] = ()
    api_base: str | None = None
    timeout: float = 120.0
    max_attempts: int = 10  # per model; with the backoff below, rides out about two minutes of 429s
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


def register_provider(name: str, handler: Any) -> None:
    """Route model strings ``name/...`` to an in-process LiteLLM ``CustomLLM`` (idempotent)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    others = [p for p in litellm.custom_provider_map if p["provider"] != name]
    litellm.custom_provider_map = [*others, {"provider": name, "custom_handler": handler}]
    litellm.utils.custom_llm_setup()  # rebuilds LiteLLM's provider list from the map


def is_retryable(error: BaseException) -> bool:
    """Rate limits, timeouts, connection errors and 5xx answers are worth another try; nothing else is."""
    import litellm

    if isinstance(error, litellm.RateLimitError | litellm.Timeout | litellm.APIConnectionError):
        return True
    status = getattr(error, "status_code", None)
    return isinstance(status, int) and status >= 500


class LLMClient:
    """Thread-safe; at most ``concurrency`` calls in flight, however many threads call; failures isolated."""

    def __init__(
        self,
        config: LLMConfig,
        cache: ResponseCache,
        usage_sink: UsageSink | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map download at import
        import litellm

        litellm.telemetry = False
        self.config = config
        self.cache = cache
        self.usage_sink = usage_sink
        self.sleep = sleep
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(config.concurrency)  # per client, across every caller
        self.models = (config.model, *config.fallbacks)
        if any(m.startswith(LOCAL_PREFIX) for m in self.models):
            from tasks.local_llm import register

            register()

    def complete(self, request: Request, purpose: str) -> Completion:
        """Answer one request from the cache, or from the first model that answers."""
        key = cache_key(self.models[0], request.messages, request.params())
        started = time.perf_counter()
        cached = self.cache.get(key)
        if cached is not None:
            result = Completion(**{**cached, "cache_hit": True, "retries": 0, "latency_ms": 0.0})
            self._record(purpose, request, result, None)
            return result
        causes = []
        for model in self.models:
            try:
                result = self._call_with_retries(model, request)
            except Exception as error:  # every failure moves on to the next model
                causes.append(f"{model}: {type(error).__name__}: {error}")
                self._record(purpose, request, None, causes[-1], model=model)
                continue
            result.latency_ms = (time.perf_counter() - started) * 1000
            self.cache.put(key, {k: v for k, v in asdict(result).items() if k not in _PER_CALL})
            self._record(purpose, request, result, None)
            return result
        raise LLMError(f"{purpose}: every model failed: " + "; ".join(causes))

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

    def _call_with_retries(self, model: str, request: Request) -> Completion:
        import litellm

        for attempt in range(1, self.config.max_attempts + 1):
            try:
                with self._slots:
                    response = litellm.completion(
                        model=model,
                        messages=request.messages,
                        api_base=self.config.api_base,
                        timeout=self.config.timeout,
                        num_retries=0,
                        max_retries=0,
                        **request.params(),
                    )
                return _completion(response, model, attempt - 1)
            except Exception as error:
                if attempt == self.config.max_attempts or not is_retryable(error):
                    raise
                # Full jitter (AWS architecture blog): spreads out clients that failed together.
                cap = min(self.config.backoff_max, self.config.backoff_base * 2 ** (attempt - 1))
                delay = random.uniform(0, cap)
                log.warning("%s: %s; retry %d in %.1fs", model, type(error).__name__, attempt, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")

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
