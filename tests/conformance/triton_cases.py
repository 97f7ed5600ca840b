"""The requests the conformance suite sends to a server (NVIDIA's Triton when recording the
fixtures, Tritium when testing), and how their answers are captured.

Every case is a plain request with a name; `run_http`, `run_grpc` and `scrape_metrics`
turn a live server's answers into JSON-able dicts. The same code runs against both
servers, so a difference in the recorded dicts is a difference in behaviour.

Cases run in list order on one server, and some depend on what came before (statistics
after inferences, the repository index after an unload), so the order is part of the case.
"""

from __future__ import annotations

import base64
import gzip
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import numpy as np
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc

MODELS = [
    "add_sub",
    "async_model",
    "auto_complete",
    "bls_add_sub",
    "crasher",
    "raises",
    "repeat_decoupled",
    "string_identity",
]

# How a case's answers are compared (see test_against_triton_fixtures.py):
EXACT = "exact"  # status and body identical
STATUS = "status"  # status identical, body not compared
SHAPE = "shape"  # status identical, body the same keys and value types recursively
COUNTS = "counts"  # statistics: identical but for durations and timestamps


@dataclass
class HttpCase:
    name: str
    method: str
    path: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    compare: str = EXACT
    note: str = ""  # why the comparison is looser than exact

    def request_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"method": self.method, "path": self.path}
        if self.json is not None:
            doc["json"] = self.json
        if self.content is not None:
            doc["content_b64"] = base64.b64encode(self.content).decode()
        if self.headers:
            doc["headers"] = self.headers
        return doc


def _fp32(values: list[float]) -> bytes:
    return np.array(values, dtype=np.float32).tobytes()


def _bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def _binary_body(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def _string_identity_binary(name: str, shape: int, size: int, payload: bytes) -> HttpCase:
    """A binary-data infer of string_identity's BYTES INPUT0 (`size` bytes declared)."""
    header = {
        "inputs": [
            {
                "name": "INPUT0",
                "datatype": "BYTES",
                "shape": [shape],
                "parameters": {"binary_data_size": size},
            }
        ]
    }
    body, headers = _binary_body(header, payload)
    return HttpCase(name, "POST", "/v2/models/string_identity/infer", content=body, headers=headers)


def _add_sub_inputs(
    a: list[float] | None = None,
    b: list[float] | None = None,
    dtype: str = "FP32",
    shape: list[int] | None = None,
) -> list[dict[str, Any]]:
    a = a if a is not None else [1.0, 2.0, 3.0, 4.0]
    b = b if b is not None else [1.0, 1.0, 1.0, 1.0]
    shape = shape if shape is not None else [1, len(a)]
    return [
        {"name": "INPUT0", "datatype": dtype, "shape": shape, "data": a},
        {"name": "INPUT1", "datatype": dtype, "shape": shape, "data": b},
    ]


def _int_input(name: str, value: int, dtype: str = "INT32") -> dict[str, Any]:
    return {"name": name, "datatype": dtype, "shape": [1], "data": [value]}


def http_cases() -> list[HttpCase]:
    """The HTTP cases, in the order they run (the server in `none` control mode)."""
    c: list[HttpCase] = []
    add = c.append
    infer = "/v2/models/add_sub/infer"

    # -- health, server metadata, routing ------------------------------------------------
    add(HttpCase("live", "GET", "/v2/health/live"))
    add(HttpCase("ready", "GET", "/v2/health/ready"))
    add(
        HttpCase(
            "server_metadata",
            "GET",
            "/v2",
            compare=SHAPE,
            note="version is Triton's release; extensions list what each implements",
        )
    )
    add(HttpCase("trailing_slash_v2", "GET", "/v2/"))
    add(HttpCase("trailing_slash_model", "GET", "/v2/models/add_sub/"))
    add(HttpCase("trailing_slash_infer", "POST", infer + "/", json={"inputs": _add_sub_inputs()}))
    add(HttpCase("unknown_path", "GET", "/v2/nope"))
    add(HttpCase("unknown_path_root", "GET", "/"))
    add(HttpCase("post_on_live", "POST", "/v2/health/live"))
    add(HttpCase("post_on_metadata", "POST", "/v2"))
    add(HttpCase("get_on_infer", "GET", infer))
    add(HttpCase("put_on_model", "PUT", "/v2/models/add_sub"))
    add(HttpCase("delete_on_index", "DELETE", "/v2/repository/index"))
    add(HttpCase("get_on_index", "GET", "/v2/repository/index"))

    # -- per-model metadata, config, readiness, statistics -------------------------------
    for m in MODELS:
        add(HttpCase(f"metadata_{m}", "GET", f"/v2/models/{m}"))
        add(HttpCase(f"metadata_v1_{m}", "GET", f"/v2/models/{m}/versions/1"))
        add(HttpCase(f"config_{m}", "GET", f"/v2/models/{m}/config"))
        add(HttpCase(f"model_ready_{m}", "GET", f"/v2/models/{m}/ready"))
        add(
            HttpCase(
                f"stats_{m}",
                "GET",
                f"/v2/models/{m}/stats",
                compare=COUNTS,
                note="timestamps and durations differ from run to run",
            )
        )
    add(HttpCase("config_v1_add_sub", "GET", "/v2/models/add_sub/versions/1/config"))

    # -- unknown models and versions ------------------------------------------------------
    add(HttpCase("metadata_unknown_model", "GET", "/v2/models/nope"))
    add(HttpCase("metadata_unknown_version", "GET", "/v2/models/add_sub/versions/2"))
    add(HttpCase("metadata_version_0", "GET", "/v2/models/add_sub/versions/0"))
    add(HttpCase("metadata_version_text", "GET", "/v2/models/add_sub/versions/abc"))
    add(HttpCase("metadata_version_negative", "GET", "/v2/models/add_sub/versions/-1"))
    add(HttpCase("ready_unknown_model", "GET", "/v2/models/nope/ready"))
    add(HttpCase("ready_unknown_version", "GET", "/v2/models/add_sub/versions/2/ready"))
    add(HttpCase("ready_version_text", "GET", "/v2/models/add_sub/versions/abc/ready"))
    add(HttpCase("config_unknown_model", "GET", "/v2/models/nope/config"))
    add(HttpCase("config_unknown_version", "GET", "/v2/models/add_sub/versions/2/config"))
    add(HttpCase("stats_unknown_model", "GET", "/v2/models/nope/stats"))
    add(HttpCase("stats_unknown_version", "GET", "/v2/models/add_sub/versions/2/stats"))
    add(
        HttpCase(
            "infer_unknown_model",
            "POST",
            "/v2/models/nope/infer",
            json={"inputs": _add_sub_inputs()},
        )
    )
    add(
        HttpCase(
            "infer_unknown_version",
            "POST",
            "/v2/models/add_sub/versions/2/infer",
            json={"inputs": _add_sub_inputs()},
        )
    )

    # -- inference that works ------------------------------------------------------------
    add(HttpCase("infer_add_sub", "POST", infer, json={"inputs": _add_sub_inputs()}))
    add(
        HttpCase("infer_add_sub_id", "POST", infer, json={"id": "abc", "inputs": _add_sub_inputs()})
    )
    add(
        HttpCase(
            "infer_add_sub_version",
            "POST",
            "/v2/models/add_sub/versions/1/infer",
            json={"inputs": _add_sub_inputs()},
        )
    )
    add(
        HttpCase(
            "infer_add_sub_nested_data",
            "POST",
            infer,
            json={
                "inputs": [
                    {
                        "name": "INPUT0",
                        "datatype": "FP32",
                        "shape": [2, 4],
                        "data": [[1, 2, 3, 4], [5, 6, 7, 8]],
                    },
                    {
                        "name": "INPUT1",
                        "datatype": "FP32",
                        "shape": [2, 4],
                        "data": [[1, 1, 1, 1], [2, 2, 2, 2]],
                    },
                ]
            },
        )
    )
    add(
        HttpCase(
            "infer_add_sub_one_output",
            "POST",
            infer,
            json={"inputs": _add_sub_inputs(), "outputs": [{"name": "OUTPUT1"}]},
        )
    )
    add(
        HttpCase(
            "infer_add_sub_parameters",
            "POST",
            infer,
            json={
                "id": "p",
                "parameters": {"a": 1, "b": True, "c": "x"},
                "inputs": _add_sub_inputs(),
            },
        )
    )
    add(
        HttpCase(
            "infer_add_sub_binary_output",
            "POST",
            infer,
            json={
                "inputs": _add_sub_inputs(),
                "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
            },
        )
    )
    add(
        HttpCase(
            "infer_add_sub_binary_data_output",
            "POST",
            infer,
            json={"inputs": _add_sub_inputs(), "parameters": {"binary_data_output": True}},
        )
    )
    body, headers = _binary_body(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": 16},
                },
                {
                    "name": "INPUT1",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": 16},
                },
            ]
        },
        _fp32([1, 2, 3, 4]),
        _fp32([4, 3, 2, 1]),
    )
    add(HttpCase("infer_add_sub_binary_input", "POST", infer, content=body, headers=headers))
    add(
        HttpCase(
            "infer_add_sub_gzip",
            "POST",
            infer,
            content=gzip.compress(json.dumps({"inputs": _add_sub_inputs()}).encode()),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
    )
    add(
        HttpCase(
            "infer_string_identity",
            "POST",
            "/v2/models/string_identity/infer",
            json={
                "inputs": [
                    {
                        "name": "INPUT0",
                        "datatype": "BYTES",
                        "shape": [2],
                        "data": ["hello", "wörld"],
                    }
                ]
            },
        )
    )
    body, headers = _binary_body(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": 4 + 2 + 4 + 3},
                }
            ]
        },
        _bytes_tensor([b"ab", b"cde"]),
    )
    add(
        HttpCase(
            "infer_string_identity_binary",
            "POST",
            "/v2/models/string_identity/infer",
            content=body,
            headers=headers,
        )
    )
    add(
        HttpCase(
            "infer_async_model",
            "POST",
            "/v2/models/async_model/infer",
            json={
                "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]}]
            },
        )
    )
    add(
        HttpCase(
            "infer_auto_complete",
            "POST",
            "/v2/models/auto_complete/infer",
            json={
                "inputs": [
                    {"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
                ]
            },
        )
    )
    add(
        HttpCase(
            "infer_bls_add_sub",
            "POST",
            "/v2/models/bls_add_sub/infer",
            json={"inputs": _add_sub_inputs(shape=[4])},
        )
    )
    add(
        HttpCase(
            "infer_raises_ok",
            "POST",
            "/v2/models/raises/infer",
            json={"inputs": [_int_input("INPUT0", 5)]},
        )
    )
    add(
        HttpCase(
            "infer_crasher_ok",
            "POST",
            "/v2/models/crasher/infer",
            json={"inputs": [_int_input("INPUT0", 5)]},
        )
    )

    # -- model errors -----------------------------------------------------------------------
    add(
        HttpCase(
            "infer_raises_exception",
            "POST",
            "/v2/models/raises/infer",
            json={"inputs": [_int_input("INPUT0", -1)]},
        )
    )
    add(
        HttpCase(
            "infer_raises_triton_error",
            "POST",
            "/v2/models/raises/infer",
            json={"inputs": [_int_input("INPUT0", 0)]},
        )
    )
    add(
        HttpCase(
            "infer_decoupled",
            "POST",
            "/v2/models/repeat_decoupled/infer",
            json={"inputs": [{"name": "IN", "datatype": "INT32", "shape": [2], "data": [1, 2]}]},
        )
    )

    # -- validation errors (PROTOCOL.md section 1) --------------------------------------------
    add(
        HttpCase(
            "infer_wrong_dtype",
            "POST",
            infer,
            json={"inputs": _add_sub_inputs(dtype="INT32", a=[1, 2, 3, 4], b=[1, 1, 1, 1])},
        )
    )
    add(
        HttpCase(
            "infer_wrong_dtype_id",
            "POST",
            infer,
            json={
                "id": "r1",
                "inputs": _add_sub_inputs(dtype="INT32", a=[1, 2, 3, 4], b=[1, 1, 1, 1]),
            },
        )
    )
    add(
        HttpCase(
            "infer_wrong_shape",
            "POST",
            infer,
            json={"inputs": _add_sub_inputs(a=[1, 2, 3], b=[1, 2, 3])},
        )
    )
    add(HttpCase("infer_no_batch_dim", "POST", infer, json={"inputs": _add_sub_inputs(shape=[4])}))
    add(
        HttpCase(
            "infer_batch_too_big",
            "POST",
            infer,
            json={"inputs": _add_sub_inputs(a=[1.0] * 36, b=[1.0] * 36, shape=[9, 4])},
        )
    )
    add(
        HttpCase(
            "infer_batch_mismatch",
            "POST",
            infer,
            json={
                "inputs": [
                    {"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
                    {"name": "INPUT1", "datatype": "FP32", "shape": [2, 4], "data": [1] * 8},
                ]
            },
        )
    )
    add(HttpCase("infer_missing_input", "POST", infer, json={"inputs": _add_sub_inputs()[1:]}))
    add(
        HttpCase(
            "infer_missing_input_id",
            "POST",
            infer,
            json={"id": "r2", "inputs": _add_sub_inputs()[1:]},
        )
    )
    add(HttpCase("infer_no_inputs", "POST", infer, json={"inputs": []}))
    add(
        HttpCase(
            "infer_unknown_input_extra",
            "POST",
            infer,
            json={
                "inputs": [
                    *_add_sub_inputs(),
                    {"name": "BAD", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
                ]
            },
        )
    )
    many = [f"X{i}_{'y' * (i % 11)}" for i in range(15)]  # 15 names: the map rehashes
    add(
        HttpCase(
            "infer_many_unknown_inputs",
            "POST",
            infer,
            json={
                "inputs": [
                    {"name": n, "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
                    for n in many
                ]
            },
        )
    )
    add(
        HttpCase(
            "infer_unknown_input_instead",
            "POST",
            infer,
            json={
                "inputs": [
                    _add_sub_inputs()[0],
                    {"name": "BAD", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
                ]
            },
        )
    )
    add(
        HttpCase(
            "infer_duplicate_input",
            "POST",
            infer,
            json={"inputs": [_add_sub_inputs()[0], _add_sub_inputs()[0]]},
        )
    )
    add(
        HttpCase(
            "infer_unknown_output",
            "POST",
            infer,
            json={"inputs": _add_sub_inputs(), "outputs": [{"name": "BAD"}]},
        )
    )
    add(
        HttpCase(
            "infer_optional_input_absent",
            "POST",
            "/v2/models/repeat_decoupled/generate",
            json={"IN": [7]},
        )
    )
    add(
        HttpCase(
            "infer_data_too_short",
            "POST",
            infer,
            json={"inputs": _add_sub_inputs(a=[1, 2, 3], shape=[1, 4])},
        )
    )
    add(
        HttpCase(
            "infer_data_too_long",
            "POST",
            infer,
            json={"inputs": _add_sub_inputs(a=[1, 2, 3, 4, 5], shape=[1, 4])},
        )
    )
    add(
        HttpCase(
            "infer_data_wrong_type",
            "POST",
            infer,
            json={"inputs": _add_sub_inputs(a=["a", "b", "c", "d"])},
        )
    )
    add(
        HttpCase(
            "infer_data_missing",
            "POST",
            infer,
            json={
                "inputs": [
                    {"name": "INPUT0", "datatype": "FP32", "shape": [1, 4]},
                    _add_sub_inputs()[1],
                ]
            },
        )
    )
    add(
        HttpCase(
            "infer_bad_datatype_name",
            "POST",
            infer,
            json={"inputs": _add_sub_inputs(dtype="FLOAT32")},
        )
    )
    add(
        HttpCase(
            "infer_shape_not_list",
            "POST",
            infer,
            json={
                "inputs": [
                    {"name": "INPUT0", "datatype": "FP32", "shape": 4, "data": [1, 2, 3, 4]},
                    _add_sub_inputs()[1],
                ]
            },
        )
    )
    add(HttpCase("infer_no_inputs_key", "POST", infer, json={"id": "x"}))
    add(
        HttpCase(
            "infer_input_no_name",
            "POST",
            infer,
            json={
                "inputs": [
                    {"datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
                    _add_sub_inputs()[1],
                ]
            },
        )
    )
    add(
        HttpCase(
            "infer_bad_json",
            "POST",
            infer,
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
    )
    add(
        HttpCase(
            "infer_json_array",
            "POST",
            infer,
            content=b"[]",
            headers={"Content-Type": "application/json"},
        )
    )
    add(HttpCase("infer_empty_body", "POST", infer, content=b""))
    add(
        HttpCase(
            "infer_triton_parameter",
            "POST",
            infer,
            json={"parameters": {"triton_x": 1}, "inputs": _add_sub_inputs()},
        )
    )
    add(
        HttpCase(
            "infer_float_parameter",
            "POST",
            infer,
            json={"parameters": {"f": 1.5}, "inputs": _add_sub_inputs()},
        )
    )
    add(
        HttpCase(
            "infer_list_parameter",
            "POST",
            infer,
            json={"parameters": {"l": [1]}, "inputs": _add_sub_inputs()},
        )
    )
    add(HttpCase("infer_id_not_string", "POST", infer, json={"id": 5, "inputs": _add_sub_inputs()}))
    add(
        HttpCase(
            "infer_fp16_json",
            "POST",
            "/v2/models/add_sub/infer",
            json={"inputs": _add_sub_inputs(dtype="FP16")},
        )
    )
    add(
        HttpCase(
            "infer_bytes_as_numbers",
            "POST",
            "/v2/models/string_identity/infer",
            json={
                "inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [2], "data": [1, 2]}]
            },
        )
    )
    add(
        HttpCase(
            "infer_bool_for_int",
            "POST",
            "/v2/models/raises/infer",
            json={
                "inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1], "data": [True]}]
            },
        )
    )
    add(
        HttpCase(
            "infer_int_overflow",
            "POST",
            "/v2/models/raises/infer",
            json={
                "inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1], "data": [2**40]}]
            },
        )
    )

    # -- binary tensor data errors ------------------------------------------------------------
    inputs_hdr = [
        {
            "name": "INPUT0",
            "datatype": "FP32",
            "shape": [1, 4],
            "parameters": {"binary_data_size": 16},
        },
        {
            "name": "INPUT1",
            "datatype": "FP32",
            "shape": [1, 4],
            "parameters": {"binary_data_size": 16},
        },
    ]
    body, headers = _binary_body({"inputs": inputs_hdr}, _fp32([1, 2, 3, 4]), _fp32([1, 2, 3]))
    add(HttpCase("binary_too_short", "POST", infer, content=body, headers=headers))
    body, headers = _binary_body(
        {"inputs": inputs_hdr}, _fp32([1, 2, 3, 4]), _fp32([1, 2, 3, 4, 5])
    )
    add(HttpCase("binary_extra_data", "POST", infer, content=body, headers=headers))
    body, headers = _binary_body(
        {
            "inputs": [
                {**inputs_hdr[0], "parameters": {"binary_data_size": 12}},
                {**inputs_hdr[1], "parameters": {"binary_data_size": 20}},
            ]
        },
        _fp32([1, 2, 3, 4]),
        _fp32([1, 2, 3, 4]),
    )
    add(HttpCase("binary_size_mismatch_shape", "POST", infer, content=body, headers=headers))
    body, headers = _binary_body({"inputs": inputs_hdr}, _fp32([1, 2, 3, 4]), _fp32([4, 3, 2, 1]))
    add(
        HttpCase(
            "binary_header_length_too_big",
            "POST",
            infer,
            content=body,
            headers={**headers, "Inference-Header-Content-Length": str(len(body) + 10)},
        )
    )
    add(
        HttpCase(
            "binary_header_length_not_number",
            "POST",
            infer,
            content=body,
            headers={**headers, "Inference-Header-Content-Length": "abc"},
        )
    )
    add(
        HttpCase(
            "binary_header_length_too_small",
            "POST",
            infer,
            content=body,
            headers={**headers, "Inference-Header-Content-Length": "10"},
        )
    )
    add(
        _string_identity_binary(
            "binary_bytes_bad_length_prefix",
            2,
            4 + 2 + 4 + 3,
            struct.pack("<I", 2) + b"ab" + struct.pack("<I", 30) + b"cde",
        )
    )
    add(
        _string_identity_binary(
            "binary_bytes_too_few_elements", 3, 4 + 2 + 4 + 3, _bytes_tensor([b"ab", b"cde"])
        )
    )
    add(
        _string_identity_binary(
            "binary_bytes_too_many_elements", 1, 4 + 2 + 4 + 3, _bytes_tensor([b"ab", b"cde"])
        )
    )
    add(_string_identity_binary("binary_bytes_truncated_prefix", 1, 3, b"\x01\x00\x00"))

    # -- generate extension -----------------------------------------------------------------
    add(
        HttpCase(
            "generate_string_identity",
            "POST",
            "/v2/models/string_identity/generate",
            json={"INPUT0": "hello"},
        )
    )
    add(
        HttpCase(
            "generate_string_identity_id",
            "POST",
            "/v2/models/string_identity/generate",
            json={"id": "g1", "INPUT0": "hello", "parameters": {"x": 1}},
        )
    )
    add(
        HttpCase(
            "generate_async_model",
            "POST",
            "/v2/models/async_model/generate",
            json={"INPUT0": [1.0, 2.0]},
        )
    )
    add(
        HttpCase(
            "generate_decoupled_many",
            "POST",
            "/v2/models/repeat_decoupled/generate",
            json={"IN": [1, 2, 3]},
        )
    )
    add(
        HttpCase(
            "generate_missing_input",
            "POST",
            "/v2/models/string_identity/generate",
            json={"OTHER": "x"},
        )
    )
    add(
        HttpCase("generate_unknown_model", "POST", "/v2/models/nope/generate", json={"INPUT0": "x"})
    )
    add(
        HttpCase(
            "generate_bad_json",
            "POST",
            "/v2/models/string_identity/generate",
            content=b"{",
            headers={"Content-Type": "application/json"},
        )
    )
    add(HttpCase("generate_raises", "POST", "/v2/models/raises/generate", json={"INPUT0": -3}))
    add(
        HttpCase(
            "generate_stream_decoupled",
            "POST",
            "/v2/models/repeat_decoupled/generate_stream",
            json={"IN": [1, 2, 3]},
        )
    )
    add(
        HttpCase(
            "generate_stream_raises",
            "POST",
            "/v2/models/raises/generate_stream",
            json={"INPUT0": 0},
        )
    )

    # -- repository (none mode: load / unload refused) ----------------------------------------
    add(HttpCase("repository_index", "POST", "/v2/repository/index"))
    add(HttpCase("repository_index_ready", "POST", "/v2/repository/index", json={"ready": True}))
    add(
        HttpCase(
            "repository_index_ready_not_bool", "POST", "/v2/repository/index", json={"ready": "yes"}
        )
    )
    add(HttpCase("repository_index_bad_json", "POST", "/v2/repository/index", content=b"{"))
    add(HttpCase("repository_load_none_mode", "POST", "/v2/repository/models/add_sub/load"))
    add(HttpCase("repository_unload_none_mode", "POST", "/v2/repository/models/add_sub/unload"))

    # -- statistics after the inferences above -------------------------------------------------
    add(
        HttpCase(
            "stats_all",
            "GET",
            "/v2/models/stats",
            compare=COUNTS,
            note="durations and timestamps differ from run to run",
        )
    )
    add(
        HttpCase(
            "stats_add_sub_after",
            "GET",
            "/v2/models/add_sub/stats",
            compare=COUNTS,
            note="durations and timestamps differ from run to run",
        )
    )

    # -- logging, trace, shared memory ---------------------------------------------------------
    add(
        HttpCase(
            "logging_get",
            "GET",
            "/v2/logging",
            compare=SHAPE,
            note="log_file / verbosity reflect each server's flags",
        )
    )
    add(
        HttpCase(
            "trace_get", "GET", "/v2/trace/setting", compare=SHAPE, note="trace_file paths differ"
        )
    )
    add(
        HttpCase(
            "trace_get_model",
            "GET",
            "/v2/models/add_sub/trace/setting",
            compare=SHAPE,
            note="trace_file paths differ",
        )
    )
    add(HttpCase("trace_get_unknown_model", "GET", "/v2/models/nope/trace/setting"))
    add(HttpCase("shm_status", "GET", "/v2/systemsharedmemory/status"))
    add(HttpCase("shm_status_unknown_region", "GET", "/v2/systemsharedmemory/region/nope/status"))
    add(HttpCase("cuda_shm_status", "GET", "/v2/cudasharedmemory/status"))

    # -- last: a model process that dies ---------------------------------------------------------
    add(
        HttpCase(
            "infer_crasher_dies",
            "POST",
            "/v2/models/crasher/infer",
            json={"inputs": [_int_input("INPUT0", -1)]},
        )
    )
    add(
        HttpCase(
            "infer_crasher_after",
            "POST",
            "/v2/models/crasher/infer",
            json={"inputs": [_int_input("INPUT0", 6)]},
            # Triton 2.51 does not restart the stub: the model stays READY and every later
            # request fails the same way.
        )
    )
    add(HttpCase("model_ready_crasher_after", "GET", "/v2/models/crasher/ready"))
    add(HttpCase("ready_after_crash", "GET", "/v2/health/ready"))
    return c


def explicit_http_cases() -> list[HttpCase]:
    """Model control mode `explicit`, started with `--load-model add_sub`."""
    c: list[HttpCase] = []
    add = c.append
    add(HttpCase("x_index_start", "POST", "/v2/repository/index"))
    add(HttpCase("x_ready_start", "GET", "/v2/health/ready"))
    add(HttpCase("x_metadata_not_loaded", "GET", "/v2/models/string_identity"))
    add(HttpCase("x_ready_not_loaded", "GET", "/v2/models/string_identity/ready"))
    add(HttpCase("x_config_not_loaded", "GET", "/v2/models/string_identity/config"))
    add(HttpCase("x_stats_not_loaded", "GET", "/v2/models/string_identity/stats"))
    add(
        HttpCase(
            "x_infer_not_loaded",
            "POST",
            "/v2/models/string_identity/infer",
            json={"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1], "data": ["a"]}]},
        )
    )
    add(HttpCase("x_load_unknown", "POST", "/v2/repository/models/nope/load"))
    add(HttpCase("x_unload_unknown", "POST", "/v2/repository/models/nope/unload"))
    add(HttpCase("x_load", "POST", "/v2/repository/models/string_identity/load"))
    add(HttpCase("x_index_after_load", "POST", "/v2/repository/index"))
    add(HttpCase("x_load_again", "POST", "/v2/repository/models/string_identity/load"))
    add(HttpCase("x_unload", "POST", "/v2/repository/models/string_identity/unload"))
    add(HttpCase("x_wait_unloaded", "WAIT_UNLOADED", "string_identity"))
    add(HttpCase("x_index_after_unload", "POST", "/v2/repository/index"))
    add(
        HttpCase("x_index_ready_after_unload", "POST", "/v2/repository/index", json={"ready": True})
    )
    add(HttpCase("x_ready_after_unload", "GET", "/v2/models/string_identity/ready"))
    add(HttpCase("x_metadata_after_unload", "GET", "/v2/models/string_identity"))
    add(HttpCase("x_metadata_v1_after_unload", "GET", "/v2/models/string_identity/versions/1"))
    add(
        HttpCase(
            "x_infer_v1_after_unload",
            "POST",
            "/v2/models/string_identity/versions/1/infer",
            json={"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1], "data": ["a"]}]},
        )
    )
    add(
        HttpCase(
            "x_infer_after_unload",
            "POST",
            "/v2/models/string_identity/infer",
            json={"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1], "data": ["a"]}]},
        )
    )
    add(HttpCase("x_stats_after_unload", "GET", "/v2/models/string_identity/stats"))
    add(HttpCase("x_server_ready_after_unload", "GET", "/v2/health/ready"))
    config = {
        "name": "auto_complete",
        "backend": "python",
        "max_batch_size": 2,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
    }
    add(
        HttpCase(
            "x_load_config_override",
            "POST",
            "/v2/repository/models/auto_complete/load",
            json={"parameters": {"config": json.dumps(config)}},
        )
    )
    add(HttpCase("x_config_after_override", "GET", "/v2/models/auto_complete/config"))
    add(
        HttpCase(
            "x_load_bad_config_json",
            "POST",
            "/v2/repository/models/raises/load",
            json={"parameters": {"config": "{not json"}},
        )
    )
    add(
        HttpCase(
            "x_load_config_wrong_name",
            "POST",
            "/v2/repository/models/raises/load",
            json={"parameters": {"config": json.dumps({**config, "name": "other"})}},
        )
    )
    add(
        HttpCase(
            "x_load_config_not_string",
            "POST",
            "/v2/repository/models/raises/load",
            json={"parameters": {"config": {"name": "raises"}}},
        )
    )
    add(HttpCase("x_load_bad_json", "POST", "/v2/repository/models/raises/load", content=b"{"))
    add(
        HttpCase(
            "x_load_files",
            "POST",
            "/v2/repository/models/uploaded/load",
            json={
                "parameters": {
                    "config": json.dumps(
                        {
                            "name": "uploaded",
                            "backend": "python",
                            "input": [{"name": "INPUT0", "data_type": "TYPE_STRING", "dims": [-1]}],
                            "output": [
                                {"name": "OUTPUT0", "data_type": "TYPE_STRING", "dims": [-1]}
                            ],
                        }
                    ),
                    "file:1/model.py": base64.b64encode(UPLOADED_MODEL.encode()).decode(),
                }
            },
        )
    )
    add(
        HttpCase(
            "x_infer_uploaded",
            "POST",
            "/v2/models/uploaded/infer",
            json={
                "inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1], "data": ["up"]}]
            },
        )
    )
    add(
        HttpCase(
            "x_load_files_without_config",
            "POST",
            "/v2/repository/models/up2/load",
            json={
                "parameters": {
                    "file:1/model.py": base64.b64encode(UPLOADED_MODEL.encode()).decode()
                }
            },
        )
    )
    for name in EXPLICIT_EXTRA_MODELS:
        add(HttpCase(f"x_load_{name}", "POST", f"/v2/repository/models/{name}/load"))
    add(HttpCase("x_index_after_failed_loads", "POST", "/v2/repository/index"))
    add(HttpCase("x_ready_after_failed_loads", "GET", "/v2/health/ready"))
    add(HttpCase("x_metadata_init_fails", "GET", "/v2/models/init_fails"))
    add(HttpCase("x_metadata_v1_init_fails", "GET", "/v2/models/init_fails/versions/1"))
    add(HttpCase("x_load_bls", "POST", "/v2/repository/models/bls_add_sub/load"))
    add(
        HttpCase(
            "x_unload_dependents",
            "POST",
            "/v2/repository/models/add_sub/unload",
            json={"parameters": {"unload_dependents": True}},
        )
    )
    add(HttpCase("x_wait_add_sub_unloaded", "WAIT_UNLOADED", "add_sub"))
    add(HttpCase("x_index_end", "POST", "/v2/repository/index"))
    return c


_IO = """
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""
_ECHO = "\n".join(
    [
        "import triton_python_backend_utils as pb_utils",
        "class TritonPythonModel:",
        "    def execute(self, requests):",
        "        return [pb_utils.InferenceResponse([pb_utils.Tensor('OUTPUT0',",
        "            pb_utils.get_input_tensor_by_name(r, 'INPUT0').as_numpy())]) for r in requests]",
        "",
    ]
)

# Models that fail to load, added to the repository of the explicit-mode server only (in
# `none` mode a failed load stops the server): {name: {relative path: content}}.
EXPLICIT_EXTRA_MODELS: dict[str, dict[str, str]] = {
    "broken_pbtxt": {
        "config.pbtxt": 'backend: "python"\nmax_batch_size: 0\ninput [ { name: "a" dimz: [1] } ]\n',
        "1/model.py": _ECHO,
    },
    "wrong_name": {"config.pbtxt": 'name: "other"\nbackend: "python"\n' + _IO, "1/model.py": _ECHO},
    "no_backend": {"config.pbtxt": _IO, "1/model.onnx": "not a model"},
    "no_versions": {"config.pbtxt": 'backend: "python"\n' + _IO},
    "init_fails": {
        "config.pbtxt": 'backend: "python"\n' + _IO,
        "1/model.py": _ECHO.replace(
            "    def execute",
            "    def initialize(self, args):\n        raise RuntimeError('no luck')\n"
            "    def execute",
        ),
    },
    "bad_batch": {
        "config.pbtxt": 'backend: "python"\nmax_batch_size: -2\n' + _IO,
        "1/model.py": _ECHO,
    },
}


def write_extra_models(repo: Any) -> None:
    """Add EXPLICIT_EXTRA_MODELS to a repository folder (a pathlib.Path)."""
    for name, files in EXPLICIT_EXTRA_MODELS.items():
        for rel, content in files.items():
            path = repo / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)


UPLOADED_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())]
            )
            for r in requests
        ]
"""


def _decode_body(resp: httpx.Response) -> Any:
    ctype = resp.headers.get("content-type", "")
    raw = resp.content
    header_len = resp.headers.get("inference-header-content-length")
    if header_len is not None:
        n = int(header_len)
        return {"json": json.loads(raw[:n]), "binary_hex": raw[n:].hex()}
    if ctype.startswith("text/event-stream"):
        events = [e for e in raw.decode().split("\n\n") if e]
        return {
            "events": [
                json.loads(e.removeprefix("data: ")) if e.startswith("data: ") else e
                for e in events
            ]
        }
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"text": raw.decode(errors="replace")}


def _wait_unloaded(client: httpx.Client, name: str, timeout_s: float = 30.0) -> None:
    """Unload returns before the model is gone: wait until the index says UNAVAILABLE."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        index = client.post("/v2/repository/index").json()
        states = [e.get("state") for e in index if e["name"] == name]
        if states and all(s == "UNAVAILABLE" for s in states):
            return
        time.sleep(0.1)


def run_http(base_url: str, cases: list[HttpCase]) -> dict[str, dict[str, Any]]:
    """Send every case in order; {case name: {"request", "status", "content_type", "body"}}."""
    out: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for case in cases:
            if case.method == "WAIT_UNLOADED":
                _wait_unloaded(client, case.path)
                continue
            kwargs: dict[str, Any] = {"headers": case.headers}
            if case.json is not None:
                kwargs["content"] = json.dumps(case.json).encode()
                kwargs["headers"] = {"Content-Type": "application/json", **case.headers}
            elif case.content is not None:
                kwargs["content"] = case.content
            resp = client.request(case.method, case.path, **kwargs)
            out[case.name] = {
                "request": case.request_doc(),
                "status": resp.status_code,
                "content_type": resp.headers.get("content-type"),
                "body": _decode_body(resp),
            }
    return out


# -- gRPC -------------------------------------------------------------------------------------


@dataclass
class GrpcCase:
    name: str
    method: str  # an RPC of inference.GRPCInferenceService, or "Health"
    request: Any  # a protobuf message, or a list of them for ModelStreamInfer
    compare: str = EXACT
    note: str = ""


def _infer_request(
    model: str,
    inputs: list[tuple[str, str, list[int], bytes]],
    outputs: list[str] | None = None,
    id: str = "",
    version: str = "",
    params: dict[str, Any] | None = None,
) -> service_pb2.ModelInferRequest:
    req = service_pb2.ModelInferRequest(model_name=model, model_version=version, id=id)
    for name, dtype, shape, raw in inputs:
        req.inputs.add(name=name, datatype=dtype, shape=shape)
        req.raw_input_contents.append(raw)
    for o in outputs or []:
        req.outputs.add(name=o)
    for k, v in (params or {}).items():
        p = req.parameters[k]
        if isinstance(v, bool):
            p.bool_param = v
        elif isinstance(v, int):
            p.int64_param = v
        else:
            p.string_param = v
    return req


def _add_sub_grpc(
    a: list[float] | None = None, dtype: str = "FP32", shape: list[int] | None = None, **kw: Any
) -> service_pb2.ModelInferRequest:
    a = a if a is not None else [1, 2, 3, 4]
    shape = shape or [1, len(a)]
    np_dtype = np.float32 if dtype == "FP32" else np.int32
    raw = np.array(a, dtype=np_dtype).tobytes()
    return _infer_request(
        "add_sub", [("INPUT0", dtype, shape, raw), ("INPUT1", dtype, shape, raw)], **kw
    )


def _int_grpc(
    model: str, values: list[int], name: str = "INPUT0", **kw: Any
) -> service_pb2.ModelInferRequest:
    raw = np.array(values, dtype=np.int32).tobytes()
    return _infer_request(model, [(name, "INT32", [len(values)], raw)], **kw)


def grpc_cases() -> list[GrpcCase]:
    S = service_pb2
    c: list[GrpcCase] = []
    add = c.append
    add(GrpcCase("ServerLive", "ServerLive", S.ServerLiveRequest()))
    add(GrpcCase("ServerReady", "ServerReady", S.ServerReadyRequest()))
    add(
        GrpcCase(
            "ServerMetadata",
            "ServerMetadata",
            S.ServerMetadataRequest(),
            compare=SHAPE,
            note="version is Triton's release; extensions list what each implements",
        )
    )
    add(GrpcCase("Health", "Health", health_pb2.HealthCheckRequest()))
    for m in MODELS:
        add(GrpcCase(f"ModelMetadata_{m}", "ModelMetadata", S.ModelMetadataRequest(name=m)))
        add(GrpcCase(f"ModelConfig_{m}", "ModelConfig", S.ModelConfigRequest(name=m)))
        add(GrpcCase(f"ModelReady_{m}", "ModelReady", S.ModelReadyRequest(name=m)))
    add(GrpcCase("ModelMetadata_unknown", "ModelMetadata", S.ModelMetadataRequest(name="nope")))
    add(
        GrpcCase(
            "ModelMetadata_unknown_version",
            "ModelMetadata",
            S.ModelMetadataRequest(name="add_sub", version="2"),
        )
    )
    add(
        GrpcCase(
            "ModelMetadata_version_text",
            "ModelMetadata",
            S.ModelMetadataRequest(name="add_sub", version="abc"),
        )
    )
    add(GrpcCase("ModelConfig_unknown", "ModelConfig", S.ModelConfigRequest(name="nope")))
    add(GrpcCase("ModelReady_unknown", "ModelReady", S.ModelReadyRequest(name="nope")))
    add(
        GrpcCase(
            "ModelReady_unknown_version",
            "ModelReady",
            S.ModelReadyRequest(name="add_sub", version="2"),
        )
    )
    add(
        GrpcCase(
            "ModelStatistics_unknown", "ModelStatistics", S.ModelStatisticsRequest(name="nope")
        )
    )
    add(
        GrpcCase(
            "ModelStatistics_add_sub",
            "ModelStatistics",
            S.ModelStatisticsRequest(name="add_sub"),
            compare=COUNTS,
            note="durations and timestamps differ",
        )
    )

    add(GrpcCase("ModelInfer_add_sub", "ModelInfer", _add_sub_grpc(id="g1")))
    add(GrpcCase("ModelInfer_add_sub_one_output", "ModelInfer", _add_sub_grpc(outputs=["OUTPUT1"])))
    typed = S.ModelInferRequest(model_name="add_sub")
    for name in ("INPUT0", "INPUT1"):
        t = typed.inputs.add(name=name, datatype="FP32", shape=[1, 4])
        t.contents.fp32_contents.extend([1, 2, 3, 4])
    add(GrpcCase("ModelInfer_add_sub_typed_contents", "ModelInfer", typed))
    add(
        GrpcCase(
            "ModelInfer_string_identity",
            "ModelInfer",
            _infer_request(
                "string_identity", [("INPUT0", "BYTES", [2], _bytes_tensor([b"a", b"bc"]))]
            ),
        )
    )
    add(GrpcCase("ModelInfer_wrong_dtype", "ModelInfer", _add_sub_grpc(dtype="INT32")))
    add(GrpcCase("ModelInfer_wrong_shape", "ModelInfer", _add_sub_grpc(a=[1, 2, 3])))
    req = _add_sub_grpc()
    del req.inputs[0]
    del req.raw_input_contents[0]
    add(GrpcCase("ModelInfer_missing_input", "ModelInfer", req))
    add(GrpcCase("ModelInfer_unknown_output", "ModelInfer", _add_sub_grpc(outputs=["BAD"])))
    add(GrpcCase("ModelInfer_unknown_model", "ModelInfer", _int_grpc("nope", [1])))
    add(GrpcCase("ModelInfer_unknown_version", "ModelInfer", _add_sub_grpc(version="2")))
    add(
        GrpcCase("ModelInfer_triton_parameter", "ModelInfer", _add_sub_grpc(params={"triton_x": 1}))
    )
    req = _add_sub_grpc()
    req.raw_input_contents[1] = req.raw_input_contents[1][:12]
    add(GrpcCase("ModelInfer_raw_too_short", "ModelInfer", req))
    req = _add_sub_grpc()
    req.raw_input_contents.append(b"\0" * 16)
    add(GrpcCase("ModelInfer_raw_extra", "ModelInfer", req))
    add(
        GrpcCase(
            "ModelInfer_bytes_bad_prefix",
            "ModelInfer",
            _infer_request(
                "string_identity",
                [
                    (
                        "INPUT0",
                        "BYTES",
                        [2],
                        struct.pack("<I", 1) + b"a" + struct.pack("<I", 40) + b"b",
                    )
                ],
            ),
        )
    )
    add(
        GrpcCase(
            "ModelInfer_decoupled", "ModelInfer", _int_grpc("repeat_decoupled", [1, 2], name="IN")
        )
    )
    add(GrpcCase("ModelInfer_raises_exception", "ModelInfer", _int_grpc("raises", [-1])))
    add(GrpcCase("ModelInfer_raises_triton_error", "ModelInfer", _int_grpc("raises", [0])))

    add(GrpcCase("Stream_add_sub", "ModelStreamInfer", [_add_sub_grpc(id="s1")]))
    add(
        GrpcCase(
            "Stream_decoupled",
            "ModelStreamInfer",
            [_int_grpc("repeat_decoupled", [4, 5, 6], name="IN", id="d1")],
        )
    )
    add(
        GrpcCase(
            "Stream_decoupled_empty_final",
            "ModelStreamInfer",
            [
                _int_grpc(
                    "repeat_decoupled",
                    [4, 5],
                    name="IN",
                    id="d2",
                    params={"triton_enable_empty_final_response": True},
                )
            ],
        )
    )
    add(
        GrpcCase(
            "Stream_errors_keep_stream",
            "ModelStreamInfer",
            [
                _int_grpc("raises", [0], id="e1"),
                _add_sub_grpc(dtype="INT32", id="e2"),
                _int_grpc("nope", [1], id="e3"),
                _int_grpc("raises", [3], id="e4"),
            ],
        )
    )
    add(
        GrpcCase(
            "Stream_non_decoupled_empty_final",
            "ModelStreamInfer",
            [
                _int_grpc(
                    "raises", [3], id="n1", params={"triton_enable_empty_final_response": True}
                )
            ],
        )
    )

    add(GrpcCase("RepositoryIndex", "RepositoryIndex", S.RepositoryIndexRequest()))
    add(GrpcCase("RepositoryIndex_ready", "RepositoryIndex", S.RepositoryIndexRequest(ready=True)))
    add(
        GrpcCase(
            "RepositoryModelLoad_none_mode",
            "RepositoryModelLoad",
            S.RepositoryModelLoadRequest(model_name="add_sub"),
        )
    )
    add(
        GrpcCase(
            "RepositoryModelUnload_none_mode",
            "RepositoryModelUnload",
            S.RepositoryModelUnloadRequest(model_name="add_sub"),
        )
    )
    add(
        GrpcCase(
            "LogSettings",
            "LogSettings",
            S.LogSettingsRequest(),
            compare=SHAPE,
            note="log_file / verbosity reflect each server's flags",
        )
    )
    add(
        GrpcCase(
            "TraceSetting",
            "TraceSetting",
            S.TraceSettingRequest(),
            compare=SHAPE,
            note="trace_file paths differ",
        )
    )
    add(
        GrpcCase(
            "SystemSharedMemoryStatus",
            "SystemSharedMemoryStatus",
            S.SystemSharedMemoryStatusRequest(),
        )
    )
    add(
        GrpcCase(
            "CudaSharedMemoryStatus", "CudaSharedMemoryStatus", S.CudaSharedMemoryStatusRequest()
        )
    )
    return c


def _message_doc(msg: Any) -> dict[str, Any]:
    doc = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    for key in ("raw_output_contents",):
        if key in doc:  # base64 in the JSON mapping: hex reads better in a diff
            doc[key] = [base64.b64decode(v).hex() for v in doc[key]]
    return doc


def _grpc_error(err: grpc.RpcError) -> dict[str, Any]:
    return {"code": err.code().name, "details": err.details()}


def run_grpc(target: str, cases: list[GrpcCase]) -> dict[str, dict[str, Any]]:
    """Send every case in order; {case name: {"code", "details"?, "response"? | "stream"?}}."""
    out: dict[str, dict[str, Any]] = {}
    with grpc.insecure_channel(target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        for case in cases:
            try:
                if case.method == "Health":
                    reply = health.Check(case.request, timeout=30)
                    out[case.name] = {"code": "OK", "response": _message_doc(reply)}
                elif case.method == "ModelStreamInfer":
                    replies = list(stub.ModelStreamInfer(iter(case.request), timeout=30))
                    out[case.name] = {"code": "OK", "stream": [_message_doc(r) for r in replies]}
                else:
                    reply = getattr(stub, case.method)(case.request, timeout=30)
                    out[case.name] = {"code": "OK", "response": _message_doc(reply)}
            except grpc.RpcError as err:
                out[case.name] = _grpc_error(err)
    return out


# -- metrics ----------------------------------------------------------------------------------


def scrape_metrics(url: str) -> dict[str, dict[str, Any]]:
    """{family: {"type", "labels": sorted label names, "models": sorted model label values}}
    for Triton's nv_* families (values are run-dependent and not recorded)."""
    text = httpx.get(url, timeout=30).text
    out: dict[str, dict[str, Any]] = {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("nv_"):
            continue
        labels = sorted({k for s in fam.samples for k in s.labels})
        models = sorted({s.labels["model"] for s in fam.samples if "model" in s.labels})
        out[fam.name] = {
            "type": fam.type,
            "help": fam.documentation,
            "labels": labels,
            "models": models,
        }
    return out


Runner = Callable[[str, list[Any]], dict[str, dict[str, Any]]]
