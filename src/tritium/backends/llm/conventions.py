"""The two tensor conventions of an LLM model, chosen from the tensors its config declares.

- vLLM backend: `text_input` (+ optional `stream`, `sampling_parameters`,
  `exclude_input_in_output`, `return_*`) -> `text_output` (+ `finish_reason`,
  `cumulative_logprob`, `logprobs`, `num_input_tokens`, `num_output_tokens`).
- Seed deployment: `PROMPT`, `STREAM`, optional `SAMPLING_PARAMETERS` -> `TEXT`.

Echo rules (Triton's vllm_backend): the prompt is prepended unless
`exclude_input_in_output`; a streaming request never echoes it and each response carries
only the new text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2

from tritium.backends.llm.sampling import parse_sampling_parameters
from tritium.engine.outputs import RequestOutput
from tritium.engine.sampling_params import SamplingParams
from tritium.server.backend import ModelConfig
from tritium.server.errors import invalid_arg
from tritium.server.types import InferenceRequest, Tensor

ADDITIONAL_OUTPUTS = (
    "return_finish_reason",
    "return_cumulative_logprob",
    "return_logprobs",
    "return_num_input_tokens",
    "return_num_output_tokens",
)

# Triton's vllm_backend auto-complete (src/model.py), less `image` and `embedding_request`
# (multimodal and embedding requests are not served by this engine).
VLLM_INPUTS: list[dict[str, Any]] = [
    {"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]},
    {"name": "stream", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    {"name": "sampling_parameters", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
    {"name": "exclude_input_in_output", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    *(
        {"name": n, "data_type": "TYPE_BOOL", "dims": [1], "optional": True}
        for n in ADDITIONAL_OUTPUTS
    ),
]
VLLM_OUTPUTS: list[dict[str, Any]] = [
    {"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "finish_reason", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "cumulative_logprob", "data_type": "TYPE_FP32", "dims": [-1]},
    {"name": "logprobs", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "num_input_tokens", "data_type": "TYPE_UINT32", "dims": [1]},
    {"name": "num_output_tokens", "data_type": "TYPE_UINT32", "dims": [-1]},
]


@dataclass(frozen=True)
class Convention:
    """Tensor names of one convention, and which inputs this model declares."""

    name: str  # "vllm" | "seed"
    prompt: str
    stream: str
    sampling_parameters: str
    text_output: str
    declared_inputs: frozenset[str] = frozenset()


VLLM = Convention("vllm", "text_input", "stream", "sampling_parameters", "text_output")
SEED = Convention("seed", "PROMPT", "STREAM", "SAMPLING_PARAMETERS", "TEXT")


def detect_convention(config: ModelConfig) -> Convention:
    """vLLM when `text_input` is declared, seed when `PROMPT` is; INVALID_ARG otherwise."""
    names = frozenset(t.name for t in config.input)
    for base in (VLLM, SEED):
        if base.prompt in names:
            return Convention(
                base.name,
                base.prompt,
                base.stream,
                base.sampling_parameters,
                base.text_output,
                names,
            )
    raise invalid_arg(
        f"model '{config.name}' declares inputs {sorted(names)}: an LLM model needs 'text_input' "
        "(vLLM-backend convention) or 'PROMPT' (seed convention)"
    )


def _add_tensor(container: Any, spec: dict[str, Any]) -> None:
    t = container.add()
    t.name = spec["name"]
    t.data_type = model_config_pb2.DataType.Value(spec["data_type"])
    t.dims.extend(spec["dims"])
    if spec.get("optional"):
        t.optional = True


def auto_complete_config(config: ModelConfig) -> ModelConfig:
    """As the vllm_backend does: decoupled, max_batch_size 0, and every vLLM-backend
    input/output the config lacks -- unless it speaks the seed convention (PROMPT)."""
    config.model_transaction_policy.decoupled = True
    config.max_batch_size = 0
    inputs = {t.name for t in config.input}
    if SEED.prompt in inputs:
        return config
    outputs = {t.name for t in config.output}
    for spec in VLLM_INPUTS:
        if spec["name"] not in inputs:
            _add_tensor(config.input, spec)
    for spec in VLLM_OUTPUTS:
        if spec["name"] not in outputs:
            _add_tensor(config.output, spec)
    return config


# -- requests ------------------------------------------------------------------------------


@dataclass
class LLMInputs:
    """One request, read from its tensors."""

    prompt: str
    stream: bool
    prepend_input: bool
    params: SamplingParams
    returns: set[str] = field(default_factory=set)  # requested additional outputs


def _scalar(request: InferenceRequest, name: str) -> Any:
    t = request.inputs.get(name)
    if t is None or t.data.size == 0:
        return None
    return t.data.reshape(-1)[0]


def _text(value: Any, name: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise invalid_arg(f"input '{name}' must be UTF-8 text") from exc
    return str(value)


def parse_inputs(conv: Convention, request: InferenceRequest) -> LLMInputs:
    """The prompt, stream flag, echo rule, sampling parameters and requested extras."""
    raw_prompt = _scalar(request, conv.prompt)
    if raw_prompt is None:
        raise invalid_arg(f"input '{conv.prompt}' is required")
    prompt = _text(raw_prompt, conv.prompt)
    stream_value = _scalar(request, conv.stream)
    stream = bool(stream_value) if stream_value is not None else False
    exclude = _scalar(request, "exclude_input_in_output")
    prepend = not bool(exclude) if exclude is not None else not stream
    if prepend and stream:
        raise invalid_arg("When streaming, `exclude_input_in_output` = False is not allowed.")
    raw_params = _scalar(request, conv.sampling_parameters)
    params = parse_sampling_parameters(raw_params, request.parameters)
    returns = {n for n in ADDITIONAL_OUTPUTS if bool(_scalar(request, n) or False)}
    return LLMInputs(prompt, stream, prepend, params, returns)


class ResponseBuilder:
    """Turns a request's cumulative RequestOutputs into response tensors: deltas when
    streaming (per sample, as the vllm_backend tracks previous lengths), the prompt
    prepended on the first response when the echo rule says so."""

    def __init__(self, conv: Convention, inputs: LLMInputs) -> None:
        self.conv = conv
        self.inputs = inputs
        self.first = True
        self.prev_text: list[int] = []
        self.prev_tokens: list[int] = []
        self.prev_logprobs: list[int] = []

    def tensors(self, out: RequestOutput, prepend: bool) -> list[Tensor]:
        outputs = sorted(out.outputs, key=lambda c: c.index)
        n = len(outputs)
        if self.first:
            self.prev_text = [0] * n
            self.prev_tokens = [0] * n
            self.prev_logprobs = [0] * n
        head = (out.prompt or "") if (self.first and prepend) else ""
        self.first = False
        texts = [
            (head + c.text[p:]).encode("utf-8")
            for c, p in zip(outputs, self.prev_text, strict=True)
        ]
        self.prev_text = [len(c.text) for c in outputs]
        result = [Tensor(self.conv.text_output, "BYTES", np.array(texts, dtype=np.object_))]
        returns = self.inputs.returns
        if "return_finish_reason" in returns:
            reasons = [str(c.finish_reason).encode() for c in outputs]
            result.append(Tensor("finish_reason", "BYTES", np.array(reasons, dtype=np.object_)))
        if "return_cumulative_logprob" in returns:
            cum = [
                c.cumulative_logprob if c.cumulative_logprob is not None else 0.0 for c in outputs
            ]
            result.append(Tensor("cumulative_logprob", "FP32", np.array(cum, dtype=np.float32)))
        if "return_logprobs" in returns:
            docs = []
            for i, c in enumerate(outputs):
                if c.logprobs is None:
                    docs.append(b"null")
                    continue
                new = c.logprobs[self.prev_logprobs[i] :]
                self.prev_logprobs[i] = len(c.logprobs)
                docs.append(json.dumps([
                    {str(tid): {"logprob": lp.logprob, "rank": lp.rank, "decoded_token": lp.decoded_token}
                     for tid, lp in entry.items()}
                    for entry in new
                ]).encode())  # fmt: skip
            result.append(Tensor("logprobs", "BYTES", np.array(docs, dtype=np.object_)))
        if "return_num_input_tokens" in returns:
            count = np.array([len(out.prompt_token_ids)], dtype=np.uint32)
            result.append(Tensor("num_input_tokens", "UINT32", count))
        if "return_num_output_tokens" in returns:
            counts = [len(c.token_ids) - p for c, p in zip(outputs, self.prev_tokens, strict=True)]
            self.prev_tokens = [len(c.token_ids) for c in outputs]
            result.append(Tensor("num_output_tokens", "UINT32", np.array(counts, dtype=np.uint32)))
        return result
