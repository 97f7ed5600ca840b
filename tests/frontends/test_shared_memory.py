"""System shared memory against a real `tritium serve`, with tritonclient's shm utilities."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from serving import RunningServer

NBYTES = 16  # FP32 [1, 4]


@pytest.fixture
def regions(server: RunningServer) -> Iterator[dict[str, object]]:
    """Input region (two tensors) and output region (two tensors), unregistered after."""
    tag = f"{os.getpid()}_{id(server)}"
    ip = shm.create_shared_memory_region("in_data", f"/tritium_in_{tag}", 2 * NBYTES)
    op = shm.create_shared_memory_region("out_data", f"/tritium_out_{tag}", 2 * NBYTES)
    a = np.arange(4, dtype=np.float32).reshape(1, 4)
    b = np.full((1, 4), 2, dtype=np.float32)
    shm.set_shared_memory_region(ip, [a, b])
    yield {"in": ip, "out": op, "in_key": f"/tritium_in_{tag}", "out_key": f"/tritium_out_{tag}",
           "a": a, "b": b}  # fmt: skip
    httpclient.InferenceServerClient(server.http).unregister_system_shared_memory()
    shm.destroy_shared_memory_region(ip)
    shm.destroy_shared_memory_region(op)


def _io(mod, regions):  # type: ignore[no-untyped-def]
    inputs = [mod.InferInput("INPUT0", [1, 4], "FP32"), mod.InferInput("INPUT1", [1, 4], "FP32")]
    inputs[0].set_shared_memory("in_data", NBYTES)
    inputs[1].set_shared_memory("in_data", NBYTES, offset=NBYTES)
    outputs = [mod.InferRequestedOutput("OUTPUT0"), mod.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("out_data", NBYTES)
    outputs[1].set_shared_memory("out_data", NBYTES, offset=NBYTES)
    return inputs, outputs


def _check_outputs(result, regions) -> None:  # type: ignore[no-untyped-def]
    a, b, op = regions["a"], regions["b"], regions["out"]
    out0 = result.get_output("OUTPUT0")
    out1 = result.get_output("OUTPUT1")
    for out, offset, want in ((out0, 0, a + b), (out1, NBYTES, a - b)):
        shape = out["shape"] if isinstance(out, dict) else list(out.shape)
        params = out["parameters"] if isinstance(out, dict) else out.parameters
        assert shape == [1, 4]
        got = shm.get_contents_as_numpy(op, np.float32, shape, offset=offset)
        np.testing.assert_array_equal(got, want)
        if isinstance(out, dict):
            assert "data" not in out
            assert params["shared_memory_region"] == "out_data"
        else:
            assert params["shared_memory_region"].string_param == "out_data"


def test_http_infer_through_shm(server: RunningServer, regions: dict) -> None:
    client = httpclient.InferenceServerClient(server.http)
    client.register_system_shared_memory("in_data", regions["in_key"], 2 * NBYTES)
    client.register_system_shared_memory("out_data", regions["out_key"], 2 * NBYTES)
    assert "system_shared_memory" in client.get_server_metadata()["extensions"]
    inputs, outputs = _io(httpclient, regions)
    result = client.infer("add_sub", inputs, outputs=outputs)
    _check_outputs(result, regions)


def test_grpc_infer_through_shm(server: RunningServer, regions: dict) -> None:
    client = grpcclient.InferenceServerClient(server.grpc)
    client.register_system_shared_memory("in_data", regions["in_key"], 2 * NBYTES)
    client.register_system_shared_memory("out_data", regions["out_key"], 2 * NBYTES)
    inputs, outputs = _io(grpcclient, regions)
    result = client.infer("add_sub", inputs, outputs=outputs)
    _check_outputs(result, regions)
    assert len(result.get_response().raw_output_contents) == 0


def test_shm_input_with_regular_output(server: RunningServer, regions: dict) -> None:
    client = grpcclient.InferenceServerClient(server.grpc)
    client.register_system_shared_memory("in_data", regions["in_key"], 2 * NBYTES)
    inputs, _ = _io(grpcclient, regions)
    result = client.infer("add_sub", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), regions["a"] + regions["b"])


def test_status_and_unregister(server: RunningServer, regions: dict) -> None:
    http = httpclient.InferenceServerClient(server.http)
    grpc = grpcclient.InferenceServerClient(server.grpc)
    http.register_system_shared_memory("in_data", regions["in_key"], NBYTES, offset=NBYTES)
    grpc.register_system_shared_memory("out_data", regions["out_key"], 2 * NBYTES)
    status = {r["name"]: r for r in http.get_system_shared_memory_status()}
    assert status["in_data"] == {"name": "in_data", "key": regions["in_key"], "offset": NBYTES,
                                 "byte_size": NBYTES}  # fmt: skip
    assert set(status) == {"in_data", "out_data"}
    one = grpc.get_system_shared_memory_status("out_data")
    assert one.regions["out_data"].byte_size == 2 * NBYTES
    grpc.unregister_system_shared_memory("out_data")
    assert [r["name"] for r in http.get_system_shared_memory_status()] == ["in_data"]
    http.unregister_system_shared_memory()
    assert http.get_system_shared_memory_status() == []
    with pytest.raises(InferenceServerException, match="Unable to find system shared memory"):
        http.get_system_shared_memory_status("in_data")


def test_errors(server: RunningServer, regions: dict) -> None:
    http = httpclient.InferenceServerClient(server.http)
    grpc = grpcclient.InferenceServerClient(server.grpc)
    http.register_system_shared_memory("in_data", regions["in_key"], 2 * NBYTES)
    with pytest.raises(InferenceServerException) as e:
        http.register_system_shared_memory("in_data", regions["in_key"], NBYTES)
    assert e.value.message() == "shared memory region 'in_data' already in manager"
    with pytest.raises(InferenceServerException) as e:
        grpc.register_system_shared_memory("in_data", regions["in_key"], NBYTES)
    assert e.value.status() == "StatusCode.ALREADY_EXISTS"
    with pytest.raises(InferenceServerException) as e:
        http.register_system_shared_memory("x", "/tritium_no_such_key", NBYTES)
    assert e.value.message() == "Unable to open shared memory region: '/tritium_no_such_key'"
    with pytest.raises(InferenceServerException, match="Unable to open shared memory region"):
        grpc.register_system_shared_memory("x", "/tritium_no_such_key", NBYTES)
    with pytest.raises(InferenceServerException, match="CUDA shared memory is not supported"):
        grpc.register_cuda_shared_memory("c", b"", 0, NBYTES)

    # Output region too small for the result.
    http.register_system_shared_memory("out_data", regions["out_key"], 8)
    for mod, client in ((httpclient, http), (grpcclient, grpc)):
        inputs = [
            mod.InferInput("INPUT0", [1, 4], "FP32"),
            mod.InferInput("INPUT1", [1, 4], "FP32"),
        ]
        inputs[0].set_shared_memory("in_data", NBYTES)
        inputs[1].set_shared_memory("in_data", NBYTES, offset=NBYTES)
        out = mod.InferRequestedOutput("OUTPUT0")
        out.set_shared_memory("out_data", 8)
        with pytest.raises(InferenceServerException) as e:
            client.infer("add_sub", inputs, outputs=[out])
        assert e.value.message() == (
            "shared memory size specified with the request for output 'OUTPUT0' (8 bytes) "
            "should be at least 16 bytes to hold the results"
        )
        # An input whose byte size does not match its shape.
        inputs[0].set_shared_memory("in_data", 8)
        with pytest.raises(InferenceServerException, match="input byte size mismatch"):
            client.infer("add_sub", inputs)
        # A span past the region's end.
        inputs[0].set_shared_memory("in_data", NBYTES, offset=2 * NBYTES - 4)
        with pytest.raises(InferenceServerException, match="Invalid offset"):
            client.infer("add_sub", inputs)
