"""Convention detection from model metadata and request building."""

from __future__ import annotations

import json

import pytest

from tritium.client.conventions import ConventionError, build_request, detect_convention

VLLM_METADATA = {
    "name": "smollm2",
    "inputs": [
        {"name": "text_input", "datatype": "BYTES", "shape": [1]},
        {"name": "stream", "datatype": "BOOL", "shape": [1]},
        {"name": "sampling_parameters", "datatype": "BYTES", "shape": [1]},
        {"name": "exclude_input_in_output", "datatype": "BOOL", "shape": [1]},
        {"name": "return_num_output_tokens", "datatype": "BOOL", "shape": [1]},
    ],
    "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [-1]}],
}
SEED_METADATA = {
    "name": "smollm2-chat",
    "inputs": [
        {"name": "PROMPT", "datatype": "BYTES", "shape": [1]},
        {"name": "STREAM", "datatype": "BOOL", "shape": [1]},
    ],
    "outputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1]}],
}


def test_detects_vllm_convention() -> None:
    convention = detect_convention(VLLM_METADATA)
    assert convention.name == "vllm"
    assert (convention.prompt, convention.text_output) == ("text_input", "text_output")
    assert convention.has_input("return_num_output_tokens")
    assert not convention.has_input("return_num_input_tokens")


def test_detects_seed_convention() -> None:
    convention = detect_convention(SEED_METADATA)
    assert convention.name == "seed"
    assert (convention.prompt, convention.stream, convention.text_output) == (
        "PROMPT",
        "STREAM",
        "TEXT",
    )


def test_unknown_convention_names_the_inputs() -> None:
    with pytest.raises(ConventionError, match=r"INPUT0.*text_input.*PROMPT"):
        detect_convention({"name": "add_sub", "inputs": [{"name": "INPUT0"}]})


def test_vllm_request_sends_declared_optional_inputs_only() -> None:
    request = build_request(
        detect_convention(VLLM_METADATA),
        "hello",
        stream=True,
        sampling_parameters={"max_tokens": 5, "temperature": 0.1},
        exclude_input_in_output=True,
    )
    values = {v.name: v.value for v in request.inputs}
    assert values["text_input"] == "hello"
    assert values["stream"] is True
    assert json.loads(str(values["sampling_parameters"])) == {"max_tokens": 5, "temperature": 0.1}
    assert values["exclude_input_in_output"] is True
    assert values["return_num_output_tokens"] is True
    assert "return_num_input_tokens" not in values  # the model does not declare it
    assert request.parameters == {}


def test_seed_request_without_sampling_input_uses_request_parameters() -> None:
    request = build_request(
        detect_convention(SEED_METADATA),
        "hi",
        stream=False,
        sampling_parameters={"max_tokens": 5, "temperature": 0.1, "ignore_eos": True},
        exclude_input_in_output=True,
    )
    assert [(v.name, v.datatype, v.value) for v in request.inputs] == [
        ("PROMPT", "BYTES", "hi"),
        ("STREAM", "BOOL", False),
    ]
    # KServe request parameters are int, bool or string: floats travel as strings.
    assert request.parameters == {"max_tokens": 5, "temperature": "0.1", "ignore_eos": True}
