"""Request and response types shared by frontends, the core and backends.

Tensors are numpy arrays. BYTES tensors are numpy object arrays of `bytes`.
BF16 has no numpy dtype: it travels as a uint16 array with datatype "BF16".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tritium.server.errors import TritonError

# Triton wire datatype <-> numpy dtype. BYTES -> object, BF16 -> uint16 bit pattern.
TRITON_TO_NUMPY: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
    "BF16": np.uint16,
}


# config.pbtxt DataType enum names (TYPE_FP32) <-> wire names (FP32).
def config_to_wire_dtype(config_dtype: str) -> str:
    """'TYPE_FP32' -> 'FP32', 'TYPE_STRING' -> 'BYTES'."""
    name = config_dtype.removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def wire_to_config_dtype(wire_dtype: str) -> str:
    """'FP32' -> 'TYPE_FP32', 'BYTES' -> 'TYPE_STRING'."""
    return "TYPE_STRING" if wire_dtype == "BYTES" else f"TYPE_{wire_dtype}"


class TruncatedBytes(bytes):
    """The last element of a BYTES tensor whose data ends before its declared length.

    Triton's core checks only the element count of BYTES inputs; an incomplete last
    element reaches the backend, which refuses the request after it was queued (so it
    counts as a failed request of the model). Frontends keep the bytes that were there.
    """

    declared_length: int = 0

    @classmethod
    def of(cls, data: bytes, declared_length: int) -> TruncatedBytes:
        out = cls(data)
        out.declared_length = declared_length
        return out


@dataclass
class Tensor:
    """A named tensor. `data.shape` must equal `shape`."""

    name: str
    datatype: str
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> list[int]:
        return list(self.data.shape)


@dataclass
class RequestedOutput:
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferenceResponse:
    """One response of a request. A decoupled model may send many; the last has final=True.
    A response with no outputs and final=True is the flag-only final response."""

    outputs: list[Tensor] = field(default_factory=list)
    error: TritonError | None = None
    final: bool = True
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferenceRequest:
    """An inference request as the core sees it, whichever frontend it came through.

    The core owns `responses`: backends deliver with `send()` (from the event loop), the
    frontend consumes through `InferenceServer.infer()`. `cancel()` is called by the
    frontend when the client goes away; backends poll `is_cancelled()`.
    """

    model_name: str
    model_version: int = -1  # -1: the version the policy picks (the highest ready)
    id: str = ""
    inputs: dict[str, Tensor] = field(default_factory=dict)
    requested_outputs: list[RequestedOutput] | None = None  # None: all outputs
    parameters: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    timeout_us: int = 0
    correlation_id: int | str = 0
    flags: int = 0
    arrival_ns: int = field(default_factory=time.monotonic_ns)
    responses: asyncio.Queue[InferenceResponse] = field(default_factory=asyncio.Queue)
    _cancelled: bool = False
    # Set by the core's scheduler: called once with the final response (statistics,
    # in-flight accounting). Backends do not touch it.
    on_final: Callable[[InferenceResponse], None] | None = field(default=None, repr=False)

    def send(self, response: InferenceResponse) -> None:
        self.responses.put_nowait(response)
        if response.final and self.on_final is not None:
            hook, self.on_final = self.on_final, None
            hook(response)

    def cancel(self) -> None:
        self._cancelled = True

    def is_cancelled(self) -> bool:
        return self._cancelled

    @property
    def log_id(self) -> str:
        """How Triton names a request in error messages."""
        return self.id if self.id else "<id_unknown>"
