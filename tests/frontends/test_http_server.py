"""The HTTP frontend against a real `tritium serve`, through tritonclient.http and httpx."""

from __future__ import annotations

import gzip
import json
import struct
import threading
import time

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from serving import RunningServer

from .conftest import MAX_INPUT_SIZE

A = np.arange(4, dtype=np.float32).reshape(1, 4)
B = np.full((1, 4), 2.0, dtype=np.float32)


def add_sub_body(**overrides: object) -> dict:
    body: dict = {
        "inputs": [
            {"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": A.tolist()},
            {"name": "INPUT1", "shape": [1, 4], "datatype": "FP32", "data": B.reshape(-1).tolist()},
        ]
    }
    body.update(overrides)
    return body


def _inputs(binary: bool) -> list[httpclient.InferInput]:
    i0 = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    i0.set_data_from_numpy(A, binary_data=binary)
    i1 = httpclient.InferInput("INPUT1", [1, 4], "FP32")
    i1.set_data_from_numpy(B, binary_data=binary)
    return [i0, i1]


# -- health, metadata, config ----------------------------------------------------------------
def test_health_and_server_metadata(server: RunningServer, http: httpx.Client) -> None:
    for path in ("/v2/health/live", "/v2/health/ready"):
        r = http.get(path)
        assert r.status_code == 200 and r.content == b""
    meta = http.get("/v2").json()
    assert meta["name"] == "triton" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_and_config(http: httpx.Client) -> None:
    meta = http.get("/v2/models/add_sub").json()
    assert meta["name"] == "add_sub" and meta["versions"] == ["1"] and meta["platform"] == "python"
    assert meta["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}
    assert http.get("/v2/models/add_sub/versions/1").json() == meta
    config = http.get("/v2/models/add_sub/config").json()
    assert config["max_batch_size"] == 8
    assert config["input"][0]["dims"] == [4]
    assert config["instance_group"][0]["name"] == "add_sub_0"


def test_model_ready(http: httpx.Client) -> None:
    assert http.get("/v2/models/add_sub/ready").status_code == 200
    r = http.get("/v2/models/nope/ready")
    assert r.status_code == 400 and r.json() == {"error": "Model version not ready"}
    assert http.get("/v2/models/add_sub/versions/abc/ready").status_code == 404


# -- inference through tritonclient -----------------------------------------------------------
@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_infer(server: RunningServer, binary: bool) -> None:
    client = httpclient.InferenceServerClient(server.http)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)]
    result = client.infer("add_sub", _inputs(binary), outputs=outputs, request_id="x1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    assert result.as_numpy("OUTPUT1") is None  # not requested
    assert result.get_response()["id"] == "x1"
    full = client.infer("add_sub", _inputs(binary))
    np.testing.assert_array_equal(full.as_numpy("OUTPUT1"), A - B)


@pytest.mark.parametrize("binary", [False, True])
def test_bytes_round_trip(server: RunningServer, binary: bool) -> None:
    client = httpclient.InferenceServerClient(server.http)
    data = np.array([b"hello", b"", "wörld".encode()], dtype=np.object_)
    i = httpclient.InferInput("INPUT0", [3], "BYTES")
    i.set_data_from_numpy(data, binary_data=binary)
    out = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)]
    result = client.infer("string_identity", [i], outputs=out)
    got = [x if isinstance(x, bytes) else x.encode() for x in result.as_numpy("OUTPUT0").tolist()]
    assert got == data.tolist()  # JSON outputs come back as str, binary ones as bytes


def test_gzip_request_and_response(server: RunningServer, http: httpx.Client) -> None:
    client = httpclient.InferenceServerClient(server.http)
    result = client.infer(
        "add_sub", _inputs(True),
        request_compression_algorithm="gzip", response_compression_algorithm="gzip",
    )  # fmt: skip
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    raw = gzip.compress(json.dumps(add_sub_body()).encode())
    r = http.post(
        "/v2/models/add_sub/infer", content=raw,
        headers={"Content-Encoding": "gzip", "Accept-Encoding": "gzip"},
    )  # fmt: skip
    assert r.status_code == 200
    assert r.json()["outputs"][0]["data"] == (A + B).reshape(-1).tolist()
    # a response of 500 bytes or more is gzipped for a client that accepts it
    text = "x" * 600
    body = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": [text]}]}
    for path in ("/v2/models/string_identity/infer", "/v2/models/string_identity/versions/1/infer"):
        r = http.post(path, json=body, headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
        assert r.json()["outputs"][0]["data"] == [text]
        r = http.post(path, json=body, headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in r.headers and r.json()["outputs"][0]["data"] == [text]


def test_concurrent_clients(server: RunningServer) -> None:
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            client = httpclient.InferenceServerClient(server.http)
            for j in range(5):
                a = np.full((1, 4), float(k * 10 + j), dtype=np.float32)
                i0 = httpclient.InferInput("INPUT0", [1, 4], "FP32")
                i0.set_data_from_numpy(a)
                i1 = httpclient.InferInput("INPUT1", [1, 4], "FP32")
                i1.set_data_from_numpy(B)
                r = client.infer("add_sub", [i0, i1])
                np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a + B)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# -- error cases (PROTOCOL.md section 1) -------------------------------------------------------
def _error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    doc = r.json()
    assert set(doc) == {"error"}
    return doc["error"]


def test_unknown_model_and_version(http: httpx.Client) -> None:
    msg = _error(http.post("/v2/models/nope/infer", json=add_sub_body()), 404)
    assert msg == "Request for unknown model: 'nope' is not found"
    msg = _error(http.post("/v2/models/add_sub/versions/2/infer", json=add_sub_body()), 404)
    assert "version 2 is not found" in msg
    assert _error(http.get("/v2/models/nope"), 404).startswith("Request for unknown model")


def test_wrong_datatype(http: httpx.Client) -> None:
    body = add_sub_body()
    body["inputs"][0].update(datatype="INT32", data=[0, 1, 2, 3])
    msg = _error(http.post("/v2/models/add_sub/infer", json=body), 400)
    assert (
        "inference input 'INPUT0' data-type is 'INT32', but model 'add_sub' expects 'FP32'" in msg
    )


def test_wrong_shape(http: httpx.Client) -> None:
    body = add_sub_body()
    body["inputs"][0].update(shape=[1, 3], data=[0.0, 1.0, 2.0])
    msg = _error(http.post("/v2/models/add_sub/infer", json=body), 400)
    assert (
        "unexpected shape for input 'INPUT0' for model 'add_sub'. Expected [-1,4], got [1,3]" in msg
    )


def test_missing_input(http: httpx.Client) -> None:
    body = add_sub_body()
    body["inputs"] = body["inputs"][1:]
    msg = _error(http.post("/v2/models/add_sub/infer", json=body), 400)
    assert "expected 2 inputs but got 1 inputs for model 'add_sub'" in msg


def test_unknown_output(http: httpx.Client) -> None:
    body = add_sub_body(outputs=[{"name": "BAD"}])
    msg = _error(http.post("/v2/models/add_sub/infer", json=body), 400)
    assert "unexpected inference output 'BAD' for model 'add_sub'" in msg


def test_bad_json_is_500(http: httpx.Client) -> None:
    msg = _error(http.post("/v2/models/add_sub/infer", content=b"{not json"), 500)
    assert msg.startswith("failed to parse the request JSON buffer")


def test_json_data_count_mismatch_is_500(http: httpx.Client) -> None:
    body = add_sub_body()
    body["inputs"][0]["data"] = [1.0, 2.0]
    msg = _error(http.post("/v2/models/add_sub/infer", json=body), 500)
    assert msg == "Unable to parse 'data': Shape does not match true shape of 'data' field"


def _binary_request(header: dict, raw: bytes) -> tuple[bytes, dict[str, str]]:
    h = json.dumps(header).encode()
    return h + raw, {"Inference-Header-Content-Length": str(len(h))}


def test_bad_binary_sizes(http: httpx.Client) -> None:
    header = add_sub_body()
    for io in header["inputs"]:
        del io["data"]
        io["parameters"] = {"binary_data_size": 16}
    body, headers = _binary_request(header, A.tobytes() + B.tobytes()[:8])
    msg = _error(http.post("/v2/models/add_sub/infer", content=body, headers=headers), 400)
    assert (
        msg
        == "unexpected size for input 'INPUT1', expecting 8 additional bytes for model 'add_sub'"
    )
    body, headers = _binary_request(header, A.tobytes() + B.tobytes() + b"xx")
    msg = _error(http.post("/v2/models/add_sub/infer", content=body, headers=headers), 400)
    assert msg == "unexpected additional input data for model 'add_sub'"
    header["inputs"][1]["parameters"]["binary_data_size"] = 12
    body, headers = _binary_request(header, A.tobytes() + B.tobytes()[:12])
    msg = _error(http.post("/v2/models/add_sub/infer", content=body, headers=headers), 400)
    assert (
        "input byte size mismatch for input 'INPUT1' for model 'add_sub'. Expected 16, got 12"
        in msg
    )


def test_bytes_with_a_bad_length_prefix(http: httpx.Client) -> None:
    raw = struct.pack("<I", 100) + b"short"
    header = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES",
                          "parameters": {"binary_data_size": len(raw)}}]}  # fmt: skip
    body, headers = _binary_request(header, raw)
    msg = _error(http.post("/v2/models/string_identity/infer", content=body, headers=headers), 400)
    # Triton's python backend message (the core lets an incomplete last element through)
    assert msg == (
        "incomplete string data for inference input 'INPUT0', expecting string of length 100 "
        "but only 5 bytes available"
    )


def test_oversized_body(http: httpx.Client) -> None:
    msg = _error(http.post("/v2/models/add_sub/infer", content=b" " * (MAX_INPUT_SIZE + 1)), 400)
    assert "exceeds the maximum allowed value" in msg and "--http-max-input-size" in msg


def test_decoupled_model_on_infer_is_501(http: httpx.Client) -> None:
    body = {"inputs": [{"name": "IN", "shape": [2], "datatype": "INT32", "data": [1, 2]}]}
    msg = _error(http.post("/v2/models/repeat_decoupled/infer", json=body), 501)
    assert msg == "HTTP end point doesn't support models with decoupled transaction policy"


@pytest.mark.parametrize(
    "params,fragment",
    [
        ({"triton_x": 1}, "parameter keys starting with 'triton_' are reserved"),
        ({"f": [1.5]}, "It should be either 'int', 'bool', or 'string'."),
    ],
)
def test_bad_request_parameters(http: httpx.Client, params: dict, fragment: str) -> None:
    msg = _error(http.post("/v2/models/add_sub/infer", json=add_sub_body(parameters=params)), 400)
    assert fragment in msg


def test_model_errors(http: httpx.Client) -> None:
    def body(v: int) -> dict:
        return {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "INT32", "data": [v]}]}

    assert http.post("/v2/models/raises/infer", json=body(3)).json()["outputs"][0]["data"] == [3]
    msg = _error(http.post("/v2/models/raises/infer", json=body(0)), 400)
    assert msg == "zero is not allowed"
    # an exception in execute() is INTERNAL, as in Triton
    msg = _error(http.post("/v2/models/raises/infer", json=body(-1)), 500)
    assert "Failed to process the request(s) for model 'raises_0_0', message: ValueError" in msg
    assert "Traceback" not in msg


def test_method_not_allowed_and_not_found(http: httpx.Client) -> None:
    assert _error(http.post("/v2/health/ready"), 405) == "Method Not Allowed"
    assert _error(http.get("/v2/models/add_sub/infer"), 405) == "Method Not Allowed"
    assert _error(http.get("/v2/nope"), 404) == "Not Found"
    assert _error(http.get("/v2/health/ready/"), 404) == "Not Found"


# -- generate extension ---------------------------------------------------------------------
def test_generate(http: httpx.Client) -> None:
    r = http.post(
        "/v2/models/add_sub/generate",
        json={"id": "g", "INPUT0": [1, 2, 3, 4], "INPUT1": [1, 1, 1, 1]},
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["id"] == "g" and doc["model_name"] == "add_sub" and doc["model_version"] == "1"
    assert doc["OUTPUT0"] == [2, 3, 4, 5] and doc["OUTPUT1"] == [0, 1, 2, 3]


def test_generate_needs_exactly_one_response(http: httpx.Client) -> None:
    r = http.post("/v2/models/repeat_decoupled/generate", json={"IN": [1, 2, 3]})
    assert r.status_code == 200
    assert r.json() == {
        "error": "generate expects model to produce exactly 1 response, use generate stream for "
        "model that generates various number of responses"
    }
    one = http.post("/v2/models/repeat_decoupled/generate", json={"IN": [7]}).json()
    assert one["OUT"] == 7 and one["IDX"] == 0


def test_generate_stream(http: httpx.Client) -> None:
    with http.stream(
        "POST", "/v2/models/repeat_decoupled/generate_stream", json={"IN": [4, 5, 6]}
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    events = [json.loads(chunk.removeprefix("data: ")) for chunk in text.split("\n\n") if chunk]
    assert [(e["OUT"], e["IDX"]) for e in events] == [(4, 0), (5, 1), (6, 2)]
    assert "[DONE]" not in text


def test_generate_stream_error_first_is_400(http: httpx.Client) -> None:
    r = http.post("/v2/models/raises/generate_stream", json={"INPUT0": 0})
    assert r.status_code == 400
    assert r.text == 'data: {"error":"zero is not allowed"}\n\n'


def test_client_disconnect_mid_stream_cancels_the_request(
    server: RunningServer, http: httpx.Client
) -> None:
    def failures() -> int:
        stats = http.get("/v2/models/repeat_decoupled/stats").json()["model_stats"][0]
        return stats["inference_stats"]["fail"]["count"]

    before = failures()
    body = {"IN": [1, 2, 3, 4, 5, 6], "DELAY": [0, 400, 400, 400, 400, 400]}
    path = "/v2/models/repeat_decoupled/generate_stream"
    with (
        httpx.Client(base_url=server.http_url, timeout=30) as client,
        client.stream("POST", path, json=body) as r,
    ):
        for line in r.iter_lines():
            if line.startswith("data:"):
                break  # leave after the first event: the connection closes
    # The model sees is_cancelled() and ends the request with a CANCELLED error.
    deadline = time.monotonic() + 15
    while failures() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert failures() == before + 1


# -- statistics, repository index, settings -------------------------------------------------------
def test_statistics_count_requests(http: httpx.Client) -> None:
    def count() -> int:
        return http.get("/v2/models/add_sub/stats").json()["model_stats"][0]["inference_count"]

    before = count()
    assert http.post("/v2/models/add_sub/infer", json=add_sub_body()).status_code == 200
    assert count() == before + 1
    all_stats = http.get("/v2/models/stats").json()["model_stats"]
    assert {"add_sub", "string_identity"} <= {s["name"] for s in all_stats}
    msg = _error(http.get("/v2/models/nope/stats"), 400)
    assert msg == "requested model 'nope' is not available"


def test_repository_index_and_control_in_none_mode(http: httpx.Client) -> None:
    index = http.post("/v2/repository/index").json()
    assert {"name": "add_sub", "version": "1", "state": "READY"} in index
    msg = _error(http.post("/v2/repository/models/add_sub/load"), 503)
    assert msg == "explicit model load / unload is not allowed if polling is enabled"


def test_logging_and_trace_settings(http: httpx.Client) -> None:
    log = http.get("/v2/logging").json()
    assert {"log_info", "log_verbose_level"} <= set(log)
    trace = http.get("/v2/trace/setting").json()
    assert isinstance(trace["trace_rate"], str)
    assert http.get("/v2/models/add_sub/trace/setting").status_code == 200


def test_raw_binary_request(http: httpx.Client) -> None:
    # No JSON header (Inference-Header-Content-Length 0 or absent on an empty body): the
    # body is the data of the model's only input, datatype and shape from its config.
    r = http.post(
        "/v2/models/raises/infer",
        content=struct.pack("<i", 7),
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [7]
    msg = _error(http.post("/v2/models/add_sub/infer", content=b""), 400)
    assert msg == (
        "[request id: <id_unknown>] Raw request must only have 1 input (found 1) to be "
        "deduced but got 2 inputs in 'add_sub' model configuration"
    )


def test_float_request_parameter_is_accepted(http: httpx.Client) -> None:
    r = http.post("/v2/models/add_sub/infer", json=add_sub_body(parameters={"f": 1.5}))
    assert r.status_code == 200, r.text
