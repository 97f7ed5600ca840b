"""KServe v2 /infer bodies <-> InferenceRequest / InferenceResponse, with Triton's binary
tensor data extension (JSON header + raw tensors; `Inference-Header-Content-Length`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from tritium.frontends.tensor_codec import (
    array_from_json,
    array_from_raw,
    array_to_json,
    array_to_raw,
)
from tritium.server.errors import TritonError, internal, invalid_arg, unsupported
from tritium.server.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

_RESERVED_PARAMETERS = {"sequence_id", "sequence_start", "sequence_end", "priority", "timeout"}
SEQUENCE_START, SEQUENCE_END = 1, 2


@dataclass
class OutputFormat:
    """How each output goes back: binary (appended raw) or JSON `data`."""

    binary: dict[str, bool] = field(default_factory=dict)  # outputs named in the request
    default_binary: bool = False  # request-level binary_data_output, for unnamed outputs

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.default_binary)


def decode_json(data: bytes | memoryview) -> Any:
    """Parse a request JSON document; parse errors are INTERNAL, as Triton's TritonJson."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as e:
        raise internal(f"failed to parse the request JSON buffer: {e}") from None


def parse_header_length(value: str | None, body_length: int) -> int:
    """The `Inference-Header-Content-Length` header; absent means the whole body is JSON."""
    if value is None:
        return body_length
    try:
        parsed = int(value)
    except ValueError:
        raise invalid_arg(
            f"Unable to parse Inference-Header-Content-Length, got: {value}"
        ) from None
    if parsed < 0 or parsed > body_length:
        raise invalid_arg(
            f"inference header size should be in range (0, {body_length}), got: {value}"
        )
    return parsed


def check_parameter_value(key: str, value: Any) -> None:
    if isinstance(value, bool | int | str):
        return
    raise invalid_arg(
        f"parameter '{key}' has invalid type. It should be either 'int', 'bool', or 'string'."
    )


def _uint(params: dict[str, Any], key: str) -> int:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise internal(f"Unable to parse '{key}': attempt to access JSON non-unsigned-integer")
    return value


def _bool(params: dict[str, Any], key: str) -> bool:
    value = params[key]
    if not isinstance(value, bool):
        raise internal(f"Unable to parse '{key}': attempt to access JSON non-boolean as boolean")
    return value


def apply_request_parameters(req: InferenceRequest, params: Any) -> bool:
    """Triton's request-level parameters; returns binary_data_output."""
    if not isinstance(params, dict):
        raise internal("failed to get request params.")
    binary_output = False
    for key in params:
        if key == "sequence_id":
            value = params[key]
            if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
                req.correlation_id = value
            else:
                raise internal("Unable to parse 'sequence_id'")
        elif key == "sequence_start":
            if _bool(params, key):
                req.flags |= SEQUENCE_START
        elif key == "sequence_end":
            if _bool(params, key):
                req.flags |= SEQUENCE_END
        elif key == "priority":
            req.priority = _uint(params, key)
        elif key == "timeout":
            req.timeout_us = _uint(params, key)
        elif key == "binary_data_output":
            binary_output = _bool(params, key)
        elif key.startswith("triton_"):
            raise invalid_arg(
                "parameter keys starting with 'triton_' are reserved for Triton usage and "
                "should not be specified."
            )
        else:
            check_parameter_value(key, params[key])
            req.parameters[key] = params[key]
    return binary_output


def _content_kind(io: dict[str, Any]) -> str:
    params = io.get("parameters") or {}
    has_data = "data" in io
    has_binary = isinstance(params, dict) and "binary_data_size" in params
    has_shm = isinstance(params, dict) and "shared_memory_region" in params
    if has_data + has_binary + has_shm != 1:
        msg = (
            "Input must set only one of the following fields: 'data', 'binary_data_size' in "
            "'parameters', 'shared_memory_region' in 'parameters'. But"
        )
        if not (has_data or has_binary or has_shm):
            msg += " no field is set"
        else:
            msg += " set" + "".join(
                f" '{n}'"
                for n, on in (
                    ("data", has_data),
                    ("binary_data_size", has_binary),
                    ("shared_memory_region", has_shm),
                )
                if on
            )
        raise invalid_arg(msg)
    return "data" if has_data else ("binary" if has_binary else "shm")


def _shape(io: dict[str, Any]) -> list[int]:
    shape = io.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise internal("Unable to parse 'shape'")
    return shape


def _string(io: dict[str, Any], key: str) -> str:
    value = io.get(key)
    if not isinstance(value, str):
        raise internal(f"Unable to parse '{key}'")
    return value


def parse_infer_request(
    body: bytes, header_length: int, model_name: str, model_version: int = -1
) -> tuple[InferenceRequest, OutputFormat]:
    """A /infer body (JSON header of `header_length` bytes + binary tensors) -> request."""
    if header_length == 0:
        raise invalid_arg(
            "must specify valid 'Infer-Header-Content-Length' in request header and "
            "'binary_data_size' when passing inputs in binary data format"
        )
    view = memoryview(body)
    doc = decode_json(view[:header_length])
    if not isinstance(doc, dict):
        raise internal("Unable to parse 'inputs'")
    req = InferenceRequest(model_name=model_name, model_version=model_version)
    if "id" in doc:
        if not isinstance(doc["id"], str):
            raise internal("Unable to parse 'id'")
        req.id = doc["id"]
    fmt = OutputFormat()
    if "parameters" in doc:
        fmt.default_binary = apply_request_parameters(req, doc["parameters"])

    inputs = doc.get("inputs")
    if not isinstance(inputs, list):
        raise internal("Unable to parse 'inputs'")
    offset = header_length
    for io in inputs:
        if not isinstance(io, dict):
            raise internal("Unable to parse 'inputs'")
        kind = _content_kind(io)
        name = _string(io, "name")
        datatype = _string(io, "datatype")
        shape = _shape(io)
        if name in req.inputs:
            raise invalid_arg(f"input '{name}' already exists in request")
        params = io.get("parameters") or {}
        if kind == "binary":
            size = params["binary_data_size"]
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise internal("Unable to parse 'binary_data_size'")
            available = len(body) - offset
            if size > available:
                raise invalid_arg(
                    f"unexpected size for input '{name}', expecting {size - available} "
                    f"additional bytes for model '{model_name}'"
                )
            data = array_from_raw(
                name, datatype, shape, view[offset : offset + size], model_name, req.log_id
            )
            offset += size
        elif kind == "shm":
            raise invalid_arg(
                f"Unable to find shared memory region: '{params['shared_memory_region']}'"
            )
        else:
            data = array_from_json(name, datatype, shape, io["data"])
        tensor_params = {k: v for k, v in params.items() if k != "binary_data_size"}
        req.inputs[name] = Tensor(name, datatype, data, tensor_params)
    if offset != len(body):
        raise invalid_arg(f"unexpected additional input data for model '{model_name}'")

    if "outputs" in doc:
        outputs = doc["outputs"]
        if not isinstance(outputs, list):
            raise internal("Unable to parse 'outputs'")
        req.requested_outputs = []
        for out in outputs:
            if not isinstance(out, dict):
                raise internal("Unable to parse 'outputs'")
            name = _string(out, "name")
            params = out.get("parameters") or {}
            if not isinstance(params, dict):
                raise internal("Unable to parse 'parameters'")
            if "shared_memory_region" in params:
                raise invalid_arg(
                    f"Unable to find shared memory region: '{params['shared_memory_region']}'"
                )
            if "classification" in params:
                raise unsupported("classification outputs are not supported")
            binary = params.get("binary_data", False)
            if not isinstance(binary, bool):
                raise internal("Unable to parse 'binary_data'")
            fmt.binary[name] = binary
            extra = {k: v for k, v in params.items() if k != "binary_data"}
            req.requested_outputs.append(RequestedOutput(name, extra))
    return req, fmt


def encode_infer_response(
    response: InferenceResponse,
    request: InferenceRequest,
    model_name: str,
    model_version: int,
    fmt: OutputFormat,
) -> tuple[bytes, int | None]:
    """Response JSON (+ appended binary outputs). Returns (body, header length or None)."""
    if response.error is not None:
        raise response.error
    doc: dict[str, Any] = {}
    if request.id:
        doc["id"] = request.id
    doc["model_name"] = model_name
    doc["model_version"] = str(model_version)
    if response.parameters:
        doc["parameters"] = response.parameters
    wanted = (
        None if request.requested_outputs is None else {o.name for o in request.requested_outputs}
    )
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for t in response.outputs:
        if wanted is not None and t.name not in wanted:
            continue
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if fmt.is_binary(t.name):
            raw = array_to_raw(np.asarray(t.data), t.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = array_to_json(t.name, t.datatype, np.asarray(t.data))
        outputs.append(entry)
    doc["outputs"] = outputs
    header = msgspec.json.encode(doc)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def error_body(err: TritonError | str) -> bytes:
    message = err.message if isinstance(err, TritonError) else err
    return msgspec.json.encode({"error": message})
