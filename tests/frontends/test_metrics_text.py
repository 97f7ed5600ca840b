"""The nv_* exposition: Triton's names (no _total), types and labels, parseable by Prometheus."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from tritium.backends.python.metrics import collector_for
from tritium.frontends.metrics import (
    cpu_metrics,
    model_metrics,
    pinned_memory_metrics,
    registry_metrics,
)
from tritium.server.statistics import ModelStatistics


def _families(lines: list[str]) -> dict:
    return {f.name: f for f in text_string_to_metric_families("\n".join(lines) + "\n")}


def test_model_families_have_tritons_names_and_labels() -> None:
    s = ModelStatistics(name="add_sub", version=1, inference_count=3, execution_count=2)
    s.success.add(5_000_000, 3)
    s.queue.add(2_000)
    s.compute_infer.add(7_500)
    s.failure_reasons["BACKEND"] += 1
    s.pending_count = 2
    lines = model_metrics([s])
    text = "\n".join(lines)
    assert "# TYPE nv_inference_request_success counter" in text
    assert 'nv_inference_request_success{model="add_sub",version="1"} 3' in text
    assert 'nv_inference_request_failure{model="add_sub",reason="BACKEND",version="1"} 1' in text
    assert "_total" not in text
    fams = _families(lines)
    samples = {
        (f.name, tuple(sorted(smp.labels.items()))): smp.value
        for f in fams.values()
        for smp in f.samples
    }
    labels = (("model", "add_sub"), ("version", "1"))
    assert samples[("nv_inference_count", labels)] == 3
    assert samples[("nv_inference_exec_count", labels)] == 2
    assert samples[("nv_inference_request_duration_us", labels)] == 5000
    assert samples[("nv_inference_queue_duration_us", labels)] == 2
    assert samples[("nv_inference_compute_infer_duration_us", labels)] == 7
    assert samples[("nv_inference_pending_request_count", labels)] == 2
    assert fams["nv_inference_pending_request_count"].type == "gauge"
    assert fams["nv_inference_compute_output_duration_us"].type == "counter"


def test_cpu_families() -> None:
    fams = _families(cpu_metrics())
    assert set(fams) == {
        "nv_cpu_utilization",
        "nv_cpu_memory_total_bytes",
        "nv_cpu_memory_used_bytes",
    }
    total = fams["nv_cpu_memory_total_bytes"].samples[0].value
    used = fams["nv_cpu_memory_used_bytes"].samples[0].value
    assert 0 < used <= total
    assert 0.0 <= fams["nv_cpu_utilization"].samples[0].value <= 1.0


def test_custom_counter_family_has_tritons_name_and_help() -> None:
    registry = CollectorRegistry()
    custom = collector_for(registry)  # pb_utils.MetricFamily's server side
    custom.family(1, "my_requests", "Requests seen", "counter")
    custom.update(custom.metric("my_requests", {"model": "m"}, None), "increment", 2)
    plain = Counter("vllm:prompt_tokens", "Prompt tokens", ["model_name"], registry=registry)
    plain.labels("m").inc(5)
    text = registry_metrics(registry).decode()
    assert "# HELP my_requests Requests seen\n# TYPE my_requests counter\n" in text
    assert 'my_requests{model="m"} 2\n' in text
    assert "my_requests_total" not in text
    # prometheus_client's own counters keep their standard exposition
    assert "# TYPE vllm:prompt_tokens_total counter" in text
    assert 'vllm:prompt_tokens_total{model_name="m"} 5.0' in text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["my_requests"].documentation == "Requests seen"
    assert fams["my_requests"].type == "counter"


def test_pinned_memory_pool_gauges() -> None:
    fams = _families(pinned_memory_metrics())
    for name in ("nv_pinned_memory_pool_total_bytes", "nv_pinned_memory_pool_used_bytes"):
        assert fams[name].type == "gauge"
        assert [(s.labels, s.value) for s in fams[name].samples] == [({}, 0)]
