"""A loaded model version: its backend, its scheduler and the accounting of every request
from enqueue to final response (statistics, in-flight count for draining)."""

from __future__ import annotations

import asyncio
import time

from tritium.server.backend import Backend, ModelConfig, RequestTimings
from tritium.server.errors import ErrorCode, TritonError, internal, unavailable
from tritium.server.scheduler import BatchingPolicy, Pending, Scheduler
from tritium.server.statistics import BatchStats, ModelStatistics
from tritium.server.types import InferenceRequest, InferenceResponse
from tritium.server.validation import batch_key


class Model:
    """One model version being served. `stats` may outlive it (kept across reloads)."""

    def __init__(
        self, config: ModelConfig, version: int, backend: Backend, stats: ModelStatistics
    ) -> None:
        self.config = config
        self.name = config.name
        self.version = version
        self.backend = backend
        self.stats = stats
        self.decoupled = config.model_transaction_policy.decoupled
        self.scheduler: Scheduler | None = None
        self._pending: set[Pending] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def load(self) -> None:
        await self.backend.load()
        policy = BatchingPolicy.from_config(self.config)
        self.scheduler = Scheduler(policy, self.backend.instance_count, self._execute, self._reject)
        self.scheduler.start()

    async def unload(self, drain_timeout_s: float | None = None) -> None:
        """Let queued and executing requests finish (up to the timeout), then unload."""
        if drain_timeout_s is None or drain_timeout_s > 0:
            try:
                await asyncio.wait_for(self._idle.wait(), drain_timeout_s)
            except TimeoutError:
                pass
        for p in list(self._pending):
            p.request.cancel()
        if self.scheduler is not None:
            await self.scheduler.stop(unavailable(f"model '{self.name}' is unloading"))
        await self.backend.unload()

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    # -- request accounting ----------------------------------------------------------
    def submit(self, request: InferenceRequest, batch_size: int) -> Pending:
        """Queue a validated request; raises UNAVAILABLE when the queue is full."""
        assert self.scheduler is not None
        p = Pending(request, batch_size, batch_key(self.config, request))
        try:
            self.scheduler.enqueue(p)
        except TritonError:
            self._count_failure(p, "REJECTED")
            raise
        request.on_final = lambda response: self._on_final(p, response)
        self._pending.add(p)
        self._idle.clear()
        self.stats.pending_count += 1
        return p

    def cancel(self, p: Pending) -> None:
        """The consumer went away: drop the request if queued, else tell the backend."""
        p.request.cancel()
        if self.scheduler is not None and self.scheduler.cancel(p):
            self._reject(p, TritonError("Request was cancelled", ErrorCode.CANCELLED), "CANCELED")

    def _reject(self, p: Pending, error: TritonError, reason: str) -> None:
        p.failure_reason = reason
        p.request.send(InferenceResponse(error=error, final=True))

    def _on_final(self, p: Pending, response: InferenceResponse) -> None:
        p.final = response
        if response.error is not None and not p.failure_reason:
            cancelled = response.error.code == ErrorCode.CANCELLED or p.request.is_cancelled()
            p.failure_reason = "CANCELED" if cancelled else "BACKEND"
        self._maybe_complete(p)

    def _maybe_complete(self, p: Pending) -> None:
        """Count a request once both its final response is out and its batch returned."""
        if p.final is None or (p.dispatched_ns and p.timings is None) or p not in self._pending:
            return
        self._pending.discard(p)
        self.stats.pending_count -= 1
        if not self._pending:
            self._idle.set()
        if p.failure_reason == "BACKEND" and p.timings is not None and p.timings.success:
            p.failure_reason = ""  # the model answered with an error: Triton counts a success
        if p.failure_reason:
            self._count_failure(p, p.failure_reason)
            return
        s, t = self.stats, p.timings or RequestTimings()
        s.inference_count += p.batch_size  # Triton counts inferences of successes only
        s.success.add(time.monotonic_ns() - p.request.arrival_ns)
        s.queue.add(p.dispatched_ns - p.enqueue_ns + t.queue_ns)
        s.compute_input.add(t.compute_input_ns)
        s.compute_infer.add(t.compute_infer_ns)
        s.compute_output.add(t.compute_output_ns)

    def _count_failure(self, p: Pending, reason: str) -> None:
        self.stats.fail.add(time.monotonic_ns() - p.request.arrival_ns)
        self.stats.failure_reasons[reason] += 1

    async def _execute(self, instance: int, batch: list[Pending]) -> None:
        now = time.monotonic_ns()
        for p in batch:
            p.dispatched_ns = now
        requests = [p.request for p in batch]
        try:
            timings = await self.backend.execute(instance, requests)
        except Exception as exc:
            error = (
                exc if isinstance(exc, TritonError) else internal(f"{type(exc).__name__}: {exc}")
            )
            timings = []
            for p in batch:
                if p.final is None:
                    p.failure_reason = "BACKEND"
                    p.request.send(InferenceResponse(error=error, final=True))
        if len(timings) != len(batch):
            timings = (list(timings) + [RequestTimings()] * len(batch))[: len(batch)]
        self._count_batch(batch, timings)
        for p, t in zip(batch, timings, strict=True):
            p.timings = t
            if p.final is None and not self.decoupled:
                p.failure_reason = "BACKEND"
                p.request.send(
                    InferenceResponse(
                        error=internal(f"model '{self.name}' sent no response for the request"),
                        final=True,
                    )
                )
            self._maybe_complete(p)

    def _count_batch(self, batch: list[Pending], timings: list[RequestTimings]) -> None:
        if timings and not any(t.executed for t in timings):
            return  # refused before execution: no execution to count
        s = self.stats
        size = sum(p.batch_size for p in batch)
        s.execution_count += 1
        s.last_inference_ms = time.time_ns() // 1_000_000
        b = s.batch_stats.setdefault(size, BatchStats(size))
        b.compute_input.add(max(t.compute_input_ns for t in timings))
        b.compute_infer.add(max(t.compute_infer_ns for t in timings))
        b.compute_output.add(max(t.compute_output_ns for t in timings))
