"""The metrics endpoint (port 8002, GET /metrics): Triton's nv_* families in Prometheus text.

Triton names its counters without the `_total` suffix that prometheus_client's
CounterMetricFamily would add (`nv_inference_request_success`, `# TYPE ... counter`);
dashboards query those exact names, so the nv_* families are written here by hand and the
server's own registry (pb_utils.MetricFamily, vllm:*) is appended via prometheus_client.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tritium.server.core import InferenceServer
from tritium.server.statistics import ModelStatistics

log = logging.getLogger("tritium.frontends.metrics")

CONTENT_TYPE = "text/plain; charset=utf-8"
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")

# (name, type, help, value of a ModelStatistics)
MODEL_FAMILIES: list[tuple[str, str, str, Any]] = [
    (
        "nv_inference_request_success",
        "counter",
        "Number of successful inference requests, all batch sizes",
        lambda s: s.success.count,
    ),
    (
        "nv_inference_count",
        "counter",
        "Number of inferences performed (does not include cached requests)",
        lambda s: s.inference_count,
    ),
    (
        "nv_inference_exec_count",
        "counter",
        "Number of model executions performed (does not include cached requests)",
        lambda s: s.execution_count,
    ),
    (
        "nv_inference_request_duration_us",
        "counter",
        "Cumulative inference request duration in microseconds (includes cached requests)",
        lambda s: s.success.ns // 1000,
    ),
    (
        "nv_inference_queue_duration_us",
        "counter",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
        lambda s: s.queue.ns // 1000,
    ),
    (
        "nv_inference_compute_input_duration_us",
        "counter",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
        lambda s: s.compute_input.ns // 1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "counter",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
        lambda s: s.compute_infer.ns // 1000,
    ),
    (
        "nv_inference_compute_output_duration_us",
        "counter",
        "Cumulative inference compute output duration in microseconds (does not include cached "
        "requests)",
        lambda s: s.compute_output.ns // 1000,
    ),
    (
        "nv_inference_pending_request_count",
        "gauge",
        "Instantaneous number of pending requests awaiting execution per-model.",
        lambda s: s.pending_count,
    ),
]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _family(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples]
    return lines


def model_metrics(stats: list[ModelStatistics]) -> list[str]:
    """The nv_inference_* families, labelled {model, version} (failure also by reason)."""
    lines: list[str] = []
    ordered = sorted(stats, key=lambda s: (s.name, s.version))
    for name, kind, help_text, value in MODEL_FAMILIES[:1]:
        lines += _family(
            name,
            kind,
            help_text,
            (({"model": s.name, "version": str(s.version)}, value(s)) for s in ordered),
        )
    lines += _family(
        "nv_inference_request_failure",
        "counter",
        "Number of failed inference requests, all batch sizes",
        (
            (
                {"model": s.name, "reason": reason, "version": str(s.version)},
                s.failure_reasons.get(reason, 0),
            )
            for s in ordered
            for reason in FAILURE_REASONS
        ),
    )
    for name, kind, help_text, value in MODEL_FAMILIES[1:]:
        lines += _family(
            name,
            kind,
            help_text,
            (({"model": s.name, "version": str(s.version)}, value(s)) for s in ordered),
        )
    return lines


def pinned_memory_metrics() -> list[str]:
    """Triton's pinned-memory pool gauges; Tritium keeps no pinned pool (0, as Triton
    reports without CUDA)."""
    lines = _family(
        "nv_pinned_memory_pool_total_bytes",
        "gauge",
        "Pinned memory pool total memory size, in bytes",
        [({}, 0)],
    )
    lines += _family(
        "nv_pinned_memory_pool_used_bytes",
        "gauge",
        "Pinned memory pool used memory size, in bytes",
        [({}, 0)],
    )
    return lines


class _Collected:
    """A `collect()`-able view of some metrics, for prometheus_client's generate_latest."""

    def __init__(self, metrics: list[Any]) -> None:
        self._metrics = metrics

    def collect(self) -> list[Any]:
        return self._metrics


def registry_metrics(registry: Any) -> bytes:
    """The server's own registry (pb_utils.MetricFamily, vllm:*). A counter whose samples
    carry its family's exact name (Triton's naming, as pb_utils counters are) is written
    with the nv_* writer: `# HELP/# TYPE name counter` and `name{...}`; prometheus_client
    would name HELP and TYPE `name_total` and leave the samples without help text.
    Everything else is prometheus_client's own exposition."""
    triton_style: list[str] = []
    standard: list[Any] = []
    for metric in registry.collect():
        samples = metric.samples
        if metric.type == "counter" and samples and all(s.name == metric.name for s in samples):
            triton_style += _family(
                metric.name,
                "counter",
                _escape_help(metric.documentation),
                ((dict(s.labels), s.value) for s in samples),
            )
        else:
            standard.append(metric)
    text = ("\n".join(triton_style) + "\n").encode() if triton_style else b""
    return text + (generate_latest(_Collected(standard)) if standard else b"")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def cpu_metrics() -> list[str]:
    import psutil

    memory = psutil.virtual_memory()
    lines = _family(
        "nv_cpu_utilization",
        "gauge",
        "CPU utilization rate [0.0 - 1.0]",
        [({}, psutil.cpu_percent(interval=None) / 100.0)],
    )
    lines += _family(
        "nv_cpu_memory_total_bytes",
        "gauge",
        "CPU total memory (RAM), in bytes",
        [({}, memory.total)],
    )
    lines += _family(
        "nv_cpu_memory_used_bytes",
        "gauge",
        "CPU used memory (RAM), in bytes",
        [({}, memory.total - memory.available)],
    )
    return lines


class GPUMetrics:
    """NVML readings per GPU, labelled by gpu_uuid; empty when no GPU (or no NVML) is there."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[tuple[str, Any, int]] = []  # uuid, handle, energy at start (mJ)
        try:
            import pynvml

            pynvml.nvmlInit()
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                uuid = pynvml.nvmlDeviceGetUUID(handle)
                uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
                energy = 0
                with contextlib.suppress(pynvml.NVMLError):
                    energy = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                self._handles.append((uuid, handle, energy))
            self._nvml = pynvml
        except Exception:  # no driver, no GPU: GPU metrics are simply absent
            self._handles = []

    def lines(self) -> list[str]:
        if not self._handles:
            return []
        nvml = self._nvml
        util, mem_total, mem_used, power, limit, energy = [], [], [], [], [], []
        for uuid, handle, energy_start in self._handles:
            labels = {"gpu_uuid": uuid}
            with contextlib.suppress(nvml.NVMLError):
                util.append((labels, nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0))
            with contextlib.suppress(nvml.NVMLError):
                info = nvml.nvmlDeviceGetMemoryInfo(handle)
                mem_total.append((labels, info.total))
                mem_used.append((labels, info.used))
            with contextlib.suppress(nvml.NVMLError):
                power.append((labels, nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0))
            with contextlib.suppress(nvml.NVMLError):
                limit.append((labels, nvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000.0))
            with contextlib.suppress(nvml.NVMLError):
                now = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                energy.append((labels, (now - energy_start) / 1000.0))
        lines = _family("nv_gpu_utilization", "gauge", "GPU utilization rate [0.0 - 1.0)", util)
        lines += _family(
            "nv_gpu_memory_total_bytes", "gauge", "GPU total memory, in bytes", mem_total
        )
        lines += _family("nv_gpu_memory_used_bytes", "gauge", "GPU used memory, in bytes", mem_used)
        lines += _family("nv_gpu_power_usage", "gauge", "GPU power usage in watts", power)
        lines += _family(
            "nv_gpu_power_limit", "gauge", "GPU power management limit in watts", limit
        )
        lines += _family(
            "nv_energy_consumption",
            "counter",
            "GPU energy consumption in joules since the Triton Server started",
            energy,
        )
        return lines


class MetricsExporter:
    """Renders the whole /metrics page for one InferenceServer."""

    def __init__(self, server: InferenceServer, cpu: bool = True, gpu: bool = True) -> None:
        self.server = server
        self.cpu = cpu
        self.gpu = GPUMetrics() if gpu else None
        if cpu:
            import psutil

            psutil.cpu_percent(interval=None)  # prime: the first reading is always 0

    def render(self) -> bytes:
        lines: list[str] = []
        try:
            lines += model_metrics(self.server.stats_snapshot())
        except Exception:
            log.exception("collecting model statistics failed")
        lines += pinned_memory_metrics()
        if self.gpu is not None:
            lines += self.gpu.lines()
        if self.cpu:
            lines += cpu_metrics()
        text = ("\n".join(lines) + "\n").encode() if lines else b""
        registry = getattr(self.server, "metrics_registry", None)
        if registry is not None:
            text += registry_metrics(registry)
        return text


def create_metrics_app(server: InferenceServer, cpu: bool = True, gpu: bool = True) -> Starlette:
    """GET /metrics; other methods 405 as Triton, other paths 400 as Triton."""
    exporter = MetricsExporter(server, cpu=cpu, gpu=gpu)

    async def metrics(request: Request) -> Response:
        if request.method != "GET":
            return Response(
                b'{"error":"Method Not Allowed"}', status_code=405, media_type=CONTENT_TYPE
            )
        if request.url.path != "/metrics":
            return Response(status_code=400, media_type=CONTENT_TYPE)
        return Response(exporter.render(), media_type=CONTENT_TYPE)

    app = Starlette(
        routes=[Route("/{path:path}", metrics, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])]
    )
    app.state.exporter = exporter
    app.state.started = time.time()
    return app
