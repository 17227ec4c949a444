"""``ZSR_`` environment variables reach :class:`Settings` and the LLM client built from them."""

from __future__ import annotations

import pytest
from pydantic_settings import SettingsError

from storage.settings import Settings
from tasks.api import llm_client


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
    client = llm_client(settings)
    assert client.models == (
        "hosted_vllm/Qwen/Qwen2.5-7B-Instruct",
        "openai/gpt-4o-mini",
        "ollama/llama3.1:8b",
    )  # tried in this order
    config = client.config
    assert (config.api_base, config.timeout, config.concurrency) == ("http://gpu-box:8000/v1", 7.5, 3)


def test_no_llm_fallbacks_by_default(env):
    assert env(llm_model="openai/gpt-4o-mini").llm_fallbacks == []
    assert env(llm_fallbacks="[]").llm_fallbacks == []


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("openai/gpt-4o-mini", SettingsError),  # not JSON
        ("openai/a,openai/b", SettingsError),  # not JSON either
        ('{"openai/gpt-4o-mini": 1}', ValueError),  # JSON, not a list
        ("[1]", ValueError),  # a list of something other than model strings
    ],
)
def test_malformed_llm_fallbacks_are_an_error(env, value, error):
    # Today's messages name the field, never the variable or the fix (issue 11): for a value that is not
    # JSON, 'error parsing value for field "llm_fallbacks" from source "EnvSettingsSource"'.
    with pytest.raises(error, match="llm_fallbacks"):
        env(llm_fallbacks=value)
