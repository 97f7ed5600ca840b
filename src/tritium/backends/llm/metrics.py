"""vLLM's `vllm:*` metrics, labelled `model_name` as vLLM labels them.

Gauges and the engine's cumulative counters are read from each model's latest
SchedulerStats by a collector at scrape time, so they are fresh whenever Prometheus looks.
Per-request histograms and the success counter are prometheus_client objects updated by
the server-side engine as outputs arrive. One `VllmMetrics` per CollectorRegistry (the
InferenceServer's), shared by every LLM model.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from tritium.engine.messages import SchedulerStats

# vLLM V1's buckets (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]  # fmt: skip
ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
               10.0, 20.0, 40.0, 80.0]  # fmt: skip
E2E_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
               120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]  # fmt: skip

StatsSource = Callable[[], SchedulerStats | None]


class EngineStatsCollector:
    """Exposes each model's latest engine stats as vllm:* gauges and counters."""

    def __init__(self) -> None:
        self.sources: dict[str, StatsSource] = {}

    def describe(self) -> list[Metric]:
        return list(self._families({}))

    def collect(self) -> Iterator[Metric]:
        stats = {}
        for name, source in list(self.sources.items()):
            s = source()
            if s is not None:
                stats[name] = s
        yield from self._families(stats)

    @staticmethod
    def _families(stats: dict[str, SchedulerStats]) -> Iterator[Metric]:
        def gauge(name: str, doc: str, value: Callable[[SchedulerStats], float]) -> Metric:
            g = GaugeMetricFamily(name, doc, labels=["model_name"])
            for model, s in sorted(stats.items()):
                g.add_metric([model], value(s))
            return g

        def counter(name: str, doc: str, value: Callable[[SchedulerStats], float]) -> Metric:
            c = CounterMetricFamily(name, doc, labels=["model_name"])
            for model, s in sorted(stats.items()):
                c.add_metric([model], value(s))
            return c

        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
                    lambda s: s.num_running_reqs)  # fmt: skip
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                    lambda s: s.num_waiting_reqs)  # fmt: skip
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
                    lambda s: s.kv_cache_usage)  # fmt: skip
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.",
                      lambda s: s.prompt_tokens)  # fmt: skip
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.",
                      lambda s: s.generation_tokens)  # fmt: skip
        yield counter("vllm:prefix_cache_queries", "Prefix cache queries, in tokens.",
                      lambda s: s.prefix_cache_queries)  # fmt: skip
        yield counter("vllm:prefix_cache_hits", "Prefix cache hits, in tokens.",
                      lambda s: s.prefix_cache_hits)  # fmt: skip
        yield counter("vllm:num_preemptions", "Cumulative number of preemptions from the engine.",
                      lambda s: s.num_preemptions)  # fmt: skip


class VllmMetrics:
    """The vllm:* families of one registry."""

    _by_registry: weakref.WeakKeyDictionary[Any, VllmMetrics] = weakref.WeakKeyDictionary()

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.stats = EngineStatsCollector()
        kw: dict[str, Any] = {"registry": registry}
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                              ["model_name"], buckets=TTFT_BUCKETS, **kw)  # fmt: skip
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                             ["model_name"], buckets=ITL_BUCKETS, **kw)  # fmt: skip
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                             ["model_name"], buckets=E2E_BUCKETS, **kw)  # fmt: skip
        self.success = Counter("vllm:request_success", "Count of successfully processed requests.",
                               ["model_name", "finished_reason"], **kw)  # fmt: skip
        if registry is not None:
            registry.register(self.stats)

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None) -> VllmMetrics:
        """The registry's VllmMetrics, created on first use (None: unregistered objects)."""
        if registry is None:
            return cls(None)
        found = cls._by_registry.get(registry)
        if found is None:
            found = cls._by_registry[registry] = cls(registry)
        return found

    def add_model(self, model_name: str, source: StatsSource) -> None:
        self.stats.sources[model_name] = source

    def remove_model(self, model_name: str, source: StatsSource) -> None:
        # ==, not `is`: a bound method (backend._stats) is a new object at every access.
        if self.stats.sources.get(model_name) == source:
            del self.stats.sources[model_name]
