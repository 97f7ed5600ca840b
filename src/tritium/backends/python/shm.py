"""Tensors across the process boundary, through shared memory.

A tensor above `INLINE_LIMIT` bytes is written once into a fresh file under /dev/shm (a
tmpfs, so it is memory) and the message carries the file's name. The receiver maps the
file copy-on-write and unlinks it at once: the array it hands out is backed by that
mapping (no second copy) and the memory is freed when the array is garbage collected.
BYTES tensors are serialized Triton's way (4-byte little-endian length + bytes, row-major)
and travel the same road.

Every file name starts with a per-stub prefix, so the server can sweep what a crashed
stub left behind (`sweep`).
"""

from __future__ import annotations

import glob
import itertools
import mmap
import os
import struct
import tempfile
from typing import Any

import numpy as np

from tritium.backends.python.protocol import WireTensor
from tritium.server.types import TRITON_TO_NUMPY

INLINE_LIMIT = 64 * 1024
_LENGTH = struct.Struct("<I")


def default_shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def serialize_bytes(array: np.ndarray) -> bytes:
    """Triton's BYTES layout: each element as 4-byte length + bytes, in C order."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        if isinstance(item, bytes | bytearray | memoryview | np.bytes_):
            value = bytes(item)
        else:
            value = str(item).encode("utf-8")
        parts.append(_LENGTH.pack(len(value)))
        parts.append(value)
    return b"".join(parts)


def deserialize_bytes(buffer: Any, count: int | None = None) -> np.ndarray:
    """Inverse of `serialize_bytes`: a 1-D object array of bytes."""
    view = memoryview(buffer)
    items: list[bytes] = []
    offset = 0
    end = len(view)
    while offset < end and (count is None or len(items) < count):
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        items.append(bytes(view[offset : offset + length]))
        offset += length
    result = np.empty(len(items), dtype=np.object_)
    result[:] = items
    return result


class ShmWriter:
    """Names and writes this side's shared-memory files."""

    def __init__(self, directory: str, prefix: str) -> None:
        self.directory = directory
        self.prefix = prefix
        self._counter = itertools.count()

    def encode(self, name: str, datatype: str, array: np.ndarray) -> WireTensor:
        """A WireTensor for `array`, inline or through a new shared-memory file."""
        shape = [int(d) for d in array.shape]
        if datatype == "BYTES":
            payload: bytes | memoryview = serialize_bytes(array)
        else:
            contiguous = np.ascontiguousarray(array)
            payload = contiguous.data.cast("B") if contiguous.nbytes else b""
        nbytes = len(payload)
        if nbytes <= INLINE_LIMIT:
            return WireTensor(name, datatype, shape, data=bytes(payload), nbytes=nbytes)
        path = os.path.join(self.directory, f"{self.prefix}{next(self._counter)}")
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)
        return WireTensor(name, datatype, shape, shm=path, nbytes=nbytes)


def decode(tensor: WireTensor) -> np.ndarray:
    """The numpy array of a WireTensor (writable); consumes its shared-memory file."""
    if tensor.shm is not None:
        fd = os.open(tensor.shm, os.O_RDONLY)
        try:
            # Private mapping: the receiver may write into its array without touching
            # the file, and the pages are shared until it does.
            buffer: Any = mmap.mmap(
                fd, tensor.nbytes, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE
            )
        finally:
            os.close(fd)
            os.unlink(tensor.shm)
    else:
        buffer = bytearray(tensor.data or b"")
    count = 1
    for dim in tensor.shape:
        count *= dim
    if tensor.datatype == "BYTES":
        return deserialize_bytes(buffer, count).reshape(tensor.shape)
    dtype = np.dtype(TRITON_TO_NUMPY[tensor.datatype])
    if count == 0:
        return np.empty(tensor.shape, dtype=dtype)
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(tensor.shape)


def discard(tensor: WireTensor) -> None:
    """Remove a tensor's shared-memory file without reading it."""
    if tensor.shm is not None:
        try:
            os.unlink(tensor.shm)
        except FileNotFoundError:
            pass


def sweep(directory: str, prefix: str) -> int:
    """Unlink every file left under `prefix` (after a stub exited); returns how many."""
    removed = 0
    for path in glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + "*")):
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed
