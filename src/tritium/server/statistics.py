"""Per-model statistics, as Triton keeps them (the /stats JSON and the nv_inference_* metrics
are two views of these numbers)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Duration:
    """A Triton statistic: how many times and how many nanoseconds in all."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchStats:
    batch_size: int
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStatistics:
    """Counters for one model version. Owned and updated by the core only."""

    name: str
    version: int
    last_inference_ms: int = 0
    inference_count: int = 0  # batch elements of the requests that succeeded
    execution_count: int = 0  # batches executed, whether their requests succeeded or not
    success: Duration = field(default_factory=Duration)  # duration = request end to end
    fail: Duration = field(default_factory=Duration)
    # Counts by Triton's reasons: REJECTED, CANCELED, BACKEND, OTHER.
    failure_reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    cache_hit: Duration = field(default_factory=Duration)
    cache_miss: Duration = field(default_factory=Duration)
    batch_stats: dict[int, BatchStats] = field(default_factory=dict)
    pending_count: int = 0  # requests queued or executing right now

    def to_json(self) -> dict:
        """Triton's /v2/models/{m}/stats entry."""
        return {
            "name": self.name,
            "version": str(self.version),
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.to_json(),
                "fail": self.fail.to_json(),
                "queue": self.queue.to_json(),
                "compute_input": self.compute_input.to_json(),
                "compute_infer": self.compute_infer.to_json(),
                "compute_output": self.compute_output.to_json(),
                "cache_hit": self.cache_hit.to_json(),
                "cache_miss": self.cache_miss.to_json(),
            },
            "response_stats": {},
            "batch_stats": [
                {
                    "batch_size": b.batch_size,
                    "compute_input": b.compute_input.to_json(),
                    "compute_infer": b.compute_infer.to_json(),
                    "compute_output": b.compute_output.to_json(),
                }
                for b in sorted(self.batch_stats.values(), key=lambda b: b.batch_size)
            ],
            "memory_usage": [],
        }
