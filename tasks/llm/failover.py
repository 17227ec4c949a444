"""Failover between LLM models: where each fallback is called, which failures earn a retry, what to say.

A fallback names its own endpoint and the environment variable holding its key (``ZSR_LLM_FALLBACKS``), so
"vLLM first, a hosted model when it fails" never sends the hosted model's requests to the failing server.
A model that still fails is described in one line: the model, its endpoint, the HTTP status, the attempts
and the fix.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

FALLBACKS_FORMAT = (
    'a JSON list of model strings or of objects {"model": ..., "api_base": ..., "api_key_env": ...}, e.g. '
    '\'["openai/gpt-4o-mini"]\' or \'[{"model": "openai/gpt-4o-mini", "api_key_env": "OPENAI_API_KEY"}]\''
)


@dataclass(frozen=True)
class Fallback:
    """A model tried when the ones before it fail, at its own endpoint (``None``: its provider's default).

    ``api_key_env`` names the environment variable holding its key (``None``: the provider's own variable,
    such as ``OPENAI_API_KEY``), so no key is ever written into settings.
    """

    model: str
    api_base: str | None = None
    api_key_env: str | None = None


def parse_fallbacks(value: Any) -> tuple[Fallback, ...]:
    """``ZSR_LLM_FALLBACKS`` as fallbacks; a malformed value is an error naming the variable and the format.

    Settings keep the value as read (JSON-decoded where it is a JSON list, else the raw text), so that a bad
    value fails only the commands that build an LLM client. A key variable that is not set fails here too,
    before any call, rather than at the first fallback.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError:
            raise ValueError(_bad_fallbacks("not JSON")) from None
    if not isinstance(value, list | tuple):
        raise ValueError(_bad_fallbacks(f"not a list but {type(value).__name__}"))
    out = tuple(_fallback(item, number) for number, item in enumerate(value, start=1))
    for fallback in out:
        if fallback.api_key_env and not os.environ.get(fallback.api_key_env):
            raise ValueError(
                f"ZSR_LLM_FALLBACKS: {fallback.model} names api_key_env {fallback.api_key_env}, which is not "
                f"set: export {fallback.api_key_env}=<its key>, or drop api_key_env to use the provider's own"
            )
    return out


def _fallback(item: Any, number: int) -> Fallback:
    if isinstance(item, Fallback):
        return item
    if isinstance(item, str) and item.strip():
        return Fallback(item.strip())
    if not isinstance(item, dict):
        raise ValueError(_bad_fallbacks(f"item {number} is neither a model string nor an object"))
    if "api_key" in item:  # not echoed: it may be a real key
        why = f"item {number} holds an api_key: name its variable (api_key_env), never the key itself"
        raise ValueError(_bad_fallbacks(why))
    unknown = sorted(set(item) - {"model", "api_base", "api_key_env"})
    if unknown:
        raise ValueError(_bad_fallbacks(f"item {number} has unknown key {unknown[0]!r}"))
    if not isinstance(item.get("model"), str) or not item["model"].strip():
        raise ValueError(_bad_fallbacks(f"item {number} has no model"))
    if any(item.get(k) is not None and not isinstance(item[k], str) for k in ("api_base", "api_key_env")):
        raise ValueError(_bad_fallbacks(f"item {number}: api_base and api_key_env must be strings"))
    return Fallback(item["model"].strip(), item.get("api_base") or None, item.get("api_key_env") or None)


def _bad_fallbacks(why: str) -> str:
    return f"ZSR_LLM_FALLBACKS is {why}; it must be {FALLBACKS_FORMAT}"


def is_retryable(error: BaseException) -> bool:
    """Rate limits, timeouts, connection errors, 5xx answers and unreadable bodies are worth another try."""
    import litellm

    if isinstance(error, litellm.RateLimitError | litellm.Timeout | litellm.APIConnectionError):
        return True
    status = getattr(error, "status_code", None)
    if isinstance(error, litellm.APIError) and isinstance(status, int) and status < 300:
        return True  # a 200 whose body is not JSON (LiteLLM's hosted_vllm provider reports it so)
    return isinstance(status, int) and status >= 500


def server_failure(error: BaseException) -> bool:
    """A retryable failure of the server itself (not a rate limit): worth a fallback, not endless patience."""
    import litellm

    return is_retryable(error) and not isinstance(error, litellm.RateLimitError)


_SPACE = re.compile(r"\s+")
# LiteLLM messages open with the class name, often twice ("litellm.APIError: APIError: ...")
_LITELLM_PREFIX = re.compile(r"^litellm\.\w+: (\w+: )?")


def _fix(error: BaseException, route: Fallback) -> str:
    """What the user can do about ``error``."""
    import litellm

    where = f"the server at {route.api_base}" if route.api_base else f"the provider of {route.model}"
    if isinstance(error, litellm.RateLimitError):
        return "rate limited: lower ZSR_LLM_CONCURRENCY, raise ZSR_LLM_RETRY_SECONDS, or add a fallback"
    if isinstance(error, litellm.Timeout):
        return f"{where} is too slow: raise ZSR_LLM_TIMEOUT, or check it"
    if isinstance(error, litellm.AuthenticationError | litellm.PermissionDeniedError):
        key = route.api_key_env or "the provider's key variable (e.g. OPENAI_API_KEY)"
        return f"check the API key in {key}"
    if isinstance(error, litellm.NotFoundError):
        return f"check the model name {route.model!r} and its api_base"
    if is_retryable(error):
        return f"check {where} (up? its logs?), or name a fallback with its own api_base in ZSR_LLM_FALLBACKS"
    return "the request was refused: check that the model supports it (context length, parameters)"


def describe_failure(error: BaseException, route: Fallback, attempts: int, spent: float) -> str:
    """One line: the model, its endpoint, the HTTP status, the attempts, LiteLLM's message and the fix."""
    status = getattr(error, "status_code", None)
    where = route.api_base or "its provider's default endpoint"
    tries = f"{attempts} attempt{'s' if attempts > 1 else ''} in {spent:.1f}s"
    message = _LITELLM_PREFIX.sub("", _SPACE.sub(" ", str(error)).strip())
    message = message if len(message) <= 300 else message[:299] + "…"
    http = f"HTTP {status}, " if isinstance(status, int) else ""
    head = f"{route.model}: {type(error).__name__} ({http}at {where}, after {tries})"
    return f"{head}: {message}; fix: {_fix(error, route)}"
