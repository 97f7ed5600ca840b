"""Triton's system shared-memory extension: a registry of POSIX shm regions (mmap'd),
shared by the HTTP and gRPC frontends of one server, and the tensor reads/writes that
inference inputs and outputs with `shared_memory_*` parameters make through it."""

from __future__ import annotations

import mmap
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from tritium.frontends.tensor_codec import array_from_raw, array_to_raw
from tritium.server.errors import ErrorCode, TritonError, internal, invalid_arg, not_found

SHM_DIR = "/dev/shm"
REGION, BYTE_SIZE, OFFSET = (
    "shared_memory_region",
    "shared_memory_byte_size",
    "shared_memory_offset",
)
SHM_PARAMETERS = (REGION, BYTE_SIZE, OFFSET)


@dataclass
class Region:
    """One registered region: `byte_size` bytes at `offset` of the shm object `key`."""

    name: str
    key: str
    offset: int
    byte_size: int
    mm: mmap.mmap

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "offset": self.offset,
            "byte_size": self.byte_size,
        }


class SharedMemoryManager:
    """Registered system shared-memory regions, by name (Triton's SharedMemoryManager)."""

    def __init__(self) -> None:
        self._regions: dict[str, Region] = {}
        self._lock = threading.Lock()  # gRPC and HTTP handlers may run on other threads

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        with self._lock:
            if name in self._regions:
                raise TritonError(
                    f"shared memory region '{name}' already in manager", ErrorCode.ALREADY_EXISTS
                )
            self._regions[name] = Region(
                name, key, offset, byte_size, _map(name, key, offset, byte_size)
            )

    def unregister(self, name: str | None = None) -> None:
        """Unregister `name` (an unknown name is not an error, as in Triton) or all."""
        with self._lock:
            names = list(self._regions) if not name else [name]
            for n in names:
                region = self._regions.pop(n, None)
                if region is not None:
                    _close(region.mm)

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if name:
                if name not in self._regions:
                    raise not_found(f"Unable to find system shared memory region: '{name}'")
                return [self._regions[name].status()]
            return [r.status() for r in self._regions.values()]

    def _span(self, name: str, offset: int, byte_size: int) -> tuple[Region, int]:
        """The region and the absolute start of [offset, offset + byte_size) inside it."""
        region = self._regions.get(name)
        if region is None:
            raise invalid_arg(f"Unable to find shared memory region: '{name}'")
        if offset < 0 or (offset > 0 and offset >= region.byte_size):
            raise invalid_arg(f"Invalid offset for shared memory region: '{name}'")
        if byte_size < 0 or offset + byte_size > region.byte_size:
            raise invalid_arg(f"Invalid offset + byte size for shared memory region: '{name}'")
        return region, region.offset + offset

    def check(self, name: str, offset: int, byte_size: int) -> None:
        """Fail as a request naming this span would (unknown region, out of bounds)."""
        with self._lock:
            self._span(name, offset, byte_size)

    def read(self, name: str, offset: int, byte_size: int) -> bytes:
        """A copy of the span: the client may rewrite the region while the model runs."""
        with self._lock:
            region, start = self._span(name, offset, byte_size)
            return region.mm[start : start + byte_size]

    def write(self, name: str, offset: int, data: bytes) -> None:
        with self._lock:
            region, start = self._span(name, offset, len(data))
            region.mm[start : start + len(data)] = data


def _map(name: str, key: str, offset: int, byte_size: int) -> mmap.mmap:
    # shm_open(key): the object lives under /dev/shm; a key with a '/' past the leading
    # one names no shm object.
    bare = key[1:] if key.startswith("/") else key
    if not bare or "/" in bare or bare in (".", ".."):
        raise internal(f"Unable to open shared memory region: '{key}'")
    try:
        fd = os.open(os.path.join(SHM_DIR, bare), os.O_RDWR)
    except OSError:
        raise internal(f"Unable to open shared memory region: '{key}'") from None
    try:
        size = os.fstat(fd).st_size
        if offset < 0 or byte_size < 0 or offset + byte_size > size or size == 0:
            raise invalid_arg(
                f"failed to register shared memory region '{name}': offset {offset} + byte size "
                f"{byte_size} exceeds the {size} bytes of '{key}'"
            )
        return mmap.mmap(fd, size)
    except OSError as e:
        raise invalid_arg(
            f"unable to process address space or shared-memory descriptor due to {e.strerror}"
        ) from None
    finally:
        os.close(fd)


def _close(mm: mmap.mmap) -> None:
    try:
        mm.close()
    except BufferError:  # a view still exported: the mapping goes with the last view
        pass


def manager_for(server: Any) -> SharedMemoryManager:
    """The server's one manager, created on first use (HTTP and gRPC share it)."""
    manager = getattr(server, "shared_memory", None)
    if not isinstance(manager, SharedMemoryManager):
        manager = SharedMemoryManager()
        server.shared_memory = manager
        extensions = getattr(server, "extensions", None)
        if extensions is not None and "system_shared_memory" not in extensions:
            extensions.append("system_shared_memory")
    return manager


# -- tensors ------------------------------------------------------------------------------
def _uint_param(params: dict[str, Any], key: str, default: int | None = None) -> int:
    if key not in params:
        if default is not None:
            return default
        raise invalid_arg(f"'{key}' must be set with '{REGION}'")
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise internal(
            f"Unable to parse '{key}': attempt to access JSON non-unsigned-integer as unsigned-integer"
        )
    return value


def shm_target(params: dict[str, Any]) -> tuple[str, int, int] | None:
    """(region, offset, byte_size) of an input or output's shm parameters, or None."""
    if REGION not in params:
        return None
    region = params[REGION]
    if not isinstance(region, str):
        raise internal(f"Unable to parse '{REGION}': attempt to access JSON non-string as string")
    return region, _uint_param(params, OFFSET, 0), _uint_param(params, BYTE_SIZE)


def read_input(
    manager: SharedMemoryManager | None,
    name: str,
    datatype: str,
    shape: list[int],
    params: dict[str, Any],
    model_name: str,
    log_id: str,
) -> np.ndarray:
    """An input's tensor from its region; sizes are checked as for raw binary data."""
    target = shm_target(params)
    assert target is not None
    region, offset, byte_size = target
    if manager is None:
        raise invalid_arg(f"Unable to find shared memory region: '{region}'")
    raw = manager.read(region, offset, byte_size)
    return array_from_raw(name, datatype, shape, raw, model_name, log_id)


def check_output(manager: SharedMemoryManager | None, params: dict[str, Any]) -> None:
    """A requested output's shm parameters name a registered region and fit in it."""
    target = shm_target(params)
    if target is None:
        return
    region, offset, byte_size = target
    if manager is None:
        raise invalid_arg(f"Unable to find shared memory region: '{region}'")
    manager.check(region, offset, byte_size)


def write_output(
    manager: SharedMemoryManager, name: str, datatype: str, data: Any, params: dict[str, Any]
) -> dict[str, Any]:
    """Write an output into its region; returns the parameters the response carries."""
    target = shm_target(params)
    assert target is not None
    region, offset, byte_size = target
    raw = array_to_raw(np.asarray(data), datatype)
    if len(raw) > byte_size:
        raise invalid_arg(
            f"shared memory size specified with the request for output '{name}' "
            f"({byte_size} bytes) should be at least {len(raw)} bytes to hold the results"
        )
    manager.write(region, offset, raw)
    out: dict[str, Any] = {REGION: region, BYTE_SIZE: byte_size}
    if offset:
        out[OFFSET] = offset
    return out
