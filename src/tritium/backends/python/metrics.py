"""The server side of pb_utils.MetricFamily: custom metrics in the Prometheus registry.

Triton's custom metrics are server-wide families whose metrics each carry their own label
set, which prometheus_client's Counter/Gauge (fixed label names) cannot express; one
collector per registry renders them instead. Families are shared by every model that
creates the same name (as in Triton) and dropped when the last model using them unloads.
"""

from __future__ import annotations

import itertools
import math
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric as PromMetric
from prometheus_client.registry import Collector

from tritium.server.errors import TritonError, invalid_arg

_KINDS = ("counter", "gauge", "histogram")


@dataclass
class MetricValue:
    """One labelled metric: a number, or histogram buckets."""

    labels: dict[str, str]
    value: float = 0.0
    buckets: list[float] = field(default_factory=list)  # histogram upper bounds
    bucket_counts: list[int] = field(default_factory=list)
    count: int = 0

    def apply(self, kind: str, op: str, amount: float) -> None:
        if op == "increment":
            self.value += amount
        elif op == "set":
            self.value = amount
        elif op == "observe" and kind == "histogram":
            self.value += amount
            self.count += 1
            for i, bound in enumerate(self.buckets):
                if amount <= bound:
                    self.bucket_counts[i] += 1


@dataclass
class MetricFamilyState:
    name: str
    description: str
    kind: str
    metrics: dict[tuple[tuple[str, str], ...], MetricValue] = field(default_factory=dict)
    owners: set[int] = field(default_factory=set)


class PythonModelMetrics(Collector):
    """Every pb_utils metric family of one registry."""

    def __init__(self) -> None:
        self._families: dict[str, MetricFamilyState] = {}
        self._metrics: dict[int, tuple[MetricFamilyState, MetricValue]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # collect() runs on the metrics server's thread

    def family(self, owner: int, name: str, description: str, kind: str) -> None:
        if kind not in _KINDS:
            raise invalid_arg(f"unknown metric kind '{kind}'")
        with self._lock:
            existing = self._families.get(name)
            if existing is None:
                existing = self._families[name] = MetricFamilyState(name, description, kind)
            elif existing.kind != kind or existing.description != description:
                raise invalid_arg(
                    f"metric family '{name}' already exists with a different kind or description"
                )
            existing.owners.add(owner)

    def metric(self, name: str, labels: dict[str, str], buckets: list[float] | None) -> int:
        with self._lock:
            family = self._families.get(name)
            if family is None:
                raise invalid_arg(f"metric family '{name}' does not exist")
            key = tuple(sorted((str(k), str(v)) for k, v in labels.items()))
            value = family.metrics.get(key)
            if value is None:
                bounds = sorted(buckets or [])
                value = MetricValue(dict(key), buckets=bounds, bucket_counts=[0] * len(bounds))
                family.metrics[key] = value
            metric_id = next(self._ids)
            self._metrics[metric_id] = (family, value)
            return metric_id

    def update(self, metric_id: int, op: str, amount: float) -> None:
        with self._lock:
            entry = self._metrics.get(metric_id)
            if entry is not None:
                entry[1].apply(entry[0].kind, op, amount)

    def value(self, metric_id: int) -> float:
        with self._lock:
            entry = self._metrics.get(metric_id)
            if entry is None:
                raise TritonError("metric does not exist")
            return entry[1].value

    def release(self, owner: int) -> None:
        """Forget the families no loaded model uses any more."""
        with self._lock:
            for name, family in list(self._families.items()):
                family.owners.discard(owner)
                if not family.owners:
                    del self._families[name]
            live = {id(f) for f in self._families.values()}
            for metric_id, (family, _) in list(self._metrics.items()):
                if id(family) not in live:
                    del self._metrics[metric_id]

    def collect(self) -> Iterator[PromMetric]:
        with self._lock:
            families = [
                (f.name, f.description, f.kind, list(f.metrics.values()))
                for f in self._families.values()
            ]
            snapshot = [
                (
                    n,
                    d,
                    k,
                    [
                        (m.labels, m.value, list(m.buckets), list(m.bucket_counts), m.count)
                        for m in ms
                    ],
                )
                for n, d, k, ms in families
            ]
        for name, description, kind, metrics in snapshot:
            # Triton's naming: a counter's samples are named exactly as its family (no
            # `_total`); the metrics frontend writes such families itself.
            family = PromMetric(name, description, kind)
            for labels, value, buckets, counts, count in metrics:
                if kind == "histogram":
                    for bound, bucket_count in zip(buckets, counts, strict=True):
                        family.add_sample(
                            f"{name}_bucket", {**labels, "le": _le(bound)}, bucket_count
                        )
                    family.add_sample(f"{name}_bucket", {**labels, "le": "+Inf"}, count)
                    family.add_sample(f"{name}_count", labels, count)
                    family.add_sample(f"{name}_sum", labels, value)
                else:
                    family.add_sample(name, labels, value)
            yield family


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


_collectors: weakref.WeakKeyDictionary[Any, PythonModelMetrics] = weakref.WeakKeyDictionary()
_collectors_lock = threading.Lock()


def collector_for(registry: Any) -> PythonModelMetrics:
    """The registry's collector of pb_utils metrics, registered on first use."""
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = PythonModelMetrics()
            if registry is not None:
                registry.register(collector)
                _collectors[registry] = collector
        return collector
