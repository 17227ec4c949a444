"""A pool of Ray actors that embed for an ingest: one model load per actor, batches split between them.

:class:`PooledEmbedder` is an :class:`~tasks.ingest.embed.Embedder`, so ``reindex`` runs unchanged: it
chunks, looks up the content-hash cache and commits on the driver, and only ``encode`` (and the tokenizer's
offsets, for chunking) runs on the cluster. The pool lives as long as the ingest that started it (its
actors end with it). An actor whose process dies is restarted, on whichever node has room, and its call is
retried there; the driver sees the same vectors as if nothing had happened, and what it committed before
follows the local path's rules (``tasks/ingest/index.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from storage.vector_space import VectorSpace
from tasks.distributed.cluster import cluster_info, connect
from tasks.ingest.embed import Embedder

log = logging.getLogger(__name__)

RESTARTS = 3  # per actor: a process killed once or twice is replaced, a model that cannot load fails


class _EmbedActor:
    """One loaded model on one worker process (a Ray actor class, made remote in :func:`_actor_class`)."""

    def __init__(self, load: Callable[[], Embedder]) -> None:
        self.embedder = load()

    def shape(self) -> tuple[VectorSpace, int, int]:
        return self.embedder.space, self.embedder.dim, self.embedder.max_tokens

    def token_offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        return self.embedder.token_offsets(texts)

    def encode(self, texts: list[str], queries: bool) -> np.ndarray:
        return self.embedder.encode(texts, queries=queries)


def _actor_class(ray: Any, gpus: float) -> Any:
    """The actor class with its resources: one CPU, or a share of the GPUs, and restarts with retries."""
    return ray.remote(
        num_cpus=0 if gpus else 1, num_gpus=gpus, max_restarts=RESTARTS, max_task_retries=RESTARTS
    )(_EmbedActor)


class PooledEmbedder:
    """Farms ``encode`` out to ``size`` actors, each holding the model ``load`` builds.

    A call's texts are split into one contiguous slice per actor and the vectors put back in order, so the
    result is row for row what one local model returns.
    """

    def __init__(self, address: str, load: Callable[[], Embedder], size: int | None = None) -> None:
        """Start the actors: ``size`` of them (default: one per GPU, or one per node without GPUs).

        Raises:
            ConnectionError: no cluster at ``address``.
        """
        ray = connect(address)
        info = cluster_info(address)
        gpus, cpus = info.gpus, sum(n.cpus for n in info.alive)
        size = size or int(gpus) or len(info.alive)
        if not gpus and size > cpus:  # an actor wants a CPU of its own: the rest would wait forever
            raise ValueError(
                f"ZSR_RAY_ACTORS={size} embedding actors need {size} CPUs, and the cluster at {address!r} "
                f"has {cpus:g}; lower ZSR_RAY_ACTORS or add nodes"
            )
        share = min(1.0, gpus / size) if gpus else 0.0
        actor = _actor_class(ray, share).options(scheduling_strategy="SPREAD")
        self._ray = ray
        self.actors = [actor.remote(load) for _ in range(size)]
        self.space, self.dim, self.max_tokens = ray.get(self.actors[0].shape.remote())
        log.info("embedding on %d Ray actor(s) at %s (%s GPU each)", size, address, share or "no")

    def token_offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """The model's token spans, from the first actor (tokenizing is cheap next to encoding)."""
        return list(self._ray.get(self.actors[0].token_offsets.remote(texts)))

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        """L2-normalised vectors, one row per text, encoded by the actors side by side."""
        step = -(-len(texts) // len(self.actors)) or 1
        parts = [texts[i : i + step] for i in range(0, len(texts), step)]
        calls = [a.encode.remote(part, queries) for a, part in zip(self.actors, parts, strict=False)]
        if not calls:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(self._ray.get(calls)).astype(np.float32, copy=False)
