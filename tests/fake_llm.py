"""A deterministic in-process LiteLLM provider for logic tests: ``zsr-fake/<anything>``.

It answers through LiteLLM's real routing (the same path as any provider), from a rule the test sets:
``FakeLLM.rule(messages, params) -> str | Exception``. Every call is recorded.
"""

from __future__ import annotations

import litellm

from tasks.llm.providers import register_provider


class FakeLLM(litellm.CustomLLM):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[list, dict]] = []
        self.rule = lambda messages, params: "fake answer"

    def completion(
        self,
        model,
        messages,
        api_base,
        custom_prompt_dict,
        model_response,
        print_verbose,
        encoding,
        api_key,
        logging_obj,
        optional_params,
        *args,
        **kwargs,
    ):
        self.calls.append((messages, dict(optional_params)))
        answer = self.rule(messages, optional_params)
        if isinstance(answer, Exception):
            raise answer
        return litellm.completion(model="openai/fake", messages=messages, mock_response=answer)


def install() -> FakeLLM:
    fake = FakeLLM()
    register_provider("zsr-fake", fake)
    return fake
