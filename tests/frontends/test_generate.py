"""The generate extension's key mapping and SSE framing."""

from __future__ import annotations

import numpy as np
import pytest

from tritium.frontends.http.generate import (
    build_generate_request,
    fit_shape,
    generate_response_json,
    sse_event,
)
from tritium.server.errors import ErrorCode, TritonError
from tritium.server.types import InferenceResponse, Tensor

VLLM_INPUTS = [
    {"name": "text_input", "datatype": "BYTES", "shape": [1]},
    {"name": "stream", "datatype": "BOOL", "shape": [1]},
    {"name": "sampling_parameters", "datatype": "BYTES", "shape": [1]},
]


def test_inputs_become_tensors_and_the_rest_parameters() -> None:
    req = build_generate_request(
        {
            "id": "g1",
            "text_input": "hi",
            "parameters": {"stream": False, "temperature": 0.5, "max_tokens": 4},
        },
        "vllm_model",
        -1,
        VLLM_INPUTS,
    )
    assert req.id == "g1"
    assert list(req.inputs) == ["text_input", "stream"]
    assert req.inputs["text_input"].data.tolist() == [b"hi"]
    assert req.inputs["stream"].data.dtype == np.bool_ and req.inputs["stream"].data.shape == (1,)
    assert req.parameters == {"temperature": 0.5, "max_tokens": 4}


def test_batched_input_gets_a_leading_one() -> None:
    req = build_generate_request(
        {"INPUT0": [1.0, 2.0, 3.0, 4.0]},
        "add_sub",
        -1,
        [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}],
    )
    assert req.inputs["INPUT0"].data.shape == (1, 4)


@pytest.mark.parametrize(
    "dims,count,shape", [([-1], 3, [3]), ([-1, 4], 8, [2, 4]), ([-1, -1], 5, [1, 5]), ([1], 1, [1])]
)
def test_fit_shape(dims: list[int], count: int, shape: list[int]) -> None:
    assert fit_shape("x", dims, count) == shape


def test_fit_shape_refuses_what_does_not_divide() -> None:
    with pytest.raises(TritonError) as e:
        fit_shape("x", [4], 3)
    assert e.value.code is ErrorCode.INVALID_ARG
    assert e.value.message == "The schema can not convert input 'x' to tensor with proper shape"


def test_non_scalar_parameter_is_refused() -> None:
    with pytest.raises(TritonError) as e:
        build_generate_request(
            {"text_input": "a", "parameters": {"stop": ["x"]}}, "m", -1, VLLM_INPUTS
        )
    assert e.value.code is ErrorCode.INVALID_ARG


def test_response_scalars_and_lists() -> None:
    req = build_generate_request({"id": "7", "text_input": "a"}, "m", -1, VLLM_INPUTS)
    resp = InferenceResponse(
        outputs=[
            Tensor("text_output", "BYTES", np.array([b"hello"], dtype=np.object_)),
            Tensor("ids", "INT32", np.array([1, 2], dtype=np.int32)),
        ]
    )
    doc = generate_response_json(resp, req, "m", 1)
    assert doc == {
        "id": "7",
        "model_name": "m",
        "model_version": "1",
        "text_output": "hello",
        "ids": [1, 2],
    }


def test_sse_framing() -> None:
    assert sse_event({"a": 1}) == b'data: {"a":1}\n\n'
