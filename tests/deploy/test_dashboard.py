"""The Grafana dashboard: valid JSON, every panel queries something, every query is
PromQL that Prometheus parses, and reads only metrics the server exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .helpers import (
    CHART,
    DASHBOARD,
    KNOWN_SERIES,
    check_promql,
    dashboard_expr_to_promql,
    metric_names,
)


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return [p for p in found if p["type"] != "row"]


def test_every_panel_has_queries_on_the_datasource_variable() -> None:
    dashboard = load()
    assert len(panels(dashboard)) >= 20
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}"


def test_template_variables() -> None:
    variables = {v["name"]: v for v in load()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("model", "pod"):
        assert variables[name]["type"] == "query"
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    # Every panel is filtered by the variables it can be.
    for panel in panels(load()):
        for target in panel["targets"]:
            assert "$pod" in target["expr"], panel["title"]


def test_expected_panels_exist() -> None:
    exprs = " ".join(t["expr"] for p in panels(load()) for t in p["targets"])
    # Triton's panels and the LLM panels the brief asks for.
    for needle in (
        "sum by (pod) (rate(nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_gpu_utilization",
        "nv_gpu_memory_used_bytes",
        "nv_cpu_utilization",
        "nv_cpu_memory_used_bytes",
        "histogram_quantile(0.99, sum by (le, model_name) (rate(vllm:time_to_first_token_seconds_bucket",
        "histogram_quantile(0.5, sum by (le, model_name) (rate(vllm:inter_token_latency_seconds_bucket",
        "rate(vllm:generation_tokens_total",
        "vllm:kv_cache_usage_perc",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
    ):
        assert needle in exprs, needle


def test_every_expression_parses_and_uses_known_metrics(promtool: str, tmp_path: Path) -> None:
    exprs: dict[str, str] = {}
    for panel in panels(load()):
        for target in panel["targets"]:
            used = metric_names(target["expr"])
            assert used, f"{panel['title']}: no Tritium metric in {target['expr']}"
            assert used <= KNOWN_SERIES, f"{panel['title']}: unknown {used - KNOWN_SERIES}"
            exprs[f"{panel['title']}/{target['refId']}"] = dashboard_expr_to_promql(target["expr"])
    check_promql(promtool, exprs, tmp_path)


def test_promtool_catches_a_broken_expression(promtool: str, tmp_path: Path) -> None:
    # The check above is only worth something if promtool really parses.
    import pytest

    with pytest.raises(AssertionError, match="promtool rejected"):
        check_promql(
            promtool, {"bad": "sum by (pod) (rate(vllm:num_requests_waiting[1m]"}, tmp_path
        )


def test_chart_ships_the_same_dashboard() -> None:
    assert (CHART / "dashboards" / "tritium-dashboard.json").read_text() == DASHBOARD.read_text()
