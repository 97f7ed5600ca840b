"""Shared pieces of the deployment tests: paths, the metric names the server
exports, Debian tools installed on demand, PromQL checking with the real promtool."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "tritium"
DASHBOARD = DEPLOY / "grafana" / "tritium-dashboard.json"

# Every metric family the server exports (PROTOCOL.md section 6); dashboards and
# adapter rules may use nothing else.
NV_METRICS = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_inference_pending_request_count",
    "nv_cpu_utilization",
    "nv_cpu_memory_total_bytes",
    "nv_cpu_memory_used_bytes",
    "nv_gpu_utilization",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage",
    "nv_gpu_power_limit",
    "nv_energy_consumption",
}
VLLM_HISTOGRAMS = {
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
}
VLLM_METRICS = {
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:num_preemptions_total",
} | {f"{h}{suffix}" for h in VLLM_HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
KNOWN_SERIES = NV_METRICS | VLLM_METRICS

_METRIC_NAME = re.compile(r"\b(?:nv_[a-z0-9_]+|vllm:[a-z0-9_]+)")


def metric_names(expr: str) -> set[str]:
    """The nv_* and vllm:* names an expression reads."""
    return set(_METRIC_NAME.findall(expr))


def dashboard_expr_to_promql(expr: str) -> str:
    """Grafana variables replaced by values Prometheus itself accepts."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "30s")
        .replace("$model", ".*")
        .replace("$pod", ".*")
    )


def adapter_query_to_promql(query: str) -> str:
    """prometheus-adapter's template placeholders replaced as the adapter would for
    one pod's request."""
    return query.replace("<<.LabelMatchers>>", 'namespace="llm",pod=~".*"').replace(
        "<<.GroupBy>>", "pod"
    )


def ensure_debian_tool(binary: str, package: str) -> str:
    """The path of `binary`, installing Debian's `package` when it is missing (CI is a
    clean Debian with apt). Skips the test only when apt itself is unavailable."""
    found = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None
    )
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip(f"{binary} is not installed and apt-get is not usable to install {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    found = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None
    )
    assert found, f"installing {package} did not provide {binary}"
    return found


def check_promql(promtool: str, exprs: dict[str, str], tmp_path: Path) -> None:
    """Parse every expression with Prometheus's own parser (as recording rules)."""
    rules = {
        "groups": [
            {
                "name": "tritium-check",
                "rules": [
                    {"record": f"tritium:check_{i}", "expr": expr}
                    for i, expr in enumerate(exprs.values())
                ],
            }
        ]
    }
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    names = list(exprs)
    assert result.returncode == 0, (
        f"promtool rejected an expression ({names}):\n{result.stdout}\n{result.stderr}"
    )


# ---------------------------------------------------------------- processes


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0
