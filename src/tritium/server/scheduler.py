"""Per model version scheduling: priority queues with Triton's queue policies, batch
formation (default: one request per batch; dynamic_batching: up to max_batch_size within
max_queue_delay_microseconds, sent early at a preferred size), and dispatch of each batch
to a free model instance."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from tritonclient.grpc import model_config_pb2

from tritium.server.backend import ModelConfig, RequestTimings
from tritium.server.errors import ErrorCode, TritonError, unavailable
from tritium.server.types import InferenceRequest, InferenceResponse

_DELAY = model_config_pb2.ModelQueuePolicy.DELAY


@dataclass(eq=False)
class Pending:
    """A request in the scheduler's care, from enqueue until its final response."""

    request: InferenceRequest
    batch_size: int
    key: tuple  # requests batch together only when their keys are equal
    level: int = 0
    enqueue_ns: int = 0
    timer: asyncio.TimerHandle | None = None
    delayed: bool = False
    dispatched_ns: int = 0
    timings: RequestTimings | None = None
    final: InferenceResponse | None = None
    failure_reason: str = ""  # REJECTED, CANCELED, BACKEND, OTHER when the request failed


@dataclass
class QueuePolicy:
    max_queue_size: int = 0
    timeout_us: int = 0
    delay_on_timeout: bool = False
    allow_timeout_override: bool = False

    @classmethod
    def from_proto(cls, p: model_config_pb2.ModelQueuePolicy) -> QueuePolicy:
        return cls(
            p.max_queue_size,
            p.default_timeout_microseconds,
            p.timeout_action == _DELAY,
            p.allow_timeout_override,
        )

    def timeout_for(self, request: InferenceRequest) -> int:
        if self.allow_timeout_override and request.timeout_us:
            return request.timeout_us
        return self.timeout_us


@dataclass
class BatchingPolicy:
    """The scheduling half of a ModelConfig, validated once."""

    dynamic: bool = False
    max_batch_size: int = 1
    preferred: list[int] = field(default_factory=list)
    delay_ns: int = 0
    default_level: int = 0
    policies: dict[int, QueuePolicy] = field(default_factory=lambda: {0: QueuePolicy()})

    @classmethod
    def from_config(cls, config: ModelConfig) -> BatchingPolicy:
        if not config.HasField("dynamic_batching"):
            return cls()
        db = config.dynamic_batching
        default = QueuePolicy.from_proto(db.default_queue_policy)
        levels = list(range(1, db.priority_levels + 1)) or [0]
        policies = {lvl: default for lvl in levels}
        for lvl, p in db.priority_queue_policy.items():
            if lvl in policies:
                policies[lvl] = QueuePolicy.from_proto(p)
        return cls(
            dynamic=config.max_batch_size > 0,
            max_batch_size=max(config.max_batch_size, 1),
            preferred=sorted(db.preferred_batch_size),
            delay_ns=db.max_queue_delay_microseconds * 1000,
            default_level=db.default_priority_level if db.priority_levels else 0,
            policies=policies,
        )

    def level_of(self, priority: int) -> int:
        """Triton: priority 0 or beyond the last level means the default level."""
        if priority <= 0 or priority not in self.policies:
            return self.default_level
        return priority


ExecuteFn = Callable[[int, list[Pending]], Awaitable[None]]
RejectFn = Callable[[Pending, TritonError, str], None]


class Scheduler:
    """Owns the queues and the free-instance pool of one model version."""

    def __init__(
        self, policy: BatchingPolicy, instance_count: int, execute: ExecuteFn, reject: RejectFn
    ) -> None:
        self.policy = policy
        self._execute = execute
        self._reject = reject
        self._queues: dict[int, deque[Pending]] = {lvl: deque() for lvl in sorted(policy.policies)}
        self._delayed: dict[int, deque[Pending]] = {lvl: deque() for lvl in sorted(policy.policies)}
        self._free: asyncio.Queue[int] = asyncio.Queue()
        for i in range(max(instance_count, 1)):
            self._free.put_nowait(i)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    # -- queue ----------------------------------------------------------------------
    def queued_count(self) -> int:
        return sum(len(q) for q in self._queues.values()) + sum(
            len(q) for q in self._delayed.values()
        )

    def enqueue(self, p: Pending) -> None:
        """Queue a request, or raise UNAVAILABLE when its priority level's queue is full."""
        p.level = self.policy.level_of(p.request.priority)
        qp = self.policy.policies[p.level]
        if (
            qp.max_queue_size
            and len(self._queues[p.level]) + len(self._delayed[p.level]) >= qp.max_queue_size
        ):
            raise unavailable("Exceeds maximum queue size")
        p.enqueue_ns = time.monotonic_ns()
        timeout_us = qp.timeout_for(p.request)
        if timeout_us:
            p.timer = asyncio.get_running_loop().call_later(timeout_us / 1e6, self._expire, p)
        self._queues[p.level].append(p)
        self._wakeup.set()

    def _remove(self, p: Pending) -> bool:
        for queues in (self._queues, self._delayed):
            try:
                queues[p.level].remove(p)
            except ValueError:
                continue
            if p.timer is not None:
                p.timer.cancel()
            return True
        return False

    def _expire(self, p: Pending) -> None:
        if p.delayed or p not in self._queues[p.level]:
            return
        if self.policy.policies[p.level].delay_on_timeout:
            # DELAY: behind every request that has not timed out at this level.
            self._queues[p.level].remove(p)
            p.delayed = True
            self._delayed[p.level].append(p)
        else:
            self._queues[p.level].remove(p)
            self._reject(p, unavailable("Request timeout expired"), "REJECTED")

    def cancel(self, p: Pending) -> bool:
        """Drop a request that is still queued; False when it already left the queue."""
        if self._remove(p):
            self._wakeup.set()
            return True
        return False

    def _ordered(self) -> Iterator[Pending]:
        for lvl in self._queues:
            yield from self._queues[lvl]
            yield from self._delayed[lvl]

    # -- dispatch -------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self, reason: TritonError) -> None:
        """Stop dispatching; fail what is still queued; wait for executing batches."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for p in list(self._ordered()):
            self._remove(p)
            self._reject(p, reason, "OTHER")
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            instance = await self._free.get()
            try:
                batch = await self._next_batch()
            except BaseException:
                self._free.put_nowait(instance)
                raise
            for p in batch:
                self._remove(p)
            task = asyncio.create_task(self._dispatch(instance, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _dispatch(self, instance: int, batch: list[Pending]) -> None:
        try:
            await self._execute(instance, batch)
        finally:
            self._free.put_nowait(instance)

    def _drop_cancelled(self) -> None:
        for p in [p for p in self._ordered() if p.request.is_cancelled()]:
            self._remove(p)
            self._reject(p, TritonError("Request was cancelled", ErrorCode.CANCELLED), "CANCELED")

    async def _next_batch(self) -> list[Pending]:
        """Wait for the next batch, per Triton's dynamic batcher: send at once when the batch
        is full, reaches the largest preferred size or meets an incompatible request;
        otherwise wait until the oldest request has waited max_queue_delay."""
        while True:
            self._drop_cancelled()
            ordered = list(self._ordered())
            if not ordered:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self.policy.dynamic:
                return [ordered[0]]
            batch, best_preferred, send_now = self._gather(ordered)
            if send_now:
                return batch
            if best_preferred and sum(p.batch_size for p in batch) >= self.policy.preferred[-1]:
                return batch[:best_preferred]
            oldest = min(p.enqueue_ns for p in batch)
            wait_ns = oldest + self.policy.delay_ns - time.monotonic_ns()
            if wait_ns <= 0:
                return batch
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), wait_ns / 1e9)
            except TimeoutError:
                pass

    def _gather(self, ordered: list[Pending]) -> tuple[list[Pending], int, bool]:
        """The longest prefix that fits: (batch, prefix length at the best preferred size,
        whether the batch cannot grow)."""
        batch: list[Pending] = []
        total, best, limit = 0, 0, self.policy.max_batch_size
        for p in ordered:
            if batch and (p.key != batch[0].key or total + p.batch_size > limit):
                return batch, best, True
            batch.append(p)
            total += p.batch_size
            if total in self.policy.preferred:
                best = len(batch)
            if total >= limit:
                return batch, best, True
        return batch, best, False
