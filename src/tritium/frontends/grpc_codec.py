"""gRPC ModelInferRequest / ModelInferResponse <-> InferenceRequest / InferenceResponse.

Inputs come as typed `contents` or as `raw_input_contents`; outputs always go back in
`raw_output_contents` (BYTES length-prefixed), as Triton does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from tritium.frontends import shared_memory as shm_io
from tritium.frontends.tensor_codec import array_from_raw, array_to_raw, element_count
from tritium.server.errors import invalid_arg
from tritium.server.input_order import triton_input_order
from tritium.server.types import (
    TRITON_TO_NUMPY,
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    Tensor,
)

SEQUENCE_START, SEQUENCE_END = 1, 2
# Parameters a client may set although they start with "triton_".
STREAM_PARAMETERS = {"triton_enable_empty_final_response"}

_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parse_version(version: str) -> int:
    """'' -> -1 (the policy's choice); anything else must be an integer."""
    if not version:
        return -1
    try:
        return int(version)
    except ValueError:
        raise invalid_arg(
            f"failed to get model version from specified version string '{version}' "
            "(details: stol), version should be an integral value > 0"
        ) from None


def parameter_value(param: Any) -> Any:
    """InferParameter / ModelRepositoryParameter oneof -> Python value."""
    which = param.WhichOneof("parameter_choice")
    return None if which is None else getattr(param, which)


def _apply_parameters(req: InferenceRequest, params: Any) -> None:
    for key, param in params.items():
        value = parameter_value(param)
        if key == "sequence_id":
            req.correlation_id = value
        elif key == "sequence_start":
            if value:
                req.flags |= SEQUENCE_START
        elif key == "sequence_end":
            if value:
                req.flags |= SEQUENCE_END
        elif key == "priority":
            req.priority = int(value)
        elif key == "timeout":
            req.timeout_us = int(value)
        elif key in ("binary_data_output", *STREAM_PARAMETERS):
            continue
        elif key.startswith("triton_"):
            raise invalid_arg(
                "parameter keys starting with 'triton_' are reserved for Triton usage. Only "
                "the following keys starting with 'triton_' are allowed: "
                + ", ".join(sorted(STREAM_PARAMETERS))
            )
        else:
            req.parameters[key] = value


def _from_contents(io: Any, model_name: str, log_id: str) -> np.ndarray:
    name, datatype, shape = io.name, io.datatype, list(io.shape)
    if datatype not in TRITON_TO_NUMPY:
        raise invalid_arg(f"invalid datatype for input {name}")
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:  # FP16 / BF16 have no typed contents
        raise invalid_arg(
            f"[request id: {log_id}] {datatype} input '{name}' must be sent in raw_input_contents"
        )
    values = getattr(io.contents, field)
    count = element_count(shape)
    if datatype == "BYTES":
        if len(values) != count:
            raise invalid_arg(
                f"[request id: {log_id}] expected {count} string elements for inference input "
                f"'{name}' for model '{model_name}', got {len(values)}"
            )
        arr = np.empty(count, dtype=np.object_)
        arr[:] = list(values)
        return arr.reshape(shape)
    dtype = np.dtype(TRITON_TO_NUMPY[datatype])
    if len(values) != count:
        raise invalid_arg(
            f"[request id: {log_id}] input byte size mismatch for input '{name}' for model "
            f"'{model_name}'. Expected {count * dtype.itemsize}, got "
            f"{len(values) * dtype.itemsize}"
        )
    return np.asarray(values, dtype=dtype).reshape(shape)


def request_from_proto(pb: Any, shm: shm_io.SharedMemoryManager | None = None) -> InferenceRequest:
    """ModelInferRequest -> InferenceRequest (tensors decoded, sizes checked). Inputs and
    outputs with `shared_memory_*` parameters go through `shm`'s regions."""
    model_name = pb.model_name
    req = InferenceRequest(model_name=model_name, model_version=parse_version(pb.model_version))
    req.id = pb.id
    _apply_parameters(req, pb.parameters)
    raw = pb.raw_input_contents
    # Triton ignores raw_input_contents beyond the inputs; shm inputs have no entry.
    n_raw = sum(1 for io in pb.inputs if shm_io.REGION not in io.parameters)
    if raw and len(raw) < n_raw:
        raise invalid_arg(
            f"[request id: {req.log_id}] expected {n_raw} raw_input_contents entries "
            f"for model '{model_name}', got {len(raw)}"
        )
    pending: list[tuple[Any, int]] = []
    i = -1
    for io in pb.inputs:
        if io.name in req.inputs or any(p.name == io.name for p, _ in pending):
            raise invalid_arg(
                f"[request id: {req.log_id}] input '{io.name}' already exists in request"
            )
        params = {k: parameter_value(v) for k, v in io.parameters.items()}
        if shm_io.REGION in params:
            data = shm_io.read_input(
                shm, io.name, io.datatype, list(io.shape), params, model_name, req.log_id
            )
            kept = {k: v for k, v in params.items() if k not in shm_io.SHM_PARAMETERS}
            req.inputs[io.name] = Tensor(io.name, io.datatype, data, kept)
            continue
        i += 1  # this input's raw_input_contents entry
        if raw:
            if io.HasField("contents"):
                raise invalid_arg(
                    f"contents field must not be specified when using raw_input_contents for "
                    f"'{io.name}' for model '{model_name}'"
                )
            pending.append((io, i))
            continue
        data = _from_contents(io, model_name, req.log_id)
        params = {k: parameter_value(v) for k, v in io.parameters.items()}
        req.inputs[io.name] = Tensor(io.name, io.datatype, data, params)
    # Triton's core checks raw sizes once the whole request is read, in the order of its
    # inputs' unordered_map.
    by_name = {io.name: (io, i) for io, i in pending}
    order = triton_input_order(list(by_name)) if len(pending) > 1 else list(by_name)
    decoded = {
        io.name: array_from_raw(
            io.name, io.datatype, list(io.shape), raw[i], model_name, req.log_id
        )
        for io, i in (by_name[n] for n in order)
    }
    for io, _ in pending:
        params = {k: parameter_value(v) for k, v in io.parameters.items()}
        req.inputs[io.name] = Tensor(io.name, io.datatype, decoded[io.name], params)
    if pb.outputs:
        req.requested_outputs = []
        for out in pb.outputs:
            params = {k: parameter_value(v) for k, v in out.parameters.items()}
            shm_io.check_output(shm, params)
            params.pop("binary_data", None)
            req.requested_outputs.append(RequestedOutput(out.name, params))
    return req


def _set_parameter(target: Any, key: str, value: Any) -> None:
    if isinstance(value, bool):
        target[key].bool_param = value
    elif isinstance(value, int):
        target[key].int64_param = value
    elif isinstance(value, float):
        target[key].double_param = value
    else:
        target[key].string_param = str(value)


def response_to_proto(
    response: InferenceResponse,
    request: InferenceRequest,
    model_name: str,
    model_version: int,
    shm: shm_io.SharedMemoryManager | None = None,
) -> Any:
    """InferenceResponse -> ModelInferResponse with raw_output_contents. Outputs requested
    into shared memory are written there: their raw_output_contents entry stays empty (so
    the others keep their positions) and is dropped when every output went to shm."""
    pb = service_pb2.ModelInferResponse(
        model_name=model_name, model_version=str(model_version), id=request.id
    )
    for key, value in response.parameters.items():
        _set_parameter(pb.parameters, key, value)
    requested = (
        None
        if request.requested_outputs is None
        else {o.name: o.parameters for o in request.requested_outputs}
    )
    any_raw = False
    for t in response.outputs:
        if requested is not None and t.name not in requested:
            continue
        out = pb.outputs.add()
        out.name = t.name
        out.datatype = t.datatype
        out.shape.extend(t.shape)
        out_params = requested.get(t.name) if requested is not None else None
        if shm is not None and out_params and shm_io.REGION in out_params:
            written = shm_io.write_output(shm, t.name, t.datatype, t.data, out_params)
            for key, value in written.items():
                _set_parameter(out.parameters, key, value)
            pb.raw_output_contents.append(b"")
        else:
            pb.raw_output_contents.append(array_to_raw(np.asarray(t.data), t.datatype))
            any_raw = True
    if not any_raw:
        del pb.raw_output_contents[:]
    return pb
