"""The in-process request form of the LLM backend, for frontends that need more than
tensors carry (the OpenAI API: chat templates, per-token logprobs, usage counts).

A frontend builds an ordinary InferenceRequest for the model (its prompt input filled, so
the core validates, queues, counts and cancels it like any other) and puts an `LLMCall` in
`request.parameters[LLM_CALL]`. The backend then answers with `RequestOutput`s in
`response.parameters[LLM_OUTPUT]`. Wire frontends can never produce this parameter:
KServe request parameters are only int, bool or string, and the backend checks the type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tritium.engine.sampling_params import SamplingParams

LLM_CALL = "tritium.llm_call"
LLM_OUTPUT = "tritium.llm_output"


@dataclass
class LLMCall:
    """What to generate. Exactly one of prompt, prompt_token_ids or messages."""

    params: SamplingParams
    prompt: str | None = None
    prompt_token_ids: list[int] | None = None
    messages: list[dict[str, Any]] | None = None  # rendered with the model's chat template
    chat_template_kwargs: dict[str, Any] | None = None
    stream: bool = False  # True: DELTA outputs per step; False: one final output


def llm_call_of(parameters: dict[str, Any]) -> LLMCall | None:
    call = parameters.get(LLM_CALL)
    return call if isinstance(call, LLMCall) else None
