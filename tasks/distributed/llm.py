"""LLM work on Ray: one limit on calls in flight for the whole cluster, and request batches spread out.

:class:`ClusterSlots` is a named Ray actor holding ``ZSR_LLM_CONCURRENCY`` slots that every LLM client of
the cluster (driver and workers) takes a slot from for each call, as the local client takes one from its
own semaphore. A slot is a lease: one whose holder died is taken back after ``lease`` seconds, so a killed
worker cannot shrink the limit for good.

:class:`SpreadLLMClient` answers ``complete_many`` (synthesis, judging) with one Ray task per node. Each
task runs an ordinary :class:`~tasks.llm.client.LLMClient` over the same response cache and hands its usage
rows back, and the driver writes them to the warehouse as the local client does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from storage.llm_cache import ResponseCache
from tasks.distributed.cluster import NAMESPACE, cluster_info, connect, in_worker
from tasks.llm.client import Completion, LLMClient, LLMConfig, LLMError, Request, UsageSink

POLL_SECONDS = 0.05


class _Slots:
    """The slots, as an async Ray actor: ``acquire`` waits for a free slot, ``release`` frees one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: dict[str, float] = {}  # token -> expiry (monotonic seconds)

    async def acquire(self, lease: float) -> str:
        while True:
            now = time.monotonic()
            self.held = {t: expiry for t, expiry in self.held.items() if expiry > now}
            if len(self.held) < self.limit:
                token = uuid.uuid4().hex
                self.held[token] = now + lease
                return token
            await asyncio.sleep(POLL_SECONDS)

    async def release(self, token: str) -> None:
        self.held.pop(token, None)

    async def in_use(self) -> int:
        return len(self.held)


class ClusterSlots:
    """A context manager that holds one of the cluster's ``limit`` LLM slots while a call runs."""

    def __init__(self, address: str, limit: int, lease: float) -> None:
        """Find the cluster's slots actor for ``limit``, or start it (detached: it outlives any driver)."""
        ray = connect(address)
        self._ray = ray
        self.lease = lease
        self.actor = (
            ray.remote(_Slots)
            .options(
                name=f"zsr-llm-slots-{limit}",
                namespace=NAMESPACE,
                get_if_exists=True,
                lifetime="detached",
                num_cpus=0,
            )
            .remote(limit)
        )
        # Any token frees one slot: threads that overlap may release each other's, the count stays right.
        self._tokens: list[str] = []

    def __enter__(self) -> None:
        token = self._ray.get(self.actor.acquire.remote(self.lease))
        self._tokens.append(token)

    def __exit__(self, *exc: object) -> None:
        self._ray.get(self.actor.release.remote(self._tokens.pop()))


def _answer(
    address: str, config: LLMConfig, cache: Path, lease: float, requests: Sequence[Request], purpose: str
) -> tuple[list[Completion | LLMError], list[Any]]:
    """A share of the requests, answered on a worker: its answers and its usage rows (Arrow tables)."""
    rows: list[Any] = []
    client = LLMClient(
        config, ResponseCache(cache), rows.append, slots=ClusterSlots(address, config.concurrency, lease)
    )
    return client.complete_many(requests, purpose), rows


class SpreadLLMClient(LLMClient):
    """An :class:`LLMClient` whose ``complete_many`` runs on every node of the cluster, one share each.

    Inside a Ray worker it answers in place (work is spread once, by the driver).
    """

    def __init__(self, address: str, config: LLMConfig, cache: Path, usage_sink: UsageSink | None) -> None:
        """A client over the response cache at ``cache``, taking the cluster's slots for each call."""
        self.address = address
        self.cache_path = cache
        self.lease = 2 * config.timeout  # a call ends within its timeout; the rest is margin
        slots = ClusterSlots(address, config.concurrency, self.lease)
        super().__init__(config, ResponseCache(cache), usage_sink, slots=slots)

    def complete_many(self, requests: Sequence[Request], purpose: str) -> list[Completion | LLMError]:
        """Answers in the order asked, each share answered by a task on its own node."""
        if in_worker() or len(requests) < 2:
            return super().complete_many(requests, purpose)
        ray = connect(self.address)
        shares = max(1, min(len(cluster_info(self.address).alive), len(requests)))
        step = -(-len(requests) // shares)
        answer = ray.remote(num_cpus=0, max_retries=3)(_answer).options(scheduling_strategy="SPREAD")
        calls = [
            answer.remote(
                self.address, self.config, self.cache_path, self.lease, requests[i : i + step], purpose
            )
            for i in range(0, len(requests), step)
        ]
        results: list[Completion | LLMError] = []
        for answers, rows in ray.get(calls):
            results += answers
            for table in rows:
                if self.usage_sink:
                    self.usage_sink(table)
        self.flush()
        return results
