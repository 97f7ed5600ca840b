"""Triton's generate extension: a flat JSON object <-> tensors, and SSE framing.

Top-level keys (except `id`) and keys inside `parameters` that name a model input become
tensors (scalar or 1-D, reshaped to the input's dims); the rest become request parameters.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from tritium.frontends.tensor_codec import array_from_json, array_to_json
from tritium.server.errors import TritonError, internal, invalid_arg
from tritium.server.types import InferenceRequest, InferenceResponse, Tensor

EXACTLY_ONE_RESPONSE = (
    "generate expects model to produce exactly 1 response, use generate stream for model "
    "that generates various number of responses"
)


def fit_shape(name: str, dims: list[int], count: int) -> list[int]:
    """Distribute `count` elements over `dims`: fixed dims first, then the innermost -1
    takes the rest and other -1 dims become 1 (Triton's two-pass rule)."""
    shape = list(dims)
    for d in reversed(shape):
        if d != -1:
            if d == 0 or count % d:
                raise invalid_arg(
                    f"The schema can not convert input '{name}' to tensor with proper shape"
                )
            count //= d
    for i in range(len(shape) - 1, -1, -1):
        if shape[i] == -1:
            shape[i] = count
            count = 1
    if count != 1:
        raise invalid_arg(f"The schema can not convert input '{name}' to tensor with proper shape")
    return shape


def _parameter(key: str, value: Any) -> Any:
    # floats are accepted here (sampling parameters such as temperature=0.7)
    if isinstance(value, bool | int | float | str):
        return value
    raise invalid_arg(
        f"parameter '{key}' has invalid type. It should be either 'int', 'bool', or 'string'."
    )


def _add(req: InferenceRequest, key: str, value: Any, inputs: dict[str, dict[str, Any]]) -> None:
    meta = inputs.get(key)
    if meta is None:
        if key.startswith("triton_"):
            raise invalid_arg(
                "parameter keys starting with 'triton_' are reserved for Triton usage and "
                "should not be specified."
            )
        req.parameters[key] = _parameter(key, value)
        return
    values = value if isinstance(value, list) else [value]
    shape = fit_shape(key, [int(d) for d in meta["shape"]], len(values))
    data = array_from_json(key, meta["datatype"], shape, values)
    req.inputs[key] = Tensor(key, meta["datatype"], data)


def build_generate_request(
    doc: Any, model_name: str, model_version: int, input_metadata: list[dict[str, Any]]
) -> InferenceRequest:
    """A generate body -> InferenceRequest, using the model metadata's inputs."""
    if not isinstance(doc, dict):
        raise internal("Unable to parse the generate request: expected a JSON object")
    inputs = {m["name"]: m for m in input_metadata}
    req = InferenceRequest(model_name=model_name, model_version=model_version)
    for key, value in doc.items():
        if key == "id" and "id" not in inputs:
            if not isinstance(value, str):
                raise internal("Unable to parse 'id'")
            req.id = value
        elif key == "parameters" and "parameters" not in inputs:
            if not isinstance(value, dict):
                raise invalid_arg("Expected JSON object for keyword: 'parameters'")
            for k, v in value.items():
                _add(req, k, v, inputs)
        elif key == "parameters":
            raise invalid_arg(
                "Keyword 'parameters' for nested schema also given as input tensor name"
            )
        else:
            _add(req, key, value, inputs)
    return req


def generate_response_json(
    response: InferenceResponse, request: InferenceRequest, model_name: str, model_version: int
) -> dict[str, Any]:
    """{"id"?, "model_name", "model_version", <output>: value}; one-element outputs are scalars."""
    doc: dict[str, Any] = {}
    if request.id:
        doc["id"] = request.id
    doc["model_name"] = model_name
    doc["model_version"] = str(model_version)
    wanted = (
        None if request.requested_outputs is None else {o.name for o in request.requested_outputs}
    )
    for t in response.outputs:
        if wanted is not None and t.name not in wanted:
            continue
        arr = np.asarray(t.data)
        values = array_to_json(t.name, t.datatype, arr)
        doc[t.name] = values[0] if arr.size == 1 else values
    return doc


def sse_event(doc: dict[str, Any]) -> bytes:
    """One server-sent event: `data: <json>\\n\\n` (Triton sends no [DONE])."""
    return b"data: " + msgspec.json.encode(doc) + b"\n\n"


def sse_error(err: TritonError) -> bytes:
    return sse_event({"error": err.message})
