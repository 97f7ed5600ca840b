"""Messages between the server process and a device's engine worker process.

msgspec structs over ZeroMQ (PUSH server -> worker, PUSH worker -> server), wrapping the
engine's own EngineCoreRequest / EngineCoreOutputs with the id of the model they belong
to, since one worker holds every LLM placed on its device.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tritium.engine.messages import EngineCoreInfo, EngineCoreOutputs, EngineCoreRequest

# -- server -> worker -------------------------------------------------------------------


class LoadModel(msgspec.Struct, tag=True):
    """Build an EngineCore for `model_id` from EngineArgs fields (weights load in the worker)."""

    model_id: str
    engine_args: dict[str, Any]


class UnloadModel(msgspec.Struct, tag=True):
    model_id: str


class AddRequest(msgspec.Struct, tag=True):
    model_id: str
    request: EngineCoreRequest


class AbortRequests(msgspec.Struct, tag=True):
    model_id: str
    request_ids: list[str]


class Shutdown(msgspec.Struct, tag=True):
    pass


WorkerInput = LoadModel | UnloadModel | AddRequest | AbortRequests | Shutdown

# -- worker -> server -------------------------------------------------------------------


class ModelLoaded(msgspec.Struct, tag=True):
    model_id: str
    info: EngineCoreInfo | None = None
    error: str = ""  # non-empty: the load failed, info is None


class ModelUnloaded(msgspec.Struct, tag=True):
    model_id: str


class StepOutputs(msgspec.Struct, tag=True):
    """One step of one model. `scheduled` lists the requests that this step computed for
    the first time, and `step_start_ns` (CLOCK_MONOTONIC, shared by both processes on
    Linux) when that step began: the end of their wait for the engine."""

    model_id: str
    outputs: EngineCoreOutputs
    scheduled: list[str] = []
    step_start_ns: int = 0


class RequestRejected(msgspec.Struct, tag=True):
    """The core refused a request (e.g. a prompt longer than max_model_len)."""

    model_id: str
    request_id: str
    error: str


WorkerOutput = ModelLoaded | ModelUnloaded | StepOutputs | RequestRejected

input_encoder = msgspec.msgpack.Encoder()
input_decoder = msgspec.msgpack.Decoder(WorkerInput)
output_encoder = msgspec.msgpack.Encoder()
output_decoder = msgspec.msgpack.Decoder(WorkerOutput)
