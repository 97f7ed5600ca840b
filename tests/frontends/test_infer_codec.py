"""/infer bodies: JSON, the binary tensor extension and the response encoding."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import tritonclient.http as httpclient

from tritium.frontends.http.infer_codec import (
    OutputFormat,
    encode_infer_response,
    parse_header_length,
    parse_infer_request,
)
from tritium.server.errors import ErrorCode, TritonError
from tritium.server.types import InferenceResponse, Tensor


def _client_body(binary: bool) -> tuple[bytes, int | None]:
    """A request body exactly as tritonclient.http builds it."""
    a = np.arange(4, dtype=np.float32).reshape(1, 4)
    s = np.array([[b"x", b"yz"]], dtype=np.object_)
    i0 = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    i0.set_data_from_numpy(a, binary_data=binary)
    i1 = httpclient.InferInput("S", [1, 2], "BYTES")
    i1.set_data_from_numpy(s, binary_data=binary)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        [i0, i1], outputs=[out], request_id="r7", parameters={"p": 3}
    )
    return body, json_size


@pytest.mark.parametrize("binary", [False, True])
def test_parse_tritonclient_body(binary: bool) -> None:
    body, json_size = _client_body(binary)
    header_length = parse_header_length(None if json_size is None else str(json_size), len(body))
    req, fmt = parse_infer_request(body, header_length, "add_sub")
    assert req.id == "r7" and req.parameters == {"p": 3}
    np.testing.assert_array_equal(
        req.inputs["INPUT0"].data, np.arange(4, dtype=np.float32).reshape(1, 4)
    )
    assert req.inputs["INPUT0"].data.dtype == np.float32
    assert list(req.inputs["S"].data.reshape(-1)) == [b"x", b"yz"]
    assert [o.name for o in req.requested_outputs or []] == ["OUTPUT0"]
    assert fmt.is_binary("OUTPUT0")


def _binary_body(header: dict, raw: bytes) -> tuple[bytes, int]:
    h = json.dumps(header).encode()
    return h + raw, len(h)


def test_binary_data_size_past_the_end() -> None:
    body, n = _binary_body(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": [4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                }
            ]
        },
        b"\x00" * 8,
    )
    with pytest.raises(TritonError) as e:
        parse_infer_request(body, n, "m")
    assert e.value.code is ErrorCode.INVALID_ARG
    assert (
        e.value.message
        == "unexpected size for input 'X', expecting 8 additional bytes for model 'm'"
    )


def test_extra_bytes_after_the_inputs() -> None:
    body, n = _binary_body(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": [1],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 4},
                }
            ]
        },
        b"\x00" * 6,
    )
    with pytest.raises(TritonError) as e:
        parse_infer_request(body, n, "m")
    assert e.value.message == "unexpected additional input data for model 'm'"


def test_input_with_data_and_binary_size_is_refused() -> None:
    body, n = _binary_body(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": [1],
                    "datatype": "FP32",
                    "data": [1.0],
                    "parameters": {"binary_data_size": 4},
                }
            ]
        },
        b"\x00" * 4,
    )
    with pytest.raises(TritonError) as e:
        parse_infer_request(body, n, "m")
    assert e.value.code is ErrorCode.INVALID_ARG
    assert e.value.message.endswith("But set 'data' 'binary_data_size'")


@pytest.mark.parametrize(
    "params,code,fragment",
    [
        ({"triton_x": 1}, ErrorCode.INVALID_ARG, "reserved for Triton usage"),
        ({"f": [1]}, ErrorCode.INVALID_ARG, "has invalid type"),
        ({"priority": -1}, ErrorCode.INTERNAL, "Unable to parse 'priority'"),
    ],
)
def test_request_parameters_are_checked(params: dict, code: ErrorCode, fragment: str) -> None:
    body = json.dumps({"parameters": params, "inputs": []}).encode()
    with pytest.raises(TritonError) as e:
        parse_infer_request(body, len(body), "m")
    assert e.value.code is code and fragment in e.value.message


def test_sequence_parameters_become_request_fields() -> None:
    body = json.dumps(
        {
            "parameters": {"sequence_id": 5, "sequence_start": True, "priority": 2, "timeout": 10},
            "inputs": [],
        }
    ).encode()
    req, _ = parse_infer_request(body, len(body), "m")
    assert (req.correlation_id, req.flags, req.priority, req.timeout_us) == (5, 1, 2, 10)
    assert req.parameters == {}


def test_bad_json_is_internal() -> None:
    with pytest.raises(TritonError) as e:
        parse_infer_request(b"{nope", 5, "m")
    assert e.value.code is ErrorCode.INTERNAL
    assert e.value.message == (
        "failed to parse the request JSON buffer: Missing a name for object member. at 1"
    )


@pytest.mark.parametrize(
    "doc,message",
    [
        ({"id": 5, "inputs": []}, "'id': attempt to access JSON non-string as string"),
        ({"id": "x"}, "'inputs': attempt to access non-existing object member 'inputs'"),
        ([], "'inputs': attempt to access non-existing object member 'inputs'"),
        ({"inputs": {}}, "'inputs': attempt to access JSON non-array as array"),
        (
            {"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]},
            "'name': attempt to access non-existing object member 'name'",
        ),
        (
            {"inputs": [{"name": "X", "datatype": "FP32", "shape": 1, "data": [1]}]},
            "'shape': attempt to access JSON non-array as array",
        ),
        (
            {"inputs": [{"name": "X", "datatype": "FP32", "shape": [-1], "data": [1]}]},
            "'shape': attempt to access JSON non-unsigned-integer as unsigned-integer",
        ),
    ],
)
def test_json_type_errors_are_tritonjsons(doc: object, message: str) -> None:
    body = json.dumps(doc).encode()
    with pytest.raises(TritonError) as e:
        parse_infer_request(body, len(body), "m")
    assert e.value.code is ErrorCode.INTERNAL
    assert e.value.message == f"Unable to parse {message}"


def test_float_request_parameter_is_accepted() -> None:
    body = json.dumps({"parameters": {"f": 1.5}, "inputs": []}).encode()
    req, _ = parse_infer_request(body, len(body), "m")
    assert req.parameters == {"f": 1.5}


def test_duplicate_input_names_the_request() -> None:
    x = {"name": "X", "datatype": "INT32", "shape": [1], "data": [1]}
    body = json.dumps({"id": "r1", "inputs": [x, x]}).encode()
    with pytest.raises(TritonError) as e:
        parse_infer_request(body, len(body), "m")
    assert e.value.message == "[request id: r1] input 'X' already exists in request"


def test_binary_sizes_are_checked_last_input_first() -> None:
    header = {
        "inputs": [
            {"name": n, "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": s}}
            for n, s in (("A", 12), ("B", 20))
        ]
    }
    head = json.dumps(header).encode()
    with pytest.raises(TritonError) as e:
        parse_infer_request(head + b"\0" * 32, len(head), "m")
    assert e.value.message == (
        "[request id: <id_unknown>] input byte size mismatch for input 'B' for model 'm'. "
        "Expected 16, got 20"
    )


@pytest.mark.parametrize("value,parsed", [(None, 10), ("4", 4), ("abc", 0), ("0", 0), (" 7x", 7)])
def test_header_length_is_read_as_atoi(value: str | None, parsed: int) -> None:
    # 0 means a raw binary request in Triton
    assert parse_header_length(value, 10) == parsed


def test_header_length_out_of_range() -> None:
    with pytest.raises(TritonError) as e:
        parse_header_length("99", 10)
    assert e.value.code is ErrorCode.INVALID_ARG
    assert e.value.message == "inference header size should be in range (0, 10), got: 99"


def test_response_is_readable_by_tritonclient() -> None:
    body, json_size = _client_body(binary=True)
    req, fmt = parse_infer_request(body, json_size or len(body), "add_sub")
    resp = InferenceResponse(
        outputs=[
            Tensor("OUTPUT0", "FP32", np.array([[1, 2, 3, 4]], dtype=np.float32)),
            Tensor("OUTPUT1", "FP32", np.zeros((1, 4), dtype=np.float32)),  # not requested
        ]
    )
    out, header_length = encode_infer_response(resp, req, "add_sub", 1, fmt)
    assert header_length is not None
    result = httpclient.InferResult.from_response_body(out, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [[1, 2, 3, 4]])
    assert result.as_numpy("OUTPUT1") is None
    assert result.get_response()["id"] == "r7"
    assert result.get_response()["model_version"] == "1"


def test_json_response_with_binary_data_output_default() -> None:
    body = json.dumps(
        {
            "parameters": {"binary_data_output": True},
            "inputs": [{"name": "X", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
        }
    ).encode()
    req, fmt = parse_infer_request(body, len(body), "m")
    resp = InferenceResponse(outputs=[Tensor("Y", "BYTES", np.array([b"hello"], dtype=np.object_))])
    out, header_length = encode_infer_response(resp, req, "m", 3, fmt)
    assert header_length is not None
    assert out[header_length:] == struct.pack("<I", 5) + b"hello"
    doc = json.loads(out[:header_length])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 9}

    plain, hl = encode_infer_response(resp, req, "m", 3, OutputFormat())
    assert hl is None
    assert json.loads(plain)["outputs"][0]["data"] == ["hello"]
