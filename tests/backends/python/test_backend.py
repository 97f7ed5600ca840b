"""PythonBackend through the Backend protocol, with real stub processes."""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
import pytest
from tests.backends.python.conftest import (
    EXAMPLES,
    TEST_MODELS,
    LocalServer,
    collect,
    infer,
    outputs_of,
    pid_alive,
    shm_files,
    tensor,
)

from tritium.server.errors import ErrorCode, TritonError
from tritium.server.types import InferenceRequest


async def test_add_sub_batch_of_requests(server: LocalServer) -> None:
    await server.load(EXAMPLES / "add_sub")
    requests = [
        InferenceRequest(
            model_name="add_sub",
            inputs={
                "INPUT0": tensor("INPUT0", np.full((1, 4), i, np.float32)),
                "INPUT1": tensor("INPUT1", np.arange(4, dtype=np.float32).reshape(1, 4)),
            },
        )
        for i in range(3)
    ]
    timings = await server.execute("add_sub", requests)
    assert len(timings) == 3
    assert all(t.compute_infer_ns > 0 for t in timings)
    for i, request in enumerate(requests):
        (response,) = await collect(request)
        out = outputs_of(response)
        assert out["OUTPUT0"].dtype == np.float32
        np.testing.assert_array_equal(out["OUTPUT0"], [[i, i + 1, i + 2, i + 3]])
        np.testing.assert_array_equal(out["OUTPUT1"], [[i, i - 1, i - 2, i - 3]])
        assert response.final


async def test_only_requested_outputs_come_back(server: LocalServer) -> None:
    await server.load(EXAMPLES / "add_sub")
    ones = np.ones((1, 4), np.float32)
    (response,) = await infer(
        server, "add_sub", {"INPUT0": ones, "INPUT1": ones}, outputs=["OUTPUT1"]
    )
    assert list(outputs_of(response)) == ["OUTPUT1"]


async def test_request_fields_args_and_sibling_import(server: LocalServer) -> None:
    await server.load(TEST_MODELS / "surface")
    (response,) = await infer(
        server,
        "surface",
        {"A": np.array([1, 2, 3], np.int64)},
        id="req-7",
        correlation_id=42,
        flags=1,
        parameters={"temperature": "0.5", "n": 2},
    )
    out = outputs_of(response)
    info = json.loads(out["INFO"][0])
    np.testing.assert_array_equal(out["DOUBLED"], [2, 4, 6])
    assert info["request_id"] == "req-7"
    assert info["correlation_id"] == 42
    assert info["flags"] == 1
    assert info["parameters"] == {"temperature": "0.5", "n": 2}
    assert sorted(info["requested"]) == ["DOUBLED", "INFO"]
    assert info["a_dtype"] == 9  # TRITONSERVER_TYPE_INT64
    assert info["a_shape"] == [3]
    assert info["b_present"] is False
    assert info["writable"] is True
    assert info["args"] == {
        "model_instance_kind": "CPU",
        "model_instance_name": "surface_0_0",
        "model_instance_device_id": "0",
        "model_repository": str(TEST_MODELS / "surface"),
        "model_version": "1",
        "model_name": "surface",
    }
    assert info["max_batch_size"] == 0
    assert info["greeting"] == "hello"
    assert info["model_dir"] == str(TEST_MODELS / "surface")
    assert info["helper"] == "helper module"
    assert response.parameters == {"answered_by": "surface_0_0"}


async def test_bytes_tensors_round_trip(server: LocalServer) -> None:
    await server.load(EXAMPLES / "string_identity")
    values = np.array(
        [b"hello", b"", "naïve".encode(), b"\x00\x01binary\x00", b"x" * 100_000], dtype=np.object_
    )  # the last forces shared memory
    (response,) = await infer(server, "string_identity", {"INPUT0": values})
    out = outputs_of(response)["OUTPUT0"]
    assert out.dtype == np.object_
    assert list(out) == list(values)


async def test_large_tensor_through_shared_memory(server: LocalServer) -> None:
    await server.load(TEST_MODELS / "identity")
    data = np.random.default_rng(0).random(16 * 1024 * 1024, dtype=np.float32)  # 64 MiB
    (response,) = await infer(server, "identity", {"INPUT0": data})
    out = outputs_of(response)
    np.testing.assert_array_equal(out["OUTPUT0"], data)
    assert out["SUM"][0] == data.sum(dtype=np.float64)
    assert shm_files() == []  # every segment was consumed and unlinked


async def test_async_execute_and_logger(server: LocalServer, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG, logger="tritium.backends.python")
    await server.load(EXAMPLES / "async_model")
    (response,) = await infer(server, "async_model", {"INPUT0": np.array([1.5, -2], np.float32)})
    np.testing.assert_array_equal(outputs_of(response)["OUTPUT0"], [3.0, -4.0])
    logged = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.INFO, "async_model_0_0: initialized async_model_0_0") in logged
    assert (logging.DEBUG, "async_model_0_0: processed 2 elements") in logged


async def test_exception_in_execute_fails_the_batch(server: LocalServer) -> None:
    await server.load(EXAMPLES / "raises")
    (response,) = await infer(server, "raises", {"INPUT0": np.array([-5], np.int32)})
    assert response.final and response.outputs == []
    error = response.error
    # INTERNAL, as in Triton (HTTP 500, gRPC INTERNAL)
    assert error is not None and error.code == ErrorCode.INTERNAL
    assert error.message.startswith(
        "Failed to process the request(s) for model 'raises_0_0', message: "
        "ValueError: negative input: [-5]"
    )
    assert "At:" in error.message and "model.py" in error.message and "execute" in error.message
    # The instance keeps serving after a model exception.
    (ok,) = await infer(server, "raises", {"INPUT0": np.array([7], np.int32)})
    np.testing.assert_array_equal(outputs_of(ok)["OUTPUT0"], [7])


async def test_error_response_carries_message_and_code(server: LocalServer) -> None:
    await server.load(EXAMPLES / "raises")
    (response,) = await infer(server, "raises", {"INPUT0": np.array([0], np.int32)})
    assert response.error is not None
    assert response.error.message == "zero is not allowed"
    assert response.error.code == ErrorCode.INVALID_ARG


async def test_initialize_failure_fails_the_load_without_leaks() -> None:
    local = LocalServer()
    with pytest.raises(TritonError) as caught:
        await local.load(TEST_MODELS / "init_fails")
    assert "RuntimeError: cannot find the weights" in caught.value.message
    assert "initialize" in caught.value.message
    assert local.backends == {}
    assert shm_files() == []


async def test_decoupled_responses_in_order_with_final_flag(server: LocalServer) -> None:
    await server.load(EXAMPLES / "repeat_decoupled")
    values = np.array([4, 2, 0, 9], np.int32)
    responses = await infer(server, "repeat_decoupled", {"IN": values})
    assert [r.final for r in responses] == [False] * 4 + [True]
    assert responses[-1].outputs == [] and responses[-1].error is None  # flag-only final
    assert [int(outputs_of(r)["OUT"][0]) for r in responses[:-1]] == [4, 2, 0, 9]
    assert [int(outputs_of(r)["IDX"][0]) for r in responses[:-1]] == [0, 1, 2, 3]


async def test_cancellation_reaches_the_model(server: LocalServer) -> None:
    await server.load(EXAMPLES / "repeat_decoupled")
    request = InferenceRequest(
        model_name="repeat_decoupled",
        inputs={
            "IN": tensor("IN", np.arange(50, dtype=np.int32)),
            "DELAY": tensor("DELAY", np.full(50, 50, np.uint32)),
        },
    )
    execution = asyncio.create_task(server.execute("repeat_decoupled", [request]))
    first = await asyncio.wait_for(request.responses.get(), 30)
    assert first.error is None and not first.final
    request.cancel()
    rest = await collect(request)
    await execution
    assert len(rest) < 49  # it stopped early
    assert rest[-1].final
    assert rest[-1].error is not None and rest[-1].error.code == ErrorCode.CANCELLED


async def test_two_instances_execute_in_parallel(server: LocalServer) -> None:
    backend = await server.load(TEST_MODELS / "sleepy")
    assert backend.instance_count == 2
    assert backend.instance_names() == ["sleepy_0_0", "sleepy_0_1"]
    requests = [
        InferenceRequest(
            model_name="sleepy", inputs={"DELAY_MS": tensor("DELAY_MS", np.array([500], np.int32))}
        )
        for _ in range(2)
    ]
    await asyncio.gather(
        *(server.execute("sleepy", [r], instance=i) for i, r in enumerate(requests))
    )
    spans = []
    pids = set()
    for request in requests:
        (response,) = await collect(request)
        out = outputs_of(response)
        spans.append((int(out["START_NS"][0]), int(out["END_NS"][0])))
        pids.add(int(out["PID"][0]))
    (start0, end0), (start1, end1) = spans
    assert start0 < end1 and start1 < end0  # the two executions overlapped in time
    assert len(pids) == 2


async def test_bls_calls_another_model(server: LocalServer) -> None:
    await server.load(EXAMPLES / "add_sub")
    await server.load(EXAMPLES / "bls_add_sub")
    a = np.array([1, 2, 3, 4], np.float32)
    b = np.array([10, 20, 30, 40], np.float32)
    (response,) = await infer(server, "bls_add_sub", {"INPUT0": a, "INPUT1": b})
    out = outputs_of(response)
    np.testing.assert_array_equal(out["OUTPUT0"], a + b)
    np.testing.assert_array_equal(out["OUTPUT1"], a - b)


async def test_decoupled_bls_and_model_control(server: LocalServer) -> None:
    await server.load(EXAMPLES / "repeat_decoupled")
    await server.load(TEST_MODELS / "bls_stream")
    (response,) = await infer(server, "bls_stream", {"IN": np.array([3, 4, 5], np.int32)})
    out = outputs_of(response)
    assert int(out["SUM"][0]) == 12
    assert int(out["COUNT"][0]) == 3
    # ready(repeat_decoupled), ready(nope), ready(add_sub) after load_model, after
    # unload_model, and load_model("nope") failing
    assert out["READY"].tolist() == [True, False, True, False, True]
    assert "add_sub" not in server.backends
    assert out["MISSING_ERROR"][0] == b"Request for unknown model: 'no_such_model' is not found"


async def test_unload_stops_every_stub() -> None:
    local = LocalServer()
    backend = await local.load(TEST_MODELS / "sleepy")
    pids = backend.instance_pids()
    assert len(pids) == 2 and all(pid_alive(pid) for pid in pids)
    await local.close()
    assert not any(pid_alive(pid) for pid in pids)
    assert shm_files() == []
    assert local.failures["sleepy"] == []  # an unload is not a failure


async def test_async_decoupled_streams_and_errors(server: LocalServer) -> None:
    await server.load(TEST_MODELS / "async_decoupled")
    responses = await infer(server, "async_decoupled", {"N": np.array([3], np.int32)})
    assert [int(outputs_of(r)["I"][0]) for r in responses[:-1]] == [0, 1, 2]
    assert responses[-1].final and responses[-1].outputs == [] and responses[-1].error is None

    broken = await infer(server, "async_decoupled", {"N": np.array([-2], np.int32)})
    assert int(outputs_of(broken[0])["I"][0]) == 0
    assert broken[-1].final and broken[-1].error is not None
    assert "RuntimeError: stream broke" in broken[-1].error.message
