"""The bundled LLM's batching, with a stand-in model: concurrent requests share a batch, each row keeps its
own prompt, budget and stop strings, and an error reaches every caller of its batch."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tasks.llm.local import LocalModel

VOCAB = 27  # "a".."z", then the end-of-turn token


class Tokenizer:
    eos_token_id = VOCAB - 1

    def apply_chat_template(self, messages, **_):
        return {"input_ids": [ord(c) - ord("a") for c in messages[-1]["content"]]}

    def convert_tokens_to_ids(self, token):
        return self.eos_token_id

    def decode(self, ids, **_):
        return "".join(chr(ord("a") + i) for i in ids)


class Model:
    """Each row's next letter follows its last one ("a" -> "b" ... "y" -> "z" -> end), padding or not."""

    config = SimpleNamespace(max_position_embeddings=64)

    def __init__(self):
        self.batches: list[int] = []
        self.fail = False

    def __call__(self, input_ids, attention_mask, position_ids, cache, **_):
        if cache is None:  # prefill: left padding masked out, each prompt's positions from 0
            self.batches.append(input_ids.shape[0])
            cache = SimpleNamespace(batch_select_indices=lambda index: None)
            for mask, positions in zip(attention_mask, position_ids, strict=True):
                assert positions[mask == 1].tolist() == list(range(int(mask.sum())))
        else:  # a decode step: the new token's position follows the row's own tokens
            assert (position_ids[:, -1] == attention_mask.sum(dim=1) - 1).all()
        if self.fail:
            raise RuntimeError("out of memory")
        logits = torch.full((input_ids.shape[0], 1, VOCAB), -1e9)
        logits[torch.arange(input_ids.shape[0]), 0, (input_ids[:, -1] + 1).clamp(max=VOCAB - 1)] = 0.0
        return SimpleNamespace(cache=cache, logits=logits)


@pytest.fixture
def model():
    local = LocalModel(Path("unused.gguf"))
    local._tokenizer, local._model = Tokenizer(), Model()
    return local


def together(local: LocalModel, calls: list[dict]) -> list:
    """Run ``calls`` from threads that all queue before the first batch starts."""
    results: list = [None] * len(calls)

    def one(i: int) -> None:
        try:
            results[i] = local.generate(**calls[i])
        except Exception as error:
            results[i] = error

    with local._run_lock:  # hold batches back until every thread has queued its row
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
        for thread in threads:
            thread.start()
        while len(local._queue) < len(calls):
            time.sleep(0.01)
    for thread in threads:
        thread.join()
    return results


def ask(prompt: str, **params) -> dict:
    return {"messages": [{"role": "user", "content": prompt}], "temperature": 0, **params}


def test_rows_of_one_batch_keep_their_own_prompt_budget_and_stop(model):
    results = together(
        model,
        [ask("abc", max_tokens=3), ask("w", max_tokens=10), ask("hello", max_tokens=8, stop=["st"])],
    )
    assert model._model.batches == [3]  # one batch, three rows of different lengths
    assert [(r.text, r.finish_reason, r.completion_tokens) for r in results] == [
        ("def", "length", 3),
        ("xyz", "stop", 3),  # the end-of-turn token after "z"
        ("pqr", "stop", 5),  # "pqrst" cut before the stop string, which ends on the fifth token
    ]
    assert [r.prompt_tokens for r in results] == [3, 1, 5]


def test_an_error_reaches_every_caller_of_its_batch(model):
    model._model.fail = True
    results = together(model, [ask("a", max_tokens=2), ask("b", max_tokens=2)])
    assert all(isinstance(r, RuntimeError) and "out of memory" in str(r) for r in results)
    model._model.fail = False
    assert model.generate(**ask("a", max_tokens=2)).text == "bc"  # the model serves on


def test_a_prompt_over_the_context_fails_alone(model):
    with pytest.raises(ValueError, match="exceed the context 64"):
        model.generate(**ask("a" * 60, max_tokens=10))
    assert model._queue == []
