"""``ZSR_`` environment variables reach :class:`Settings` and the LLM client built from them."""

from __future__ import annotations

import json

import pytest

from tasks.settings import Settings
from tasks.workspace import Workspace


@pytest.fixture
def env(monkeypatch, tmp_path):
    """Set ``ZSR_`` variables for one test, with ``ZSR_HOME`` in a temporary folder."""
    monkeypatch.setenv("ZSR_HOME", str(tmp_path))

    def set_env(**values: str) -> Settings:
        for name, value in values.items():
            monkeypatch.setenv(f"ZSR_{name.upper()}", value)
        return Settings(_env_file=None)  # a developer's .env must not leak in

    return set_env


def test_llm_settings_build_the_client(env):
    settings = env(
        llm_model="hosted_vllm/Qwen/Qwen2.5-7B-Instruct",
        llm_fallbacks='["openai/gpt-4o-mini", "ollama/llama3.1:8b"]',  # a JSON list, as the README shows
        llm_api_base="http://gpu-box:8000/v1",
        llm_timeout="7.5",
        llm_concurrency="3",
    )
    assert settings.llm_fallbacks == ["openai/gpt-4o-mini", "ollama/llama3.1:8b"]
    client = Workspace(settings).llm
    assert client.models == (
        "hosted_vllm/Qwen/Qwen2.5-7B-Instruct",
        "openai/gpt-4o-mini",
        "ollama/llama3.1:8b",
    )  # tried in this order
    config = client.config
    assert (config.api_base, config.timeout, config.concurrency) == ("http://gpu-box:8000/v1", 7.5, 3)
    # a fallback named by its model string alone goes to its provider's endpoint, not to the primary's server
    assert [r.api_base for r in client.routes] == ["http://gpu-box:8000/v1", None, None]


def test_no_llm_fallbacks_by_default(env):
    assert env(llm_model="openai/gpt-4o-mini").llm_fallbacks == []
    assert env(llm_fallbacks="[]").llm_fallbacks == []


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("openai/gpt-4o-mini", "not JSON"),
        ("openai/a,openai/b", "not JSON"),
        ('{"openai/gpt-4o-mini": 1}', "not a list"),  # JSON, not a list
        ("[1]", "item 1"),  # a list of something other than model strings or objects
        ('[{"api_base": "http://x/v1"}]', "item 1 has no model"),
        ('[{"model": "openai/m", "base": "http://x/v1"}]', "unknown key 'base'"),
        ('[{"model": "openai/m", "api_key": "sk-123"}]', "never the key itself"),
    ],
)
def test_malformed_llm_fallbacks_are_an_error_when_the_llm_client_is_built(env, value, why):
    # A malformed value must not block commands that use no LLM: Settings() reads it as it is, and the
    # error (naming the variable and the expected format) comes when the LLM client is built.
    settings = env(llm_fallbacks=value)
    with pytest.raises(ValueError, match="ZSR_LLM_FALLBACKS") as raised:
        _ = Workspace(settings).llm
    message = str(raised.value)
    assert why in message and "a JSON list of model strings or of objects" in message
    assert '{"model": ..., "api_base": ..., "api_key_env": ...}' in message
    assert "sk-123" not in message  # a key put in the list by mistake is not echoed


def test_a_command_without_an_llm_runs_with_malformed_llm_fallbacks(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app
    from tests.conftest import zsr_home_at

    monkeypatch.setenv("ZSR_LLM_FALLBACKS", "openai/a,openai/b")
    with zsr_home_at(tmp_path):
        result = CliRunner().invoke(app, ["corpora", "--json"])
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])


def test_fallback_objects_name_their_own_api_base_and_key_variable(env, monkeypatch):
    monkeypatch.setenv("HOSTED_KEY", "sk-hosted")
    settings = env(
        llm_model="hosted_vllm/Qwen/Qwen2.5-7B-Instruct",
        llm_api_base="http://gpu-box:8000/v1",
        llm_fallbacks='[{"model": "openai/gpt-4o-mini", "api_key_env": "HOSTED_KEY"},'
        ' {"model": "hosted_vllm/small", "api_base": "http://other-box:8000/v1"}, "ollama/llama3.1:8b"]',
        llm_retry_seconds="30",
    )
    client = Workspace(settings).llm
    assert [(r.model, r.api_base, r.api_key_env) for r in client.routes] == [
        ("hosted_vllm/Qwen/Qwen2.5-7B-Instruct", "http://gpu-box:8000/v1", None),
        ("openai/gpt-4o-mini", None, "HOSTED_KEY"),
        ("hosted_vllm/small", "http://other-box:8000/v1", None),
        ("ollama/llama3.1:8b", None, None),
    ]
    assert client.config.retry_seconds == 30
    monkeypatch.delenv("HOSTED_KEY")
    with pytest.raises(
        ValueError, match="ZSR_LLM_FALLBACKS: openai/gpt-4o-mini names api_key_env HOSTED_KEY"
    ):
        _ = Workspace(settings).llm  # an unset key variable fails before any call, not at the first fallback


def test_fallback_warn_share_setting(env):
    assert env().fallback_warn_share == 0.2
    assert env(fallback_warn_share="0.5").fallback_warn_share == 0.5
    with pytest.raises(ValueError, match="fallback_warn_share"):
        env(fallback_warn_share="1.5")


def test_regression_alert_settings(env):
    settings = env()
    assert (settings.regression_p, settings.regression_min_drop) == (0.05, 0.01)
    assert settings.regression_webhook is None
    hook = "http://127.0.0.1:9/hook"
    settings = env(regression_p="0.01", regression_min_drop="0.02", regression_webhook=hook)
    assert (settings.regression_p, settings.regression_min_drop) == (0.01, 0.02)
    assert settings.regression_webhook == hook
    with pytest.raises(ValueError, match="regression_p"):
        env(regression_p="0")
