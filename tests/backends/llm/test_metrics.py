"""The vllm:* collector: a model's stats appear while it is registered and leave with it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from tritium.backends.llm.metrics import VllmMetrics
from tritium.engine.messages import SchedulerStats


class FakeBackend:
    """Registers itself the way LLMBackend does: with a bound method as the source."""

    def __init__(self, running: int) -> None:
        self.running = running

    def _stats(self) -> SchedulerStats:
        return SchedulerStats(num_blocks=10, num_running_reqs=self.running)


def test_a_removed_model_leaves_the_gauges() -> None:
    registry = CollectorRegistry()
    metrics = VllmMetrics.for_registry(registry)
    backend = FakeBackend(running=3)
    metrics.add_model("m", backend._stats)
    assert 'vllm:num_requests_running{model_name="m"} 3.0' in generate_latest(registry).decode()
    metrics.remove_model("m", backend._stats)  # a new bound-method object, same source
    assert 'model_name="m"' not in generate_latest(registry).decode()


def test_removing_an_old_source_keeps_the_new_one() -> None:
    registry = CollectorRegistry()
    metrics = VllmMetrics.for_registry(registry)
    old, new = FakeBackend(running=1), FakeBackend(running=2)
    metrics.add_model("m", old._stats)
    metrics.add_model("m", new._stats)  # a reload registered the new version first
    metrics.remove_model("m", old._stats)
    assert 'vllm:num_requests_running{model_name="m"} 2.0' in generate_latest(registry).decode()
