"""The metrics endpoint of a real server, parsed with prometheus_client's parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from serving import RunningServer


def _samples(server: RunningServer) -> dict[tuple[str, tuple], float]:
    r = httpx.get(server.metrics_url, timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            # the parser reports counter samples as <name>_total; Triton's text has the bare
            # name (checked on the raw text below), so key counters by their family name
            name = family.name if family.type == "counter" else s.name
            out[(name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_nv_inference_counters_increase(server: RunningServer) -> None:
    labels = (("model", "add_sub"), ("version", "1"))
    before = _samples(server)
    for name in ("nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count",
                 "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                 "nv_inference_compute_infer_duration_us", "nv_inference_pending_request_count"):  # fmt: skip
        assert (name, labels) in before, name
    body = {"inputs": [{"name": n, "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
                       for n in ("INPUT0", "INPUT1")]}  # fmt: skip
    for _ in range(3):
        assert (
            httpx.post(f"{server.http_url}/v2/models/add_sub/infer", json=body).status_code == 200
        )
    after = _samples(server)
    key = ("nv_inference_request_success", labels)
    assert after[key] == before[key] + 3
    assert after[("nv_inference_count", labels)] == before[("nv_inference_count", labels)] + 3
    failure = (
        "nv_inference_request_failure",
        (("model", "add_sub"), ("reason", "BACKEND"), ("version", "1")),
    )
    assert failure in after
    assert ("nv_cpu_memory_total_bytes", ()) in after
    raw = httpx.get(server.metrics_url).text
    assert "# TYPE nv_inference_request_success counter" in raw
    assert "nv_inference_request_success_total" not in raw
