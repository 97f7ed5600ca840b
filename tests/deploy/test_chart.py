"""The Helm chart, rendered by the real Helm library (helm-python-sdk binds Helm v4's
Go SDK; no helm binary, no cluster), linted, and every manifest validated against the
Kubernetes OpenAPI schemas (kubernetes-validate). Assertions are on parsed YAML."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helpers import (
    CHART,
    DEPLOY,
    KNOWN_SERIES,
    adapter_query_to_promql,
    check_promql,
    metric_names,
)

helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

# Kubernetes versions to validate against: EKS's oldest in standard support and the newest
# schema kubernetes-validate ships.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())

S3_WITH_SECRETS = {
    "image": {"imageName": "registry.example/tritium:0.1.0-cuda"},
    "modelRepositoryPath": ["s3://bucket/llms", "s3://https://minio.local:9000/shared/models"],
    "modelControlMode": "poll",
    "repositoryPollSecs": 45,
    "environment": [
        {"name": "AWS_REGION", "value": "eu-west-1"},
        {"name": "AWS_ENDPOINT_URL", "value": "https://minio.local:9000"},
        {"name": "NUMERIC", "value": 1},
    ],
    "secretEnvironment": [
        {"name": "HF_TOKEN", "secretName": "huggingface-token", "key": "HF_TOKEN"},
        {"name": "AWS_ACCESS_KEY_ID", "secretName": "s3-creds", "key": "access-key"},
        {"name": "AWS_SECRET_ACCESS_KEY", "secretName": "s3-creds", "key": "secret-key"},
    ],
    "imagePullSecrets": [{"name": "regcred"}],
    "prometheusAdapterRules": {"enabled": True, "namespace": "monitoring"},
}


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / "examples" / name).read_text())


VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "eks-g5": example("eks-g5-values.yaml"),
    "cpu-hpa-off": example("cpu-values.yaml"),
    "s3-with-secrets": S3_WITH_SECRETS,
}


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    """All manifests of a release named `demo` in namespace `llm`, parsed."""
    rendered = chart.render(copy.deepcopy(values), name="demo", namespace="llm", is_install=True)
    manifests = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return manifests


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return pod["containers"][0]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_is_clean(value_set: str) -> None:
    report = helm.lint(CHART, copy.deepcopy(VALUE_SETS[value_set]), strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_manifests_match_kubernetes_schemas(chart: Any, value_set: str) -> None:
    manifests = render(chart, VALUE_SETS[value_set])
    assert {"Deployment", "Service", "ServiceAccount"} <= {m["kind"] for m in manifests}
    for manifest in manifests:
        if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: checked field by field in test_service_monitor_*
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)


def test_schema_validation_catches_a_broken_manifest() -> None:
    # The validation above is only worth something if it fails on a wrong field.
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}
    bad["spec"] = {"ports": [{"port": "http"}]}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSIONS[-1], strict=True)


def test_defaults(chart: Any) -> None:
    manifests = render(chart, {})
    kinds = sorted(m["kind"] for m in manifests)
    assert kinds == sorted(
        [
            "ConfigMap",  # Grafana dashboard
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Service",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    )
    c = container(manifests)
    assert c["command"] == ["tritium", "serve"]
    assert "--model-repository=/opt/tritium/model_repository" in c["args"]
    assert "--model-control-mode=none" in c["args"]
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_ports_and_services(chart: Any) -> None:
    manifests = render(chart, {})
    c = container(manifests)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert {"--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"} <= set(c["args"])
    services = {s["metadata"]["name"]: s for s in by_kind(manifests, "Service")}
    inference = services["demo-tritium"]["spec"]
    metrics = services["demo-tritium-metrics"]["spec"]
    assert {(p["name"], p["port"], p["targetPort"]) for p in inference["ports"]} == {
        ("http", 8000, "http"),
        ("grpc", 8001, "grpc"),
    }
    assert [(p["name"], p["port"], p["targetPort"]) for p in metrics["ports"]] == [
        ("metrics", 8002, "metrics")
    ]
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for spec in (inference, metrics):
        assert spec["selector"].items() <= pod_labels.items()


def test_service_monitor_scrapes_the_metrics_service(chart: Any) -> None:
    manifests = render(chart, {})
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selected = [
        s
        for s in by_kind(manifests, "Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in selected] == ["demo-tritium-metrics"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["llm"]
    assert by_kind(render(chart, {"serviceMonitor": {"enabled": False}}), "ServiceMonitor") == []


def test_probes_tolerate_slow_model_loads(chart: Any) -> None:
    c = container(render(chart, {}))
    assert c["startupProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    startup = c["startupProbe"]
    # Liveness only starts after startup succeeds: a 30-minute model load is fine.
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 30 * 60
    eks = container(render(chart, VALUE_SETS["eks-g5"]))["startupProbe"]
    assert eks["failureThreshold"] * eks["periodSeconds"] == 40 * 60


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_graceful_termination_drains(chart: Any, value_set: str) -> None:
    values = VALUE_SETS[value_set]
    manifests = render(chart, values)
    merged = chart.merge_values(copy.deepcopy(values))
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["lifecycle"]["preStop"]["exec"]["command"] == [
        "sleep",
        str(merged["preStopSleepSeconds"]),
    ]
    assert f"--exit-timeout-secs={merged['exitTimeoutSecs']}" in c["args"]
    assert (
        pod["terminationGracePeriodSeconds"]
        > merged["preStopSleepSeconds"] + merged["exitTimeoutSecs"]
    )
    rolling = one(manifests, "Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0


def test_too_short_grace_period_is_refused(chart: Any) -> None:
    with pytest.raises(helm.HelmError, match="terminationGracePeriodSeconds"):
        render(chart, {"exitTimeoutSecs": 60, "terminationGracePeriodSeconds": 30})
    pod = one(render(chart, {"terminationGracePeriodSeconds": 120}), "Deployment")
    assert pod["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 120


def test_dev_shm_is_a_memory_volume(chart: Any) -> None:
    manifests = render(chart, VALUE_SETS["eks-g5"])
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm == {"medium": "Memory", "sizeLimit": "16Gi"}
    cache = volumes[mounts["/var/cache/tritium"]]["emptyDir"]
    assert cache["sizeLimit"] == "200Gi"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["TRITIUM_CACHE_DIR"] == "/var/cache/tritium"


def test_environment_and_secret_references(chart: Any) -> None:
    c = container(render(chart, S3_WITH_SECRETS))
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_REGION"]["value"] == "eu-west-1"
    assert env["NUMERIC"]["value"] == "1"  # env values must be strings
    assert env["HF_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "huggingface-token", "key": "HF_TOKEN"}
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3-creds",
        "key": "secret-key",
    }
    assert "value" not in env["HF_TOKEN"]
    repos = [a for a in c["args"] if a.startswith("--model-repository=")]
    assert repos == [
        "--model-repository=s3://bucket/llms",
        "--model-repository=s3://https://minio.local:9000/shared/models",
    ]
    assert "--model-control-mode=poll" in c["args"]
    assert "--repository-poll-secs=45" in c["args"]


def test_nvidia_chart_image_model_repository_path_is_honoured(chart: Any) -> None:
    c = container(render(chart, {"image": {"modelRepositoryPath": "s3://old-style/repo"}}))
    assert [a for a in c["args"] if a.startswith("--model-repository=")] == [
        "--model-repository=s3://old-style/repo"
    ]


def test_eks_gpu_values(chart: Any) -> None:
    manifests = render(chart, VALUE_SETS["eks-g5"])
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "g5.12xlarge"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 4
    account = one(manifests, "ServiceAccount")
    assert account["metadata"]["name"] == pod["serviceAccountName"] == "tritium"
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )
    assert pod["containers"][0]["image"].endswith("tritium:0.1.0-cuda")


def test_hpa_scales_on_the_adapter_metrics(chart: Any) -> None:
    manifests = render(chart, {})
    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "demo-tritium",
    }
    metrics = {m["pods"]["metric"]["name"]: m["pods"]["target"] for m in hpa["spec"]["metrics"]}
    assert metrics == {
        "nv_inference_queue_compute_ratio": {"type": "AverageValue", "averageValue": "1"},
        "vllm_num_requests_waiting": {"type": "AverageValue", "averageValue": "4"},
    }
    assert all(m["type"] == "Pods" for m in hpa["spec"]["metrics"])
    # Every metric the HPA asks for is one the adapter rules publish.
    published = {rule["name"]["as"] for rule in adapter_rules(chart)}
    assert set(metrics) <= published
    # The HPA owns the replica count.
    assert "replicas" not in one(manifests, "Deployment")["spec"]


def test_hpa_off(chart: Any) -> None:
    manifests = render(chart, VALUE_SETS["cpu-hpa-off"])
    assert by_kind(manifests, "HorizontalPodAutoscaler") == []
    assert one(manifests, "Deployment")["spec"]["replicas"] == 2


def test_hpa_bounds_are_checked(chart: Any) -> None:
    with pytest.raises(helm.HelmError, match="minReplicas"):
        render(chart, {"hpa": {"minReplicas": 5, "maxReplicas": 2}})


def test_pod_disruption_budget_never_blocks_a_drain(chart: Any) -> None:
    pdb = one(render(chart, {}), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    pdb = one(render(chart, {"podDisruptionBudget": {"minAvailable": 1}}), "PodDisruptionBudget")
    assert pdb["spec"] == {
        "minAvailable": 1,
        "selector": pdb["spec"]["selector"],
    }


def adapter_rules(chart: Any) -> list[dict[str, Any]]:
    manifests = render(chart, {"prometheusAdapterRules": {"enabled": True}})
    (configmap,) = [
        m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-rules")
    ]
    return yaml.safe_load(configmap["data"]["config.yaml"])["rules"]


def test_adapter_rules_configmap_matches_the_adapter_values_file(chart: Any) -> None:
    manifests = render(chart, S3_WITH_SECRETS)
    (configmap,) = [
        m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-rules")
    ]
    assert configmap["metadata"]["namespace"] == "monitoring"
    standalone = yaml.safe_load((DEPLOY / "prometheus-adapter" / "values.yaml").read_text())
    assert standalone["rules"]["custom"] == adapter_rules(chart)


def test_adapter_queries_are_promql(chart: Any, promtool: str, tmp_path: Path) -> None:
    rules = adapter_rules(chart)
    exprs = {}
    for rule in rules:
        for field in ("seriesQuery", "metricsQuery"):
            query = rule[field]
            assert metric_names(query) <= KNOWN_SERIES, query
            exprs[f"{rule['name']['as']}/{field}"] = adapter_query_to_promql(query)
    check_promql(promtool, exprs, tmp_path)
    ratio = next(r for r in rules if r["name"]["as"] == "nv_inference_queue_compute_ratio")
    assert "rate(nv_inference_queue_duration_us{" in ratio["metricsQuery"]
    assert "rate(nv_inference_compute_infer_duration_us{" in ratio["metricsQuery"]
    waiting = next(r for r in rules if r["name"]["as"] == "vllm_num_requests_waiting")
    assert metric_names(waiting["metricsQuery"]) == {"vllm:num_requests_waiting"}


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"modelRepositoryPaht": "s3://typo"}, "modelRepositoryPaht"),
        ({"modelControlMode": "sometimes"}, "/modelControlMode"),
        ({"hpa": {"maxReplicas": "4"}}, "/hpa/maxReplicas"),
        ({"hpa": {"enable": True}}, "enable"),
        ({"environment": [{"name": "A"}]}, "/environment/0"),
        ({"secretEnvironment": [{"name": "HF_TOKEN", "secret": "hf", "key": "k"}]}, "secretName"),
        ({"shm": {"sizeLimit": "lots"}}, "/shm/sizeLimit"),
        ({"service": {"httpPort": 70000}}, "/service/httpPort"),
        ({"serviceMonitor": {"interval": 15}}, "/serviceMonitor/interval"),
        ({"image": {"imageName": ""}}, "/image/imageName"),
    ],
)
def test_values_schema_rejects_bad_values(chart: Any, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmError):
        render(chart, values)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_values_schema_accepts_the_shipped_value_sets(chart: Any, value_set: str) -> None:
    chart.validate_schema(copy.deepcopy(VALUE_SETS[value_set]))
