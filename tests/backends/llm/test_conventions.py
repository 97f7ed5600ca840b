"""Convention detection, auto-complete (field by field against Triton's vllm_backend), the
echo rules and the streaming deltas of response tensors."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tritium.backends.llm.conventions import (
    ResponseBuilder,
    auto_complete_config,
    detect_convention,
    parse_inputs,
)
from tritium.engine.outputs import CompletionOutput, Logprob, RequestOutput
from tritium.server.errors import TritonError
from tritium.server.types import InferenceRequest, Tensor

# What triton-inference-server/vllm_backend src/model.py `_auto_complete_inputs_and_outputs`
# adds, in its order, less `image` (multimodal) and `embedding_request` (embeddings), which
# this engine does not serve.
UPSTREAM_INPUTS = [
    ("text_input", "TYPE_STRING", [1], False),
    ("stream", "TYPE_BOOL", [1], True),
    ("sampling_parameters", "TYPE_STRING", [1], True),
    ("exclude_input_in_output", "TYPE_BOOL", [1], True),
    ("return_finish_reason", "TYPE_BOOL", [1], True),
    ("return_cumulative_logprob", "TYPE_BOOL", [1], True),
    ("return_logprobs", "TYPE_BOOL", [1], True),
    ("return_num_input_tokens", "TYPE_BOOL", [1], True),
    ("return_num_output_tokens", "TYPE_BOOL", [1], True),
]
UPSTREAM_OUTPUTS = [
    ("text_output", "TYPE_STRING", [-1]),
    ("finish_reason", "TYPE_STRING", [-1]),
    ("cumulative_logprob", "TYPE_FP32", [-1]),
    ("logprobs", "TYPE_STRING", [-1]),
    ("num_input_tokens", "TYPE_UINT32", [1]),
    ("num_output_tokens", "TYPE_UINT32", [-1]),
]


def config(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_auto_complete_matches_the_vllm_backend_field_by_field() -> None:
    c = auto_complete_config(config('backend: "vllm" instance_group [{count: 1 kind: KIND_MODEL}]'))
    assert c.model_transaction_policy.decoupled and c.max_batch_size == 0
    got_in = [
        (t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims), t.optional)
        for t in c.input
    ]
    got_out = [
        (t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in c.output
    ]
    assert got_in == UPSTREAM_INPUTS
    assert got_out == UPSTREAM_OUTPUTS
    assert detect_convention(c).name == "vllm"


def test_auto_complete_keeps_declared_tensors_and_forces_policy() -> None:
    c = auto_complete_config(config(
        'backend: "vllm" max_batch_size: 8 input [{name: "text_input" data_type: TYPE_STRING dims: [1]}]'
    ))  # fmt: skip
    assert c.max_batch_size == 0 and c.model_transaction_policy.decoupled
    assert [t.name for t in c.input].count("text_input") == 1
    assert len(c.input) == len(UPSTREAM_INPUTS)


def test_seed_convention_is_left_as_declared() -> None:
    text = """backend: "vllm"
      input [{name: "PROMPT" data_type: TYPE_STRING dims: [1]}, {name: "STREAM" data_type: TYPE_BOOL dims: [1]}]
      output [{name: "TEXT" data_type: TYPE_STRING dims: [-1]}]"""
    c = auto_complete_config(config(text))
    assert [t.name for t in c.input] == ["PROMPT", "STREAM"] and [t.name for t in c.output] == [
        "TEXT"
    ]
    conv = detect_convention(c)
    assert (conv.name, conv.prompt, conv.stream, conv.text_output) == (
        "seed",
        "PROMPT",
        "STREAM",
        "TEXT",
    )


def test_neither_convention_is_an_error() -> None:
    with pytest.raises(TritonError, match=r"'text_input'.*'PROMPT'"):
        detect_convention(config('name: "m" input [{name: "x" data_type: TYPE_FP32 dims: [1]}]'))


def _request(**tensors: object) -> InferenceRequest:
    inputs = {}
    for name, value in tensors.items():
        if isinstance(value, bool):
            inputs[name] = Tensor(name, "BOOL", np.array([value], dtype=np.bool_))
        else:
            inputs[name] = Tensor(name, "BYTES", np.array([str(value).encode()], dtype=np.object_))
    return InferenceRequest("m", inputs=inputs)


VLLM = detect_convention(auto_complete_config(config('backend: "vllm"')))


def test_echo_rules() -> None:
    assert parse_inputs(VLLM, _request(text_input="hi")).prepend_input is True
    assert parse_inputs(VLLM, _request(text_input="hi", stream=True)).prepend_input is False
    assert (
        parse_inputs(VLLM, _request(text_input="hi", exclude_input_in_output=True)).prepend_input
        is False
    )
    with pytest.raises(TritonError, match="When streaming"):
        parse_inputs(VLLM, _request(text_input="hi", stream=True, exclude_input_in_output=False))
    inputs = parse_inputs(VLLM, _request(text_input="hi", sampling_parameters='{"max_tokens": 3}',
                                         return_num_output_tokens=True))  # fmt: skip
    assert inputs.params.max_tokens == 3 and inputs.returns == {"return_num_output_tokens"}


def _out(texts: list[str], tokens: list[list[int]], finished: bool = False) -> RequestOutput:
    outs = [
        CompletionOutput(
            i,
            t,
            ids,
            -1.0,
            [{ids[0]: Logprob(-1.0, 1, "x")}] if ids else [],
            "length" if finished else None,
        )
        for i, (t, ids) in enumerate(zip(texts, tokens, strict=True))
    ]
    return RequestOutput("r", "P:", [1, 2, 3], outs, finished)


def test_streaming_deltas_per_sample_and_extras() -> None:
    inputs = parse_inputs(VLLM, _request(text_input="P:", stream=True, return_num_output_tokens=True,
                                         return_finish_reason=True, return_num_input_tokens=True))  # fmt: skip
    b = ResponseBuilder(VLLM, inputs)
    first = {t.name: t.data for t in b.tensors(_out(["a", "x"], [[5], [6]]), prepend=False)}
    assert [s.decode() for s in first["text_output"]] == ["a", "x"]
    second = {
        t.name: t.data for t in b.tensors(_out(["ab", "xy"], [[5, 7], [6, 8]], True), prepend=False)
    }
    assert [s.decode() for s in second["text_output"]] == ["b", "y"]
    assert second["num_output_tokens"].tolist() == [1, 1]
    assert second["num_input_tokens"].tolist() == [3]
    assert [s.decode() for s in second["finish_reason"]] == ["length", "length"]


def test_non_streaming_prepends_the_prompt() -> None:
    inputs = parse_inputs(VLLM, _request(text_input="P:", return_logprobs=True))
    b = ResponseBuilder(VLLM, inputs)
    got = {t.name: t.data for t in b.tensors(_out(["abc"], [[5]], True), prepend=True)}
    assert got["text_output"][0] == b"P:abc"
    assert b'"logprob": -1.0' in got["logprobs"][0]
