"""The gRPC frontend against a real `tritium serve`: tritonclient.grpc and .grpc.aio."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from serving import RunningServer

A = np.arange(4, dtype=np.float32).reshape(1, 4)
B = np.full((1, 4), 2.0, dtype=np.float32)


def _add_sub_inputs(mod: object = grpcclient) -> list:
    i0 = mod.InferInput("INPUT0", [1, 4], "FP32")  # type: ignore[attr-defined]
    i0.set_data_from_numpy(A)
    i1 = mod.InferInput("INPUT1", [1, 4], "FP32")  # type: ignore[attr-defined]
    i1.set_data_from_numpy(B)
    return [i0, i1]


@pytest.fixture
def client(server: RunningServer) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc)


def test_health_metadata_config(
    server: RunningServer, client: grpcclient.InferenceServerClient
) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("add_sub")
    assert not client.is_model_ready("nope")  # OK with ready=false, not an error
    assert client.get_server_metadata().name == "triton"
    meta = client.get_model_metadata("add_sub")
    assert meta.platform == "python" and list(meta.inputs[0].shape) == [-1, 4]
    assert client.get_model_config("add_sub").config.max_batch_size == 8
    with grpc.insecure_channel(server.grpc) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_infer_raw_contents(client: grpcclient.InferenceServerClient) -> None:
    result = client.infer("add_sub", _add_sub_inputs(), request_id="g1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)
    assert result.get_response().id == "g1"
    only = client.infer(
        "add_sub", _add_sub_inputs(), outputs=[grpcclient.InferRequestedOutput("OUTPUT1")]
    )
    assert only.as_numpy("OUTPUT0") is None


def test_infer_typed_contents(client: grpcclient.InferenceServerClient) -> None:
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name="add_sub")
    for name, value in (("INPUT0", A), ("INPUT1", B)):
        t = request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
        t.contents.fp32_contents.extend(value.reshape(-1).tolist())
    with grpc.insecure_channel(client._channel._channel.target().decode()) as channel:
        reply = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    out = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32).reshape(1, 4)
    np.testing.assert_array_equal(out, A + B)


def test_bytes_round_trip(client: grpcclient.InferenceServerClient) -> None:
    data = np.array([b"a", b"", b"xyz"], dtype=np.object_)
    i = grpcclient.InferInput("INPUT0", [3], "BYTES")
    i.set_data_from_numpy(data)
    assert client.infer("string_identity", [i]).as_numpy("OUTPUT0").tolist() == data.tolist()


@pytest.mark.parametrize(
    "model,status,fragment",
    [
        ("nope", grpc.StatusCode.NOT_FOUND, "Request for unknown model: 'nope' is not found"),
        ("repeat_decoupled", grpc.StatusCode.UNIMPLEMENTED, "decoupled transaction policy"),
    ],
)
def test_infer_errors(
    client: grpcclient.InferenceServerClient, model: str, status: grpc.StatusCode, fragment: str
) -> None:
    with pytest.raises(InferenceServerException) as e:
        client.infer(model, _add_sub_inputs())
    assert e.value.status() == str(status)
    assert fragment in e.value.message()


def test_invalid_argument(client: grpcclient.InferenceServerClient) -> None:
    i0 = grpcclient.InferInput("INPUT0", [1, 3], "FP32")
    i0.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        client.infer("add_sub", [i0, _add_sub_inputs()[1]])
    assert e.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert "unexpected shape for input 'INPUT0'" in e.value.message()


def test_statistics_repository_settings(client: grpcclient.InferenceServerClient) -> None:
    def count() -> int:
        return client.get_inference_statistics("add_sub").model_stats[0].inference_count

    before = count()
    client.infer("add_sub", _add_sub_inputs())
    # Statistics update when execute() returns, which may be after the client has its
    # response: poll for the count, with a deadline.
    deadline = time.monotonic() + 10
    while count() != before + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert count() == before + 1
    states = {m.name: m.state for m in client.get_model_repository_index().models}
    assert states["add_sub"] == "READY"
    assert client.get_system_shared_memory_status().regions == {}
    assert "log_info" in client.get_log_settings().settings
    assert "trace_rate" in client.get_trace_settings().settings


def _decoupled_request(values: list[int], request_id: str, delay_ms: int = 0) -> dict:
    i = aioclient.InferInput("IN", [len(values)], "INT32")
    i.set_data_from_numpy(np.array(values, dtype=np.int32))
    d = aioclient.InferInput("DELAY", [len(values)], "UINT32")
    d.set_data_from_numpy(np.full(len(values), delay_ms, dtype=np.uint32))
    return {"model_name": "repeat_decoupled", "inputs": [i, d], "request_id": request_id}


async def test_stream_infer_interleaves_decoupled_responses(server: RunningServer) -> None:
    client = aioclient.InferenceServerClient(server.grpc)

    async def requests():
        yield _decoupled_request([1, 2, 3], "a", delay_ms=50)
        yield _decoupled_request([10, 20, 30], "b", delay_ms=50)
        yield {"model_name": "add_sub", "inputs": _add_sub_inputs(aioclient), "request_id": "c"}
        yield {"model_name": "nope", "inputs": _add_sub_inputs(aioclient), "request_id": "d"}

    seen: dict[str, list] = {"a": [], "b": [], "c": []}
    errors: list[str] = []
    order: list[str] = []
    async for result, error in client.stream_infer(requests()):
        if error is not None:
            errors.append(str(error))
        else:
            response = result.get_response()
            final = response.parameters["triton_final_response"].bool_param
            order.append(response.id)
            if response.id == "c":
                seen["c"].append((result.as_numpy("OUTPUT0").tolist(), final))
            else:
                seen[response.id].append((int(result.as_numpy("OUT")[0]), final))
        if len(seen["a"]) == 3 and len(seen["b"]) == 3 and seen["c"] and errors:
            break
    await client.close()
    assert seen["a"] == [(1, False), (2, False), (3, False)]
    assert seen["b"] == [(10, False), (20, False), (30, False)]
    assert seen["c"] == [((A + B).tolist(), True)]
    assert any("Request for unknown model: 'nope'" in e for e in errors)
    first_b = order.index("b")
    assert any(i > first_b for i, rid in enumerate(order) if rid == "a")  # interleaved


def test_stream_empty_final_response_on_request(server: RunningServer) -> None:
    import queue

    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    i = grpcclient.InferInput("IN", [1], "INT32")
    i.set_data_from_numpy(np.array([5], dtype=np.int32))
    client.async_stream_infer(
        "repeat_decoupled", [i], request_id="e", enable_empty_final_response=True
    )
    finals = []
    while not finals or not finals[-1][1]:
        result, error = results.get(timeout=30)
        assert error is None
        response = result.get_response()
        final = response.parameters["triton_final_response"].bool_param
        finals.append((len(response.outputs), final, response.id))
    client.stop_stream()
    assert finals == [(2, False, "e"), (0, True, "e")]


async def test_stream_cancellation_reaches_the_model(server: RunningServer) -> None:
    sync = grpcclient.InferenceServerClient(server.grpc)

    def failures() -> int:
        return (
            sync.get_inference_statistics("repeat_decoupled")
            .model_stats[0]
            .inference_stats.fail.count
        )

    before = failures()
    client = aioclient.InferenceServerClient(server.grpc)

    async def requests():
        yield _decoupled_request([1, 2, 3, 4, 5], "slow", delay_ms=400)
        await asyncio.sleep(30)

    async for _result, error in client.stream_infer(requests()):
        assert error is None
        break  # cancel the stream after the first response
    await client.close()
    for _ in range(150):
        if failures() > before:
            break
        await asyncio.sleep(0.1)
    assert failures() == before + 1
