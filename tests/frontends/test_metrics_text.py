"""The nv_* exposition: Triton's names (no _total), types and labels, parseable by Prometheus."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tritium.frontends.metrics import cpu_metrics, model_metrics
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
