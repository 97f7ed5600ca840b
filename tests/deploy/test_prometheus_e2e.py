"""A real Prometheus (Debian's package) scraping a real `tritium serve` under load, on
loopback: what kube-prometheus-stack, prometheus-adapter and the dashboard will see."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import yaml

from serving import free_port, start_server, stop_process, wait_for

from .helpers import (
    CHART,
    DASHBOARD,
    NV_METRICS,
    ROOT,
    VLLM_METRICS,
    adapter_query_to_promql,
    dashboard_expr_to_promql,
    ensure_debian_tool,
    http_status,
    metric_names,
)

PYTHON_MODELS = ROOT / "examples" / "python_models"
LLM_MODEL = ROOT / "examples" / "model_repository" / "smollm2"
# Metrics only a GPU server exports (Triton leaves them out without GPUs).
GPU_METRICS = {m for m in NV_METRICS if m.startswith(("nv_gpu_", "nv_energy_"))}


@pytest.fixture(scope="module")
def tritium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(PYTHON_MODELS / "add_sub", repo / "add_sub")
    # An LLM too, so the vllm:* families and the dashboard's LLM panels have data.
    shutil.copytree(LLM_MODEL, repo / "smollm2")
    server = start_server(
        repo, tmp_path_factory.mktemp("log"), "--metrics-interval-ms=500", ready_timeout=300
    )
    try:
        yield {"http": server.http_port, "grpc": server.grpc_port, "metrics": server.metrics_port}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def prometheus(tritium: dict[str, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = ensure_debian_tool("prometheus", "prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "tritium",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{tritium['metrics']}"],
                        # What the ServiceMonitor's relabelling adds in a cluster.
                        "labels": {"namespace": "llm", "pod": "tritium-0"},
                    }
                ],
            }
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(work / "prometheus.log").open("wb"),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_status(f"{base}/-/ready") == 200, "prometheus to be ready")
        yield base
    finally:
        stop_process(process)


def query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def send_load(http_port: int, requests: int, threads: int) -> int:
    """`requests` add_sub inferences from `threads` clients; returns how many succeeded."""
    import tritonclient.http as httpclient

    ok = []

    def worker(count: int) -> None:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        for _ in range(count):
            inputs = [httpclient.InferInput(n, [1, 4], "FP32") for n in ("INPUT0", "INPUT1")]
            for tensor in inputs:
                tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
            client.infer("add_sub", inputs)
            ok.append(1)

    pool = [threading.Thread(target=worker, args=(requests // threads,)) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return len(ok)


def send_llm_load(http_port: int, requests: int) -> int:
    """`requests` concurrent short generations on smollm2; returns how many succeeded."""
    import httpx

    ok = []

    def worker(i: int) -> None:
        body = {"text_input": f"Count to {i + 3}:", "max_tokens": 8, "ignore_eos": True}
        r = httpx.post(
            f"http://127.0.0.1:{http_port}/v2/models/smollm2/generate", json=body, timeout=120
        )
        if r.status_code == 200 and r.json()["text_output"]:
            ok.append(1)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(requests)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return len(ok)


@pytest.fixture(scope="module")
def loaded(prometheus: str, tritium: dict[str, int]) -> str:
    """Prometheus after two rounds of load a few scrapes apart (rate() needs two samples
    that differ)."""
    wait_for(lambda: query(prometheus, "up") != [], "the first scrape")
    assert send_load(tritium["http"], 80, 8) == 80
    assert send_llm_load(tritium["http"], 4) == 4
    time.sleep(3)
    assert send_load(tritium["http"], 80, 8) == 80
    assert send_llm_load(tritium["http"], 4) == 4
    wait_for(
        lambda: (
            query(prometheus, 'nv_inference_request_success{model="add_sub"} >= 160')
            and query(prometheus, 'nv_inference_request_success{model="smollm2"} >= 8')
        ),
        "the load to be scraped",
    )
    return prometheus


def test_target_is_up(loaded: str) -> None:
    (up,) = query(loaded, 'up{job="tritium"}')
    assert up["value"][1] == "1"


def test_every_nv_family_is_ingested(loaded: str) -> None:
    families = query(loaded, 'count by (__name__) ({__name__=~"nv_.+"})')
    present = {r["metric"]["__name__"] for r in families}
    assert present >= NV_METRICS - GPU_METRICS
    (success,) = query(loaded, 'nv_inference_request_success{model="add_sub",version="1"}')
    assert float(success["value"][1]) >= 160
    (llm,) = query(loaded, 'nv_inference_request_success{model="smollm2",version="1"}')
    assert float(llm["value"][1]) >= 8


def test_every_vllm_family_is_ingested(loaded: str) -> None:
    families = query(loaded, 'count by (__name__) ({__name__=~"vllm:.+"})')
    present = {r["metric"]["__name__"] for r in families}
    assert present >= VLLM_METRICS
    (tokens,) = query(loaded, 'vllm:generation_tokens_total{model_name="smollm2"}')
    assert float(tokens["value"][1]) >= 64


def test_promtool_finds_only_tritons_legacy_naming(tritium: dict[str, int]) -> None:
    promtool = ensure_debian_tool("promtool", "prometheus")
    with urllib.request.urlopen(f"http://127.0.0.1:{tritium['metrics']}/metrics") as r:
        exposition = r.read()
    result = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True)
    problems = [line for line in result.stderr.decode().splitlines() if line.strip()]
    # Triton's names predate the conventions (no _total on counters, _us, *_count
    # gauges); dashboards depend on them, so they stay. Nothing else may be flagged.
    legacy = (
        'counter metrics should have "_total" suffix',
        "metric names should not contain abbreviated units",
        'non-histogram and non-summary metrics should not have "_count" suffix',
    )
    # vLLM's names carry a colon (vllm:...), which promtool reserves for recording rules;
    # vLLM dashboards query them so, and so do we.
    vllm_lint = "metric names should not contain ':'"
    for problem in problems:
        name, _, message = problem.partition(" ")
        if name.startswith("vllm:"):
            assert message == vllm_lint, problem
        else:
            assert name in NV_METRICS and message in legacy, problem
    assert problems, "expected the known legacy-name lint (is promtool really checking?)"


def test_autoscaling_ratio_is_positive(loaded: str) -> None:
    rules = yaml.safe_load(
        (CHART / "files" / "adapter-rules.yaml")
        .read_text()
        .replace("{{ .Values.prometheusAdapterRules.rateWindow }}", "1m")
    )["rules"]
    ratio = next(r for r in rules if r["name"]["as"] == "nv_inference_queue_compute_ratio")
    (sample,) = query(loaded, adapter_query_to_promql(ratio["metricsQuery"]))
    assert sample["metric"] == {"pod": "tritium-0"}
    assert float(sample["value"][1]) > 0
    # And the plain expression users copy from Triton's docs.
    (plain,) = query(
        loaded,
        "sum(rate(nv_inference_queue_duration_us[1m])) "
        "/ sum(rate(nv_inference_compute_infer_duration_us[1m]))",
    )
    assert float(plain["value"][1]) > 0


def test_dashboard_and_adapter_queries_run(loaded: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    present = {
        r["metric"]["__name__"]
        for r in query(loaded, 'count by (__name__) ({__name__=~"(nv_|vllm:).+"})')
    }
    exprs = [
        dashboard_expr_to_promql(t["expr"])
        for p in dashboard["panels"]
        for t in p.get("targets", [])
    ]
    rules_text = (CHART / "files" / "adapter-rules.yaml").read_text()
    rules = yaml.safe_load(
        rules_text.replace("{{ .Values.prometheusAdapterRules.rateWindow }}", "1m")
    )
    exprs += [
        adapter_query_to_promql(r[f])
        for r in rules["rules"]
        for f in ("seriesQuery", "metricsQuery")
    ]
    answered = 0
    for expr in exprs:
        result = query(loaded, expr)  # every expression is accepted by the server
        needed = {n.removesuffix("_bucket") for n in metric_names(expr)}
        have = {n.removesuffix("_bucket") for n in present}
        if needed <= have:
            # Everything it reads is exported: it must return data.
            assert result, expr
            answered += 1
        else:
            # Only GPU metrics may be missing on this CPU-only machine.
            assert needed - have <= GPU_METRICS, (expr, needed - have)
    assert answered >= 10
