"""Messages between the server and a Python-backend stub process.

The control channel is a Unix socket pair; each message is a 4-byte little-endian length
followed by a msgpack-encoded, tagged `msgspec.Struct`. Tensor payloads above a small size
travel through shared-memory files (see `shm.py`), so a message carries only their name.

Every request the server hands to a stub gets a `key` unique within that stub; responses,
cancellations and errors refer to it. BLS calls and other stub -> server calls get a `call`
id unique within the stub.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

HEADER = struct.Struct("<I")


# -- payloads -----------------------------------------------------------------------------
class WireTensor(msgspec.Struct, array_like=True):
    """A tensor: inline bytes when small, else the name of a shared-memory file."""

    name: str
    datatype: str
    shape: list[int]
    data: bytes | None = None
    shm: str | None = None
    nbytes: int = 0


class WireError(msgspec.Struct, array_like=True):
    message: str
    code: str = "INTERNAL"  # tritium.server.errors.ErrorCode name


class WireResponse(msgspec.Struct, array_like=True):
    outputs: list[WireTensor] = []
    error: WireError | None = None
    parameters: str = "{}"  # JSON object


class WireRequest(msgspec.Struct, array_like=True):
    """A request the server hands to a stub, or a BLS request a stub hands to the server."""

    key: int
    inputs: list[WireTensor]
    requested_output_names: list[str]
    request_id: str = ""
    correlation_id: int | str = 0
    flags: int = 0
    timeout: int = 0
    parameters: str = "{}"  # JSON object
    model_name: str = ""
    model_version: int = -1


# -- server -> stub -----------------------------------------------------------------------
class Init(msgspec.Struct, tag=True):
    """First message: what to load and how to call initialize()."""

    args: dict[str, str]
    model_file: str
    version_dir: str
    decoupled: bool
    shm_dir: str
    shm_prefix: str


class Execute(msgspec.Struct, tag=True):
    batch: int
    requests: list[WireRequest]


class Cancel(msgspec.Struct, tag=True):
    key: int


class BlsReply(msgspec.Struct, tag=True):
    call: int
    response: WireResponse
    final: bool


class CallReply(msgspec.Struct, tag=True):
    call: int
    value: Any = None
    error: WireError | None = None


class Shutdown(msgspec.Struct, tag=True):
    pass


# -- stub -> server -----------------------------------------------------------------------
class InitDone(msgspec.Struct, tag=True):
    error: str | None = None
    pid: int = 0


class Respond(msgspec.Struct, tag=True):
    """One response of request `key` (None: a flag-only response)."""

    key: int
    response: WireResponse | None
    final: bool


class ExecuteDone(msgspec.Struct, tag=True):
    """execute() returned (or raised: `error`); monotonic timestamps of the call."""

    batch: int
    start_ns: int
    end_ns: int
    error: str | None = None


class BlsCall(msgspec.Struct, tag=True):
    call: int
    request: WireRequest
    decoupled: bool


class ServerCall(msgspec.Struct, tag=True):
    """load_model / unload_model / is_model_ready / metric_family / metric / metric_value."""

    call: int
    op: str
    args: dict[str, Any]


class MetricUpdate(msgspec.Struct, tag=True):
    """increment / set / observe on a metric; fire and forget."""

    metric: int
    op: str
    value: float


class Log(msgspec.Struct, tag=True):
    level: str  # INFO | WARNING | ERROR | VERBOSE
    message: str


ToStub = Init | Execute | Cancel | BlsReply | CallReply | Shutdown
ToServer = InitDone | Respond | ExecuteDone | BlsCall | ServerCall | MetricUpdate | Log

_encoder = msgspec.msgpack.Encoder()
to_stub_decoder = msgspec.msgpack.Decoder(ToStub)
to_server_decoder = msgspec.msgpack.Decoder(ToServer)


def frame(message: msgspec.Struct) -> bytes:
    """Length-prefixed msgpack bytes of one message."""
    payload = _encoder.encode(message)
    return HEADER.pack(len(payload)) + payload
