"""Tritium's on-disk cache: where converted checkpoints live, and how they are written safely.

A converted checkpoint is a plain Hugging Face folder. It is built in a temporary sibling
folder and renamed into place at the end, so an interrupted conversion never leaves a
folder that looks complete; the marker file written last is what makes a folder a hit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

#: Written last into every finished cache folder; its presence means "complete".
MARKER = "tritium_cache.json"

#: Largest safetensors shard written while converting; bounds the memory held at once.
MAX_SHARD_BYTES = 2 * 1024**3

#: How long an entry of another format version is kept after it was written: two Tritium
#: versions sharing one cache (a rolling upgrade over a shared volume) must not delete
#: each other's fresh entries, while an upgrade's leftovers go a day later.
OTHER_VERSION_GRACE_S = 24 * 3600


def cache_root() -> Path:
    """Tritium's cache folder: ``$TRITIUM_CACHE_DIR``, else ``$XDG_CACHE_HOME/tritium``, else ``~/.cache/tritium``."""
    env = os.environ.get("TRITIUM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "tritium"


def file_identity(path: Path) -> str:
    """``path|size|mtime`` of a file, through symlinks (the Hub cache's point at blobs
    named by their contents): what a cache entry made from it keys on. FileNotFoundError
    when it is gone."""
    path = path.resolve()
    st = path.stat()
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def identity_holds(identity: str) -> bool:
    """Whether the file a `file_identity` string names is still that file."""
    try:
        return file_identity(Path(identity.rsplit("|", 2)[0])) == identity
    except OSError:
        return False


def remove_stale_entries(
    root: Path,
    sources: Callable[[dict[str, Any]], list[str]],
    version_key: str,
    version: int,
) -> list[Path]:
    """Delete the finished entries under ``root`` that nothing can hit again; returns them.

    An entry's key includes its source files' identities (`sources` reads them from its
    marker) and its format version, so it is dead once a source file has changed or gone
    (a rewritten checkpoint, a reinstalled package, a temporary file), or once its
    ``marker[version_key]`` is not ``version`` and OTHER_VERSION_GRACE_S have passed since
    it was written. A process that maps a removed entry keeps its pages until it exits.
    Entries being written (temporary folders) and folders without a readable marker are
    left alone: they may not be ours.
    """
    if not root.is_dir():
        return []
    removed = []
    now = time.time()
    for entry in root.iterdir():
        if not entry.is_dir() or not is_complete(entry):
            continue
        try:
            marker = read_marker(entry)
            written = (entry / MARKER).stat().st_mtime
            files = sources(marker)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        other_version = marker.get(version_key) != version
        if not all(identity_holds(f) for f in files) or (
            other_version and now - written > OTHER_VERSION_GRACE_S
        ):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` is a finished cache entry (its marker was written)."""
    return (folder / MARKER).is_file()


def read_marker(folder: Path) -> dict[str, Any]:
    """The metadata recorded when ``folder`` was finished."""
    return json.loads((folder / MARKER).read_text())


@contextlib.contextmanager
def atomic_folder(final: Path, marker: dict[str, Any]) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success rename it to ``final``.

    On an exception the temporary folder is removed and ``final`` is untouched. When another
    process finished the same entry first, its folder is kept and ours is discarded.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        if final.exists() and not is_complete(final):
            # A broken leftover (e.g. copied by hand): replace it.
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # lost a race to an identical conversion
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_temps(final: Path) -> None:
    """Delete temporary folders of ``final`` left by conversions whose process died (killed
    mid-way, so their cleanup never ran)."""
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue  # not ours to judge, or alive under another user


class ShardWriter:
    """Write named tensors into safetensors shards of at most ``max_shard_bytes`` each.

    Holds one shard in memory at a time, so converting a 16 GB model never keeps two copies.
    ``close()`` names a single shard ``model.safetensors`` (the HF convention) or writes
    ``model-0000i-of-0000N.safetensors`` plus ``model.safetensors.index.json``.
    """

    def __init__(self, folder: Path, max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
        self.folder = folder
        self.max_shard_bytes = max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Queue one tensor; flushes the current shard first when it would overflow."""
        if name in self._pending or any(name in names for _, names in self._shards):
            raise ValueError(f"duplicate tensor name {name!r} while writing {self.folder}")
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_shard_bytes:
            self._flush()
        self._pending[name] = tensor.contiguous()
        self._pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        path = self.folder / f".shard-{len(self._shards):05d}.safetensors"
        save_file(self._pending, str(path), metadata={"format": "pt"})
        self._shards.append((path, list(self._pending)))
        self._pending = {}
        self._pending_bytes = 0

    def close(self) -> list[Path]:
        """Flush and give the shards their final names; returns the weight files."""
        if self._pending or not self._shards:
            self._flush()
        if len(self._shards) == 1:
            final = self.folder / "model.safetensors"
            os.rename(self._shards[0][0], final)
            return [final]
        count = len(self._shards)
        weight_map: dict[str, str] = {}
        files = []
        for i, (path, names) in enumerate(self._shards, start=1):
            final = self.folder / f"model-{i:05d}-of-{count:05d}.safetensors"
            os.rename(path, final)
            files.append(final)
            weight_map.update(dict.fromkeys(names, final.name))
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.folder / "model.safetensors.index.json").write_text(
            json.dumps(index, indent=2) + "\n"
        )
        return files
