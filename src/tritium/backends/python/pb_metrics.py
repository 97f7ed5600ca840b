"""pb_utils.Logger and pb_utils.MetricFamily: both live in the server process.

Log lines are forwarded to the server's logging; metric families and metrics are created
in the server's Prometheus registry (so they appear on /metrics) and updated by message.
"""

from __future__ import annotations

import sys
import weakref

from tritium.backends.python import runtime
from tritium.backends.python.pb_errors import TritonModelException


class LogLevel:
    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3


_LEVEL_NAMES = {
    LogLevel.INFO: "INFO",
    LogLevel.WARNING: "WARNING",
    LogLevel.ERROR: "ERROR",
    LogLevel.VERBOSE: "VERBOSE",
}


class Logger:
    """`pb_utils.Logger.log_info(msg)` (static use) or `pb_utils.Logger().log_info(msg)`."""

    @staticmethod
    def log(message: str, level: int = LogLevel.INFO) -> None:
        name = _LEVEL_NAMES.get(level, "INFO")
        if runtime.installed():
            runtime.current().log(name, str(message))
        else:
            print(f"[{name}] {message}", file=sys.stderr)

    @staticmethod
    def log_info(message: str) -> None:
        Logger.log(message, LogLevel.INFO)

    @staticmethod
    def log_warn(message: str) -> None:
        Logger.log(message, LogLevel.WARNING)

    @staticmethod
    def log_error(message: str) -> None:
        Logger.log(message, LogLevel.ERROR)

    @staticmethod
    def log_verbose(message: str) -> None:
        Logger.log(message, LogLevel.VERBOSE)


_FAMILY_DELETED = (
    "Invalid metric operation as the corresponding 'MetricFamily' has been deleted. The "
    "'MetricFamily' object should be deleted AFTER its corresponding 'Metric' objects have "
    "been deleted."
)


class Metric:
    """One labelled metric of a family; created by `MetricFamily.Metric(labels)`.

    As in Triton, a Metric does not keep its family alive: once the MetricFamily object
    is garbage-collected every operation on the metric raises TritonModelException (keep
    the family on `self` in initialize())."""

    def __init__(
        self,
        family: MetricFamily,
        labels: dict[str, str] | None = None,
        buckets: list[float] | None = None,
    ) -> None:
        if family._kind == MetricFamily.HISTOGRAM and not buckets:
            raise TritonModelException("histogram metrics need buckets")
        self._kind = family._kind
        self._family = weakref.ref(family)
        self._id: int = runtime.current().call(
            "metric",
            family=family._name,
            labels=dict(labels or {}),
            buckets=[float(b) for b in buckets] if buckets else None,
        )

    def _check_family(self, action: str) -> None:
        if self._family() is None:
            raise TritonModelException(f"Failed to {action} metric value: {_FAMILY_DELETED}")

    def increment(self, value: float) -> None:
        self._check_family("increment")
        if self._kind == MetricFamily.HISTOGRAM:
            raise TritonModelException("increment() is not supported for histograms")
        if self._kind == MetricFamily.COUNTER and value < 0:
            raise TritonModelException(
                "Failed to increment metric value: counter cannot be "
                "incremented by a negative value"
            )
        runtime.current().update_metric(self._id, "increment", float(value))

    def set(self, value: float) -> None:
        self._check_family("set")
        if self._kind != MetricFamily.GAUGE:
            raise TritonModelException("set() is only supported for gauges")
        runtime.current().update_metric(self._id, "set", float(value))

    def observe(self, value: float) -> None:
        self._check_family("observe")
        if self._kind != MetricFamily.HISTOGRAM:
            raise TritonModelException("observe() is only supported for histograms")
        runtime.current().update_metric(self._id, "observe", float(value))

    def value(self) -> float:
        self._check_family("get")
        return float(runtime.current().call("metric_value", metric=self._id))


class MetricFamily:
    """`MetricFamily(name, description, kind)`; kind COUNTER, GAUGE or HISTOGRAM."""

    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2

    def __init__(self, name: str, description: str, kind: int) -> None:
        if kind not in (self.COUNTER, self.GAUGE, self.HISTOGRAM):
            raise TritonModelException(f"unknown metric kind {kind!r}")
        self._name = name
        self._description = description
        self._kind = kind
        runtime.current().call(
            "metric_family",
            name=name,
            description=description,
            kind=("counter", "gauge", "histogram")[kind],
        )

    def Metric(
        self, labels: dict[str, str] | None = None, buckets: list[float] | None = None
    ) -> Metric:
        return Metric(self, labels, buckets)

    def __repr__(self) -> str:
        return f"MetricFamily({self._name!r})"
