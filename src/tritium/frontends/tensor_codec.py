"""Tensor bytes on the wire, shared by the HTTP binary extension and gRPC raw contents.

Little-endian, row-major; BOOL is one byte per element; BYTES elements are a 4-byte
little-endian length followed by the bytes. Errors carry Triton's messages.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from tritium.server.errors import TritonError, internal, invalid_arg
from tritium.server.types import TRITON_TO_NUMPY, TruncatedBytes

_LEN = struct.Struct("<I")


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape) if shape else 1


def numpy_dtype(name: str, datatype: str) -> np.dtype:
    try:
        return np.dtype(TRITON_TO_NUMPY[datatype])
    except KeyError:
        raise invalid_arg(f"invalid datatype for input {name}") from None


# -- BYTES ------------------------------------------------------------------------------
def serialize_bytes(arr: np.ndarray) -> bytes:
    """BYTES elements (bytes or str) -> length-prefixed buffer."""
    parts: list[bytes] = []
    for item in arr.reshape(-1):
        b = item if isinstance(item, bytes) else str(item).encode()
        parts.append(_LEN.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def deserialize_bytes(
    buf: bytes | memoryview, name: str, model_name: str, expected: int, log_id: str = "<id_unknown>"
) -> np.ndarray:
    """Length-prefixed buffer -> 1-D object array of `expected` bytes elements, checked as
    Triton's core checks it (ValidateBytesInputs): each length indicator must be whole,
    extra elements fail as soon as they are met, too few fail at the end. A last element
    cut short passes the core: it becomes a TruncatedBytes that the backend refuses."""
    mv = memoryview(buf)
    out: list[bytes] = []
    offset, end = 0, len(mv)
    prefix = f"[request id: {log_id}] "
    while offset < end:
        if end - offset < 4:
            raise invalid_arg(
                f"{prefix}incomplete string length indicator for inference input '{name}' for "
                f"model '{model_name}', expecting 4 bytes but only {end - offset} bytes available."
                " Please make sure the string length indicator is in one buffer."
            )
        (length,) = _LEN.unpack_from(mv, offset)
        offset += 4
        if len(out) + 1 > expected:
            raise invalid_arg(
                f"{prefix}unexpected number of string elements {len(out) + 1} for inference "
                f"input '{name}' for model '{model_name}', expecting {expected}"
            )
        if end - offset < length:
            out.append(TruncatedBytes.of(bytes(mv[offset:end]), length))
            offset = end
            break
        out.append(bytes(mv[offset : offset + length]))
        offset += length
    if len(out) != expected:
        raise invalid_arg(
            f"{prefix}expected {expected} string elements for inference input '{name}' for "
            f"model '{model_name}', got {len(out)}"
        )
    arr = np.empty(len(out), dtype=np.object_)
    arr[:] = out
    return arr


# -- raw <-> numpy ----------------------------------------------------------------------
def array_from_raw(
    name: str,
    datatype: str,
    shape: Sequence[int],
    raw: bytes | memoryview,
    model_name: str,
    log_id: str = "<id_unknown>",
) -> np.ndarray:
    """Raw tensor bytes -> ndarray of `shape` (BYTES: object array of bytes)."""
    dtype = numpy_dtype(name, datatype)
    count = element_count(shape)
    if datatype == "BYTES":
        return deserialize_bytes(raw, name, model_name, count, log_id).reshape(shape)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise invalid_arg(
            f"[request id: {log_id}] input byte size mismatch for input '{name}' for model "
            f"'{model_name}'. Expected {expected}, got {len(raw)}"
        )
    if datatype == "BOOL":
        return np.frombuffer(raw, dtype=np.uint8).astype(np.bool_).reshape(shape)
    # copy: the buffer belongs to the request body and numpy views of it are read-only
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def array_to_raw(arr: np.ndarray, datatype: str) -> bytes:
    """ndarray -> raw tensor bytes."""
    if datatype == "BYTES":
        return serialize_bytes(arr)
    if datatype == "BOOL":
        return np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    dtype = np.dtype(TRITON_TO_NUMPY[datatype]).newbyteorder("<")
    return np.ascontiguousarray(arr, dtype=dtype).tobytes()


# -- JSON <-> numpy ---------------------------------------------------------------------
_SHAPE_MISMATCH = "Unable to parse 'data': Shape does not match true shape of 'data' field"


def _flatten(data: Any, out: list[Any]) -> None:
    for item in data:
        if isinstance(item, list):
            _flatten(item, out)
        else:
            out.append(item)


_INT64 = (-(2**63), 2**63)
_UINT64 = (0, 2**64)


def _data_error(detail: str) -> TritonError:
    return internal(f"Unable to parse 'data': attempt to access JSON {detail}")


def _check_ints(flat: list[Any], bounds: tuple[int, int], kind: str) -> None:
    """TritonJson's AsInt / AsUInt: a JSON integer that RapidJSON stores in 64 bits (a
    larger one is a double to RapidJSON); bool is not an integer."""
    lo, hi = bounds
    for x in flat:
        if type(x) is not int or not lo <= x < hi:
            raise _data_error(f"non-{kind} as {kind}")


def array_from_json(name: str, datatype: str, shape: Sequence[int], data: Any) -> np.ndarray:
    """JSON `data` (flat or nested, row-major) -> ndarray of `shape` in `datatype`, read as
    Triton reads it: integers as 64-bit values cast (wrapping) to the tensor's type."""
    if datatype == "FP16":
        raise invalid_arg(
            "receiving FP16 data via JSON is not supported. Please use the binary data "
            f"format for input {name}"
        )
    if datatype == "BF16":
        raise invalid_arg(
            "receiving BF16 data via JSON is not supported. Please use the binary data "
            f"format for input {name}"
        )
    dtype = numpy_dtype(name, datatype)
    if not isinstance(data, list):
        raise internal("Unable to parse 'data': attempt to access JSON non-array as array")
    flat: list[Any] = []
    _flatten(data, flat)
    count = element_count(shape)
    if len(flat) != count:
        raise internal(_SHAPE_MISMATCH)
    if datatype == "BYTES":
        if not all(isinstance(x, str) for x in flat):
            raise internal(
                "Unable to parse JSON bytes array: attempt to access JSON non-string as string"
            )
        arr = np.empty(count, dtype=np.object_)
        arr[:] = [x.encode() for x in flat]
        return arr.reshape(shape)
    if datatype == "BOOL":
        if not all(isinstance(x, bool) for x in flat):
            raise _data_error("non-boolean as boolean")
        return np.array(flat, dtype=np.bool_).reshape(shape)
    if dtype.kind == "f":
        for x in flat:
            if type(x) is not float and type(x) is not int:
                raise _data_error("non-number as double")
        return np.array(flat, dtype=np.float64).astype(dtype).reshape(shape)
    if dtype.kind == "u":
        _check_ints(flat, _UINT64, "unsigned-integer")
        return np.array(flat, dtype=np.uint64).astype(dtype).reshape(shape)
    _check_ints(flat, _INT64, "signed-integer")
    return np.array(flat, dtype=np.int64).astype(dtype).reshape(shape)


def array_to_json(name: str, datatype: str, arr: np.ndarray) -> list[Any]:
    """ndarray -> flat JSON list (BYTES as UTF-8 strings)."""
    if datatype in ("FP16", "BF16"):
        raise invalid_arg(
            f"sending {datatype} data via JSON is not supported. Please use the binary data "
            "format for output"
        )
    flat = arr.reshape(-1)
    if datatype == "BYTES":
        return [
            x.decode("utf-8", errors="replace") if isinstance(x, bytes) else str(x) for x in flat
        ]
    return flat.tolist()
