"""Sampling parameters from the tensor (JSON) or request parameters, as the vLLM backend
reads them: numbers or strings, clear INVALID_ARG errors naming the field."""

from __future__ import annotations

import pytest

from tritium.backends.llm.sampling import parse_sampling_parameters
from tritium.server.errors import ErrorCode, TritonError


def test_numbers_and_strings_from_the_tensor() -> None:
    p = parse_sampling_parameters(
        '{"temperature": "0.1", "max_tokens": "100", "top_k": 5, "ignore_eos": "true", '
        '"stop": ["a", "b"], "seed": "7", "n": 2, "top_p": 0.5}',
        {},
    )
    assert (p.temperature, p.max_tokens, p.top_k, p.ignore_eos) == (0.1, 100, 5, True)
    assert (p.stop, p.seed, p.n, p.top_p) == (["a", "b"], 7, 2, 0.5)


def test_bytes_tensor_and_empty_tensor() -> None:
    assert parse_sampling_parameters(b'{"max_tokens": 3}', {}).max_tokens == 3
    assert parse_sampling_parameters(b"  ", {}).max_tokens == 16  # vLLM's default


def test_request_parameters_skip_transport_keys_and_decode_lists() -> None:
    p = parse_sampling_parameters(
        None,
        {"max_tokens": 5, "stop": '["x", "y"]', "stop_token_ids": "[1, 2]", "triton_enable_empty_final_response": True,
         "binary_data_output": False, "ignore_eos": "false"},
    )  # fmt: skip
    assert (p.max_tokens, p.stop, p.stop_token_ids, p.ignore_eos) == (5, ["x", "y"], [1, 2], False)
    assert parse_sampling_parameters(None, {"stop": "\n"}).stop == ["\n"]


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ('{"temperature": "hot"}', "'temperature' must be a number"),
        ('{"max_tokens": 1.5}', "'max_tokens' must be an integer"),
        ('{"max_tokens": true}', "'max_tokens' must be an integer"),
        ('{"ignore_eos": "maybe"}', "'ignore_eos' must be a boolean"),
        ('{"stop": [1]}', "'stop' must be a list of strings"),
        ('{"top_p": 2}', "top_p must be in (0, 1]"),
        ('{"max_tokens": 0}', "max_tokens must be at least 1"),
        ('{"bogus": 1, "other": 2}', "unknown sampling parameter(s): bogus, other"),
        ('{"best_of": 3}', "best_of"),
        ('{"logprobs": 50}', "logprobs must be at most 20"),
        ("[1]", "must be a JSON object"),
        ("{nope", "not valid JSON"),
    ],
)
def test_bad_values_are_invalid_arg(doc: str, needle: str) -> None:
    with pytest.raises(TritonError) as info:
        parse_sampling_parameters(doc, {})
    assert info.value.code == ErrorCode.INVALID_ARG
    assert needle in info.value.message


def test_unknown_request_parameter_is_rejected() -> None:
    with pytest.raises(TritonError, match="unknown sampling parameter"):
        parse_sampling_parameters(None, {"temprature": 0})
