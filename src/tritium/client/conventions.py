"""The two LLM tensor conventions a Triton model may speak, learned from its metadata.

- vLLM backend (`text_input`, `stream`, `sampling_parameters`, `exclude_input_in_output`,
  `return_num_*_tokens` -> `text_output`, `num_*_tokens`).
- The seed deployment's models (`PROMPT`, `STREAM`, `SAMPLING_PARAMETERS` -> `TEXT`).

The transports build requests as a list of `InputValue`s; each protocol encodes them its own
way (gRPC raw tensors, HTTP generate JSON keys).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class ConventionError(ValueError):
    """The model's metadata matches neither LLM convention."""


@dataclass(frozen=True)
class Convention:
    """Tensor names of one convention, plus which optional inputs this model declares."""

    name: str  # "vllm" or "seed"
    prompt: str
    stream: str
    sampling_parameters: str
    text_output: str
    # Optional inputs the model actually declares (only those are sent).
    inputs: frozenset[str] = frozenset()

    def has_input(self, name: str) -> bool:
        return name in self.inputs


VLLM = Convention("vllm", "text_input", "stream", "sampling_parameters", "text_output")
SEED = Convention("seed", "PROMPT", "STREAM", "SAMPLING_PARAMETERS", "TEXT")


def detect_convention(metadata: dict[str, Any]) -> Convention:
    """Pick the convention from Triton model metadata ({"inputs": [{"name": ...}], ...}).

    Raises ConventionError naming the model's inputs when neither prompt input is present.
    """
    names = frozenset(str(i["name"]) for i in metadata.get("inputs", []))
    for base in (VLLM, SEED):
        if base.prompt in names:
            return Convention(
                base.name,
                base.prompt,
                base.stream,
                base.sampling_parameters,
                base.text_output,
                inputs=names,
            )
    model = metadata.get("name", "?")
    raise ConventionError(
        f"model '{model}' has inputs {sorted(names)}: expected 'text_input' (vLLM convention) "
        "or 'PROMPT' (seed convention)"
    )


@dataclass(frozen=True)
class InputValue:
    """One scalar input tensor of shape [1]: datatype is "BYTES" or "BOOL"."""

    name: str
    datatype: str
    value: str | bool


@dataclass(frozen=True)
class LLMRequest:
    """A protocol-neutral LLM request: the inputs, plus request parameters.

    Sampling parameters travel as the model's sampling-parameters tensor when it declares
    one, else as request parameters (the vLLM backend reads either).
    """

    inputs: list[InputValue]
    parameters: dict[str, Any]


def build_request(
    convention: Convention,
    prompt: str,
    *,
    stream: bool,
    sampling_parameters: dict[str, Any],
    exclude_input_in_output: bool = False,
    want_token_counts: bool = True,
) -> LLMRequest:
    """The inputs for one prompt in the model's convention."""
    inputs = [
        InputValue(convention.prompt, "BYTES", prompt),
        InputValue(convention.stream, "BOOL", stream),
    ]
    parameters: dict[str, Any] = {}
    if convention.has_input(convention.sampling_parameters):
        inputs.append(
            InputValue(convention.sampling_parameters, "BYTES", json.dumps(sampling_parameters))
        )
    else:
        # Request parameters must be int, bool or string (KServe v2).
        parameters = {
            k: v if isinstance(v, bool | int | str) else json.dumps(v)
            for k, v in sampling_parameters.items()
        }
    if exclude_input_in_output and convention.has_input("exclude_input_in_output"):
        inputs.append(InputValue("exclude_input_in_output", "BOOL", True))
    if want_token_counts:
        for name in ("return_num_input_tokens", "return_num_output_tokens"):
            if convention.has_input(name):
                inputs.append(InputValue(name, "BOOL", True))
    return LLMRequest(inputs, parameters)
