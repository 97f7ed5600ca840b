"""InferenceServer end to end over a real repository and the in-process test backend:
metadata, inference, Triton's validation messages, statistics, readiness, stop."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tritium.server.errors import ErrorCode, TritonError
from tritium.server.types import InferenceRequest, Tensor

from .conftest import ADD_SUB, IDENTITY, add_sub_request, collect, identity_request, write_model


async def test_metadata_and_model_metadata(repo, make_server):
    write_model(repo, "add_sub", ADD_SUB)
    server = await make_server()
    meta = server.metadata()
    assert meta["name"] == "triton" and "model_repository" in meta["extensions"]
    server.extensions.append("binary_tensor_data")  # as the HTTP frontend adds it
    listed = server.metadata()["extensions"]
    assert listed.index("binary_tensor_data") < listed.index("parameters")  # Triton's order
    assert server.is_live() and server.is_ready()
    md = server.model_metadata("add_sub")
    assert md == {
        "name": "add_sub",
        "versions": ["1"],
        "platform": "tritium_test",
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "INPUT1", "datatype": "FP32", "shape": [-1, 4]},
        ],
        "outputs": [
            {"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "OUTPUT1", "datatype": "FP32", "shape": [-1, 4]},
        ],
    }
    handle = server.get_model("add_sub")
    assert (handle.name, handle.version, handle.decoupled) == ("add_sub", 1, False)
    # No instance_group in the config: Triton names the one it adds after the model.
    assert server.model_config("add_sub").instance_group[0].name == "add_sub"


async def test_infer_add_sub_and_output_filter(repo, make_server):
    write_model(repo, "add_sub", ADD_SUB)
    server = await make_server()
    [resp] = await collect(server, add_sub_request([1, 2, 3, 4], [1, 1, 1, 1], rid="r1"))
    assert resp.error is None and resp.final
    out = {t.name: t.data for t in resp.outputs}
    np.testing.assert_array_equal(out["OUTPUT0"], [[2, 3, 4, 5]])
    np.testing.assert_array_equal(out["OUTPUT1"], [[0, 1, 2, 3]])
    [resp] = await collect(server, add_sub_request([1, 2, 3, 4], [1, 1, 1, 1], outputs=["OUTPUT1"]))
    assert [t.name for t in resp.outputs] == ["OUTPUT1"]


@pytest.mark.parametrize(
    ("make_request", "code", "message"),
    [
        (
            lambda: add_sub_request([1] * 4, [1] * 4, model="nope"),
            ErrorCode.NOT_FOUND,
            "Request for unknown model: 'nope' is not found",
        ),
        (
            lambda: add_sub_request([1] * 4, [1] * 4, model_version=2),
            ErrorCode.NOT_FOUND,
            "Request for unknown model: 'add_sub' version 2 is not found",
        ),
        (
            lambda: add_sub_request([1] * 3, [1] * 3, rid="x"),
            ErrorCode.INVALID_ARG,
            # both inputs are wrong: Triton names the last one (its unordered_map order)
            "[request id: x] unexpected shape for input 'INPUT1' for model 'add_sub'. "
            "Expected [-1,4], got [1,3]. NOTE: Setting a non-zero max_batch_size",
        ),
        (
            lambda: add_sub_request([1] * 4, [1] * 4, outputs=["BAD"]),
            ErrorCode.INVALID_ARG,
            "unexpected inference output 'BAD' for model 'add_sub'",
        ),
    ],
)
async def test_validation_messages(repo, make_server, make_request, code, message):
    write_model(repo, "add_sub", ADD_SUB)
    server = await make_server()
    with pytest.raises(TritonError) as err:
        server.infer(make_request())
    assert err.value.code == code
    assert err.value.message.startswith(message)


async def test_input_count_dtype_and_batch_size_messages(repo, make_server):
    write_model(repo, "add_sub", ADD_SUB)
    server = await make_server()
    req = add_sub_request([1] * 4, [1] * 4)
    del req.inputs["INPUT0"]
    with pytest.raises(TritonError) as err:
        server.infer(req)
    assert err.value.message == (
        "[request id: <id_unknown>] expected 2 inputs but got 1 inputs for model 'add_sub'. "
        "Got input(s) ['INPUT1'], but missing required input(s) ['INPUT0']. "
        "Please provide all required input(s)."
    )
    req = add_sub_request([1] * 4, [1] * 4, rid="7")
    req.inputs["INPUT0"] = Tensor("INPUT0", "INT32", np.ones((1, 4), dtype=np.int32))
    with pytest.raises(TritonError) as err:
        server.infer(req)
    assert err.value.message == (
        "[request id: 7] inference input 'INPUT0' data-type is 'INT32', but model 'add_sub' "
        "expects 'FP32'"
    )
    req = add_sub_request([1] * 4, [1] * 4)
    req.inputs["EXTRA"] = req.inputs.pop("INPUT1")
    with pytest.raises(TritonError) as err:
        server.infer(req)
    assert err.value.message == "unexpected inference input 'EXTRA' for model 'add_sub'"
    big = np.ones((9, 4), dtype=np.float32)
    req = InferenceRequest(
        "add_sub",
        inputs={"INPUT0": Tensor("INPUT0", "FP32", big), "INPUT1": Tensor("INPUT1", "FP32", big)},
    )
    with pytest.raises(TritonError) as err:
        server.infer(req)
    assert err.value.message == (
        "[request id: <id_unknown>] inference request batch-size must be <= 8 for 'add_sub'"
    )


async def test_optional_input_and_reshape(repo, make_server):
    config = IDENTITY.replace(
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 2 ] } ]',
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 2 ] reshape: { shape: [ 1, 2 ] } },'
        ' { name: "OPT" data_type: TYPE_FP32 dims: [ 1 ] optional: true } ]',
    )
    assert "OPT" in config
    write_model(repo, "identity", config)
    server = await make_server()
    [resp] = await collect(server, identity_request(3))
    assert resp.error is None
    assert resp.outputs[0].shape == [3, 1, 2]  # the backend saw the reshaped input


async def test_statistics(repo, make_server):
    write_model(repo, "add_sub", ADD_SUB)
    server = await make_server()
    for _ in range(3):
        await collect(server, add_sub_request([1] * 4, [2] * 4))
    [stats] = server.statistics("add_sub")["model_stats"]
    assert stats["name"] == "add_sub" and stats["version"] == "1"
    assert stats["inference_count"] == 3 and stats["execution_count"] == 3
    inf = stats["inference_stats"]
    assert inf["success"]["count"] == 3 and inf["fail"]["count"] == 0
    assert inf["compute_input"] == {"count": 3, "ns": 3000}
    assert inf["compute_output"] == {"count": 3, "ns": 6000}
    assert inf["queue"]["count"] == 3
    assert stats["batch_stats"][0]["batch_size"] == 1
    assert stats["batch_stats"][0]["compute_infer"]["count"] == 3
    assert stats["last_inference"] > 1_600_000_000_000
    assert server.statistics()["model_stats"][0]["name"] == "add_sub"
    with pytest.raises(TritonError) as err:
        server.statistics("nope")
    assert err.value.message == "requested model 'nope' is not available"
    snap = server.stats_snapshot()
    assert [(s.name, s.version, s.success.count, s.pending_count) for s in snap] == [
        ("add_sub", 1, 3, 0)
    ]


async def test_statistics_count_model_errors_as_successes(repo, make_server):
    """Triton 2.51: a model's own error response is a success, an exception in execute a
    failure; both are executions, only successes are inferences."""
    write_model(repo, "add_sub", ADD_SUB)
    server = await make_server()
    for first in (1, -1, -2):
        [resp] = await collect(server, add_sub_request([first] * 4, [2] * 4))
        assert (resp.error is None) == (first == 1)
    [stats] = server.statistics("add_sub")["model_stats"]
    assert stats["execution_count"] == 3 and stats["inference_count"] == 2
    inf = stats["inference_stats"]
    assert inf["success"]["count"] == 2 and inf["fail"]["count"] == 1
    assert inf["compute_infer"]["count"] == 2
    assert stats["batch_stats"][0]["compute_infer"]["count"] == 3


async def test_strict_readiness_and_exit_on_error(repo, make_server):
    write_model(repo, "add_sub", ADD_SUB)
    write_model(
        repo, "broken", ADD_SUB, extra='parameters { key: "fail_load" value { string_value: "1" } }'
    )
    with pytest.raises(TritonError, match="failed on purpose"):
        await make_server(exit_on_error=True)
    server = await make_server(exit_on_error=False)
    assert server.model_ready("add_sub") and not server.model_ready("broken")
    assert not server.is_ready()  # strict readiness
    lenient = await make_server(exit_on_error=False, strict_readiness=False)
    assert lenient.is_ready()
    entries = {e["name"]: e for e in server.repository_index()}
    assert entries["broken"]["state"] == "UNAVAILABLE"
    assert "failed on purpose" in entries["broken"]["reason"]
    with pytest.raises(TritonError) as err:
        server.infer(add_sub_request([1] * 4, [1] * 4, model="broken"))
    assert err.value.code == ErrorCode.NOT_FOUND  # Triton 2.51 answers 404 here
    assert err.value.message == "Request for unknown model: 'broken' has no available versions"


async def test_stop_drains_in_flight_then_refuses(repo, make_server, factory):
    write_model(
        repo,
        "identity",
        IDENTITY,
        extra='parameters { key: "delay_ms" value { string_value: "100" } }',
    )
    server = await make_server()
    task = asyncio.create_task(collect(server, identity_request(1)))
    await asyncio.sleep(0.02)
    await server.stop(timeout_s=5)
    [resp] = await task
    assert resp.error is None
    assert factory.backends[0].unloaded
    assert not server.is_ready()
    with pytest.raises(TritonError) as err:
        server.infer(identity_request(1))
    assert err.value.code == ErrorCode.UNAVAILABLE


async def test_model_control_none_refuses_load(repo, make_server):
    write_model(repo, "add_sub", ADD_SUB)
    server = await make_server(model_control_mode="none")
    for call in (server.load_model("add_sub"), server.unload_model("add_sub")):
        with pytest.raises(TritonError) as err:
            await call
        assert err.value.code == ErrorCode.UNAVAILABLE
        assert (
            err.value.message == "explicit model load / unload is not allowed if polling is enabled"
        )


async def test_settings(repo, make_server):
    server = await make_server()
    logs = server.log_settings()
    assert logs == {
        "log_file": "",
        "log_info": True,
        "log_warning": True,
        "log_error": True,
        "log_verbose_level": 0,
        "log_format": "default",
    }
    assert server.update_log_settings({"log_verbose_level": 1})["log_verbose_level"] == 1
    with pytest.raises(TritonError) as err:
        server.update_log_settings({"bogus": 1})
    assert err.value.code == ErrorCode.INVALID_ARG
    with pytest.raises(TritonError):
        server.update_log_settings({"log_info": "yes"})
    assert server.trace_settings() == {
        "trace_file": "",
        "trace_level": ["OFF"],
        "trace_rate": "1000",
        "trace_count": "-1",
        "log_frequency": "0",
        "trace_mode": "triton",
    }
    assert server.update_trace_settings({"trace_rate": 10})["trace_rate"] == "10"
    with pytest.raises(TritonError):
        server.update_trace_settings({"trace_level": ["LOUD"]})
    with pytest.raises(TritonError):
        server.update_trace_settings({"nope": "1"})


async def test_backend_failure_marks_model_unavailable(repo, make_server, factory):
    """A model whose stub died is UNAVAILABLE with the reason; others keep serving."""
    write_model(repo, "add_sub", ADD_SUB)
    write_model(repo, "identity", IDENTITY)
    server = await make_server()
    [backend] = [b for b in factory.backends if b.context.model_name == "identity"]
    backend.context.report_failure("stub process for instance identity_0_0 died")
    assert not server.model_ready("identity")
    assert server.model_ready("add_sub")
    assert not server.is_ready()  # strict readiness
    [entry] = [e for e in server.repository_index() if e["name"] == "identity"]
    assert entry == {
        "name": "identity",
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "stub process for instance identity_0_0 died",
    }
