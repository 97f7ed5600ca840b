"""KServe v2 /infer bodies <-> InferenceRequest / InferenceResponse, with Triton's binary
tensor data extension (JSON header + raw tensors; `Inference-Header-Content-Length`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
from tritonclient.grpc import model_config_pb2

from tritium.frontends import shared_memory as shm_io
from tritium.frontends.http import json_parse
from tritium.frontends.tensor_codec import (
    array_from_json,
    array_from_raw,
    array_to_json,
    array_to_raw,
)
from tritium.server.errors import TritonError, internal, invalid_arg, unsupported
from tritium.server.input_order import triton_input_order
from tritium.server.types import (
    TRITON_TO_NUMPY,
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    Tensor,
    config_to_wire_dtype,
)

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
    """Parse a request JSON document; parse errors are INTERNAL with RapidJSON's message,
    as Triton's TritonJson reports them."""
    return json_parse.loads(data)


# TritonJson's accessor errors (triton/common/triton_json.h)
def not_member(key: str) -> TritonError:
    return internal(
        f"Unable to parse '{key}': attempt to access non-existing object member '{key}'"
    )


def not_kind(key: str, kind: str, what: str | None = None) -> TritonError:
    return internal(f"Unable to parse '{key}': attempt to access JSON non-{kind} as {what or kind}")


def _atoi(value: str) -> int:
    """C's atoi: leading blanks, a sign, the digits that follow; 0 when there are none."""
    m = _ATOI.match(value)
    return int(m.group(0)) if m else 0


_ATOI = re.compile(r"\s*[+-]?\d+")


def parse_header_length(value: str | None, body_length: int) -> int:
    """The `Inference-Header-Content-Length` header, read with atoi as Triton does; absent
    means the whole body is JSON. 0 (or a value that is not a number) means a raw binary
    request: the whole body is the data of the model's single input."""
    if value is None:
        return body_length
    parsed = _atoi(value)
    if parsed < 0 or parsed > body_length:
        raise invalid_arg(
            f"inference header size should be in range (0, {body_length}), got: {value}"
        )
    return parsed


def check_parameter_value(key: str, value: Any) -> None:
    # Triton 2.51 takes double parameters too, although its message names three types.
    if isinstance(value, bool | int | str | float):
        return
    raise invalid_arg(
        f"parameter '{key}' has invalid type. It should be either 'int', 'bool', or 'string'."
    )


def _uint(params: dict[str, Any], key: str) -> int:
    value = params[key]
    if type(value) is not int or not 0 <= value < 2**64:
        raise not_kind(key, "unsigned-integer")
    return value


def _bool(params: dict[str, Any], key: str) -> bool:
    value = params[key]
    if not isinstance(value, bool):
        raise not_kind(key, "boolean")
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
    if "shape" not in io:
        raise not_member("shape")
    shape = io["shape"]
    if not isinstance(shape, list):
        raise not_kind("shape", "array")
    for d in shape:
        if type(d) is not int or not 0 <= d < 2**64:
            raise not_kind("shape", "unsigned-integer")
    return shape


def _string(io: dict[str, Any], key: str) -> str:
    if key not in io:
        raise not_member(key)
    value = io[key]
    if not isinstance(value, str):
        raise not_kind(key, "string")
    return value


def parse_raw_request(
    body: bytes, model_name: str, model_version: int, config: Any
) -> tuple[InferenceRequest, OutputFormat]:
    """Triton's raw binary request: the whole body is the data of the model's only input,
    its datatype and shape deduced from the model configuration."""
    req = InferenceRequest(model_name=model_name, model_version=model_version)
    prefix = f"[request id: {req.log_id}] "
    if len(config.input) != 1:
        raise invalid_arg(
            f"{prefix}Raw request must only have 1 input (found 1) to be deduced but got "
            f"{len(config.input)} inputs in '{model_name}' model configuration"
        )
    spec = config.input[0]
    datatype = config_to_wire_dtype(model_config_pb2.DataType.Name(spec.data_type))
    shape = [1] if config.max_batch_size > 0 else []
    dynamic, fixed = -1, 1
    for d in spec.dims:
        if d == -1:
            if dynamic != -1:
                raise invalid_arg(
                    f"{prefix}The shape of the raw input '{spec.name}' can not be deduced "
                    "because there are more than one variable-sized dimension"
                )
            dynamic = len(shape)
        else:
            fixed *= d
        shape.append(d)
    if datatype == "BYTES":
        if dynamic != -1 or fixed != 1:
            raise invalid_arg(
                f"{prefix}For BYTE datatype raw input '{spec.name}', the model must have "
                "input shape [1]"
            )
        data = np.empty(1, dtype=np.object_)
        data[0] = bytes(body)
        data = data.reshape(shape)
    else:
        if dynamic != -1:
            itemsize = np.dtype(TRITON_TO_NUMPY[datatype]).itemsize
            shape[dynamic] = len(body) // itemsize // fixed if fixed else 0
        data = array_from_raw(spec.name, datatype, shape, body, model_name, req.log_id)
    req.inputs[spec.name] = Tensor(spec.name, datatype, data)
    return req, OutputFormat()


@dataclass
class _RawInput:
    name: str
    datatype: str
    shape: list[int]
    raw: memoryview
    params: dict[str, Any]


def parse_infer_request(
    body: bytes,
    header_length: int,
    model_name: str,
    model_version: int = -1,
    shm: shm_io.SharedMemoryManager | None = None,
) -> tuple[InferenceRequest, OutputFormat]:
    """A /infer body (JSON header of `header_length` bytes + binary tensors) -> request.
    Inputs and outputs with `shared_memory_*` parameters go through `shm`'s regions."""
    view = memoryview(body)
    doc = decode_json(view[:header_length] if header_length != len(body) else body)
    if not isinstance(doc, dict):
        raise not_member("inputs")
    req = InferenceRequest(model_name=model_name, model_version=model_version)
    if "id" in doc:
        if not isinstance(doc["id"], str):
            raise not_kind("id", "string")
        req.id = doc["id"]
    fmt = OutputFormat()
    if "parameters" in doc:
        fmt.default_binary = apply_request_parameters(req, doc["parameters"])

    if "inputs" not in doc:
        raise not_member("inputs")
    inputs = doc["inputs"]
    if not isinstance(inputs, list):
        raise not_kind("inputs", "array")
    offset = header_length
    raw_inputs: list[_RawInput] = []
    for io in inputs:
        if not isinstance(io, dict):
            raise internal("attempt to access JSON non-object as object")
        kind = _content_kind(io)
        name = _string(io, "name")
        datatype = _string(io, "datatype")
        shape = _shape(io)
        if name in req.inputs or any(r.name == name for r in raw_inputs):
            raise invalid_arg(
                f"[request id: {req.log_id}] input '{name}' already exists in request"
            )
        params = io.get("parameters") or {}
        if kind == "binary":
            size = params["binary_data_size"]
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise not_kind("binary_data_size", "unsigned-integer")
            available = len(body) - offset
            if size > available:
                raise invalid_arg(
                    f"unexpected size for input '{name}', expecting {size - available} "
                    f"additional bytes for model '{model_name}'"
                )
            tensor_params = {k: v for k, v in params.items() if k != "binary_data_size"}
            raw_inputs.append(
                _RawInput(name, datatype, shape, view[offset : offset + size], tensor_params)
            )
            offset += size
            continue
        if kind == "shm":
            data = shm_io.read_input(shm, name, datatype, shape, params, model_name, req.log_id)
            tensor_params = {k: v for k, v in params.items() if k not in shm_io.SHM_PARAMETERS}
            req.inputs[name] = Tensor(name, datatype, data, tensor_params)
            continue
        data = array_from_json(name, datatype, shape, io["data"])
        req.inputs[name] = Tensor(name, datatype, data, dict(params))
    if offset != len(body):
        raise invalid_arg(f"unexpected additional input data for model '{model_name}'")
    # Triton's core checks the sizes of binary inputs once the whole request is read, in
    # the order of its inputs' unordered_map.
    by_name = {r.name: r for r in raw_inputs}
    order = triton_input_order([*req.inputs, *by_name]) if len(raw_inputs) > 1 else list(by_name)
    decoded = {
        r.name: array_from_raw(r.name, r.datatype, r.shape, r.raw, model_name, req.log_id)
        for r in (by_name[n] for n in order if n in by_name)
    }
    for r in raw_inputs:
        req.inputs[r.name] = Tensor(r.name, r.datatype, decoded[r.name], r.params)

    if "outputs" in doc:
        outputs = doc["outputs"]
        if not isinstance(outputs, list):
            raise not_kind("outputs", "array")
        req.requested_outputs = []
        for out in outputs:
            if not isinstance(out, dict):
                raise internal("attempt to access JSON non-object as object")
            name = _string(out, "name")
            params = out.get("parameters") or {}
            if not isinstance(params, dict):
                raise not_kind("parameters", "object")
            shm_io.check_output(shm, params)
            if "classification" in params:
                raise unsupported("classification outputs are not supported")
            binary = params.get("binary_data", False)
            if not isinstance(binary, bool):
                raise not_kind("binary_data", "boolean")
            fmt.binary[name] = binary
            extra = {k: v for k, v in params.items() if k != "binary_data"} if params else {}
            req.requested_outputs.append(RequestedOutput(name, extra))
    return req, fmt


def encode_infer_response(
    response: InferenceResponse,
    request: InferenceRequest,
    model_name: str,
    model_version: int,
    fmt: OutputFormat,
    shm: shm_io.SharedMemoryManager | None = None,
) -> tuple[bytes, int | None]:
    """Response JSON (+ appended binary outputs). Returns (body, header length or None).
    Outputs requested into shared memory are written there and carry no data."""
    if response.error is not None:
        raise response.error
    doc: dict[str, Any] = {}
    if request.id:
        doc["id"] = request.id
    doc["model_name"] = model_name
    doc["model_version"] = str(model_version)
    if response.parameters:
        doc["parameters"] = response.parameters
    requested = (
        None
        if request.requested_outputs is None
        else {o.name: o.parameters for o in request.requested_outputs}
    )
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for t in response.outputs:
        if requested is not None and t.name not in requested:
            continue
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        out_params = requested.get(t.name) if requested is not None else None
        if shm is not None and out_params and shm_io.REGION in out_params:
            entry["parameters"] = shm_io.write_output(shm, t.name, t.datatype, t.data, out_params)
        elif fmt.is_binary(t.name):
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
