"""Messages between the frontend (tokenization, detokenization, streams) and the engine
core (scheduler, model). msgspec structs, so they cross a ZeroMQ socket as msgpack."""

from __future__ import annotations

import msgspec

from tritium.engine.sampling_params import SamplingParams

#: One token's logprobs as the core reports them: (token ids, logprobs, rank of the first
#: id), the scored token first (sampled, or the prompt's), then the top k.
TokenLogprobs = tuple[list[int], list[float], int]


class EngineCoreRequest(msgspec.Struct, array_like=True, omit_defaults=True):
    """A tokenized request for the core (one per sample: n>1 is fanned out by the frontend)."""

    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    priority: int = 0


class EngineCoreOutput(msgspec.Struct, array_like=True, omit_defaults=True):
    """New tokens of one request since the last output."""

    request_id: str
    new_token_ids: list[int]
    new_logprobs: list[TokenLogprobs] | None = None  # per new token
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: int | str | None = None
    num_cached_tokens: int = 0
    # prompt_logprobs, as new_logprobs, for prompt tokens 1.. (token 0 has none): all of
    # them with a request's first token.
    new_prompt_logprobs: list[TokenLogprobs] | None = None


class SchedulerStats(msgspec.Struct, omit_defaults=True):
    """Gauges and cumulative counters of one engine core."""

    num_running_reqs: int = 0
    num_waiting_reqs: int = 0
    kv_cache_usage: float = 0.0  # fraction of blocks held by live requests
    num_blocks: int = 0
    prefix_cache_queries: int = 0  # tokens looked up, cumulative
    prefix_cache_hits: int = 0  # tokens found, cumulative
    num_preemptions: int = 0
    prompt_tokens: int = 0  # prompt tokens computed (excluding cache hits), cumulative
    generation_tokens: int = 0  # tokens sampled, cumulative
    num_steps: int = 0


class EngineCoreOutputs(msgspec.Struct, array_like=True, omit_defaults=True, tag=True):
    """One step's outputs, with the core's stats after the step."""

    outputs: list[EngineCoreOutput] = []
    stats: SchedulerStats | None = None


class EngineCoreInfo(msgspec.Struct):
    """What the frontend learns from the core once it is up."""

    max_model_len: int
    num_blocks: int
    block_size: int
    vocab_size: int
    eos_token_ids: list[int]


class AbortRequests(msgspec.Struct, tag=True):
    request_ids: list[str]


class AddRequest(msgspec.Struct, tag=True):
    request: EngineCoreRequest


class Shutdown(msgspec.Struct, tag=True):
    pass


EngineCoreInput = AddRequest | AbortRequests | Shutdown
