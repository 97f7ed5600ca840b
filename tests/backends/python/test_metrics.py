"""pb_utils.MetricFamily values land in the server's Prometheus registry."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from tests.backends.python.conftest import EXAMPLES, TEST_MODELS, LocalServer, infer

from tritium.backends.python.metrics import PythonModelMetrics, collector_for
from tritium.frontends.metrics import registry_metrics
from tritium.server.errors import ErrorCode


async def test_model_metrics_appear_in_registry() -> None:
    server = LocalServer()
    await server.load(EXAMPLES / "async_model")
    try:
        for size in (1, 5, 50):
            await infer(server, "async_model", {"INPUT0": np.ones(size, np.float32)})
        text = registry_metrics(server.registry).decode()
        labels = 'model="async_model",version="1"'
        # Triton's naming: HELP, TYPE and samples all `async_model_requests` (no _total)
        assert "# HELP async_model_requests Requests processed by async_model" in text
        assert "# TYPE async_model_requests counter" in text
        assert f"async_model_requests{{{labels}}} 3\n" in text
        assert "async_model_requests_total" not in text
        assert "# TYPE async_model_request_elements histogram" in text
        assert f'async_model_request_elements_bucket{{le="10.0",{labels}}} 2.0' in text
        assert f"async_model_request_elements_count{{{labels}}} 3.0" in text
        assert f"async_model_request_elements_sum{{{labels}}} 56.0" in text
    finally:
        await server.close()
    # The family goes away with the last model that used it.
    assert "async_model_requests" not in generate_latest(server.registry).decode()


def test_collector_semantics() -> None:
    registry = CollectorRegistry()
    metrics = collector_for(registry)
    assert collector_for(registry) is metrics
    metrics.family(1, "queue_depth", "Items waiting", "gauge")
    metrics.family(2, "queue_depth", "Items waiting", "gauge")  # shared by two models
    a = metrics.metric("queue_depth", {"model": "a"}, None)
    b = metrics.metric("queue_depth", {"model": "b"}, None)
    again = metrics.metric("queue_depth", {"model": "a"}, None)
    metrics.update(a, "set", 4)
    metrics.update(again, "increment", 1)
    metrics.update(b, "set", 7)
    assert metrics.value(a) == 5 and metrics.value(b) == 7
    text = generate_latest(registry).decode()
    assert 'queue_depth{model="a"} 5.0' in text and 'queue_depth{model="b"} 7.0' in text
    metrics.release(1)
    assert 'queue_depth{model="a"} 5.0' in generate_latest(registry).decode()
    metrics.release(2)
    assert "queue_depth" not in generate_latest(registry).decode()


def test_family_kind_conflict_is_rejected() -> None:
    metrics = PythonModelMetrics()
    metrics.family(1, "x", "d", "counter")
    try:
        metrics.family(1, "x", "d", "gauge")
    except Exception as exc:
        assert "already exists" in str(exc)
    else:
        raise AssertionError("a second kind for one family must fail")


async def test_metric_of_a_dropped_family_raises_like_triton() -> None:
    server = LocalServer()
    await server.load(TEST_MODELS / "dropped_family")
    try:
        (response,) = await infer(server, "dropped_family", {"INPUT0": np.ones(2, np.float32)})
        assert response.error is not None and response.error.code == ErrorCode.INTERNAL
        assert response.error.message.startswith(
            "Failed to process the request(s) for model 'dropped_family_0_0', message: "
            "TritonModelException: Failed to increment metric value: Invalid metric operation "
            "as the corresponding 'MetricFamily' has been deleted. The 'MetricFamily' object "
            "should be deleted AFTER its corresponding 'Metric' objects have been deleted."
        )
        # the family kept on self works
        assert 'kept_family{m="1"} 1.0' in generate_latest(server.registry).decode()
    finally:
        await server.close()
