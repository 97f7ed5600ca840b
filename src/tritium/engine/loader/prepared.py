"""Prepared weights: a model's weights in the form it runs them, cached for the next start.

Putting a checkpoint in a compact CPU format (q4, q8, int8) means reading every weight at full
precision and quantizing it: seconds for SmolLM2, minutes for an 8B model, on every start.
The first start writes the result (the packed q/k/v and gate/up, the codes and scales) to
``<cache>/prepared/<key>/``; later starts memory-map it, as llama.cpp maps a GGUF file: no
conversion, and the weights live in the page cache rather than the process's own memory.

The key is the checkpoint's files (path, size, mtime), its config, the dtype, the weight
formats asked for and ``PREPARED_VERSION``; a change to any of them is a new entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from tritium.engine.layers.linear import HALF_FORMATS, Linear
from tritium.engine.loader import gguf
from tritium.engine.loader.cache import (
    ShardWriter,
    atomic_folder,
    cache_root,
    is_complete,
    remove_stale_entries,
)
from tritium.engine.loader.checkpoint import Checkpoint

logger = logging.getLogger(__name__)

#: Bump when what a prepared folder holds changes (a kernel's weight layout, a new format).
PREPARED_VERSION = 3

#: Formats worth caching: computing them costs a pass over every weight. Plain and 16-bit
#: weights load as fast from the checkpoint itself, so copying them would only cost disk.
CACHED_FORMATS = frozenset({"q4", "q8", "int8"})

#: Fewer weights than this quantize in a fraction of a second (SmolLM2-135M has 134M): a
#: cache entry would cost disk and save nothing.
MIN_CACHED_WEIGHTS = 32_000_000

#: Shard size of an entry: safetensors copies a shard's tensors into one buffer to write
#: it, and those copies add to the start's peak memory.
SHARD_BYTES = 256 * 1024**2

#: An entry's record of tensors that share another's storage (a tied lm_head's 16-bit
#: copy is the embedding table itself): name -> the name written.
ALIASES = "aliases.json"


@dataclass(frozen=True)
class PreparedWeights:
    """One checkpoint's weights in one set of formats: where they are cached, and the
    marker that records what they were made from."""

    folder: Path
    marker: dict[str, Any]

    def load(self, model: nn.Module, plan: Mapping[str, str]) -> bool:
        """Put the cached weights into ``model`` (built, not loaded), with each Linear of
        ``plan`` in its format; the tensors map the files (zero copy).

        False, with the model untouched, when there is no complete entry or it cannot be
        used; a damaged entry is removed, so this start's `save` replaces it.
        """
        if not is_complete(self.folder):
            return False
        try:
            _assign(model, plan, _read(self.folder))
        except Exception as exc:  # whatever makes an entry unreadable, it is only a miss
            logger.warning("ignoring the damaged prepared weights in %s: %s", self.folder, exc)
            shutil.rmtree(self.folder, ignore_errors=True)
            return False
        return True

    def save(self, model: nn.Module) -> None:
        """Write ``model``'s weights, as they are now, and remove the entries nothing can
        hit again (cache.remove_stale_entries: checkpoint files changed or gone, or an
        older PREPARED_VERSION).

        A failure (a full disk, a read-only cache) only costs the next start its shortcut,
        so it is logged, not raised.
        """
        remove_stale_entries(
            self.folder.parent, lambda marker: marker["source"], "version", PREPARED_VERSION
        )
        try:
            with atomic_folder(self.folder, self.marker) as tmp:
                writer = ShardWriter(tmp, SHARD_BYTES)
                owners: dict[tuple, str] = {}
                aliases: dict[str, str] = {}
                for name, tensor in model.state_dict().items():
                    identity = (tensor.data_ptr(), tensor.shape, tensor.dtype)
                    if identity in owners:  # tied: one copy, as in the model
                        aliases[name] = owners[identity]
                        continue
                    owners[identity] = name
                    writer.add(name, tensor)
                writer.close()
                (tmp / ALIASES).write_text(json.dumps(aliases, indent=1) + "\n")
        except OSError as exc:
            logger.warning("could not cache prepared weights in %s: %s", self.folder, exc)
            return
        logger.info("cached prepared weights of %s in %s", self.marker["model"], self.folder)


def for_checkpoint(
    ckpt: Checkpoint,
    quantization: str | Mapping[str, str],
    tables: str | Mapping[str, str] | None = None,
) -> PreparedWeights | None:
    """The cache entry of ``ckpt``'s weights in ``quantization``'s formats, with embedding
    tables in ``tables``' (whether or not it exists yet); None for dummy weights, which no
    file holds."""
    source = ckpt.source_identity()
    if source is None:
        return None
    formats = [_plain(quantization), _plain(tables)]
    dtype = str(ckpt.dtype).removeprefix("torch.")
    # What a GGUF file's weights dequantize to is the converter's, so it versions them too.
    version = [PREPARED_VERSION, gguf.FORMAT_VERSION if ckpt.load_format == "gguf" else None]
    config = ckpt.hf_config.to_dict()
    config.pop("_name_or_path", None)  # where it was read from is not what it says
    text = json.dumps([source, config, dtype, formats, version], sort_keys=True, default=str)
    folder = cache_root() / "prepared" / hashlib.sha256(text.encode()).hexdigest()[:20]
    marker = {"model": ckpt.model, "source": source, "dtype": dtype, "version": PREPARED_VERSION}
    return PreparedWeights(folder, marker)


def _plain(formats: str | Mapping[str, str] | None) -> str | dict[str, str] | None:
    return formats if formats is None or isinstance(formats, str) else dict(formats)


def worth_caching(model: nn.Module, plan: Mapping[str, str]) -> bool:
    """Whether loading ``model`` with ``plan`` (linear.weight_formats) computes enough
    weights that caching them saves time: some layer takes q4 or int8, and those layers
    hold at least `MIN_CACHED_WEIGHTS` values."""
    modules = dict(model.named_modules())
    computed = sum(
        modules[name].in_features * modules[name].out_features
        for name, fmt in plan.items()
        if fmt in CACHED_FORMATS
    )
    return computed > 0 and computed >= MIN_CACHED_WEIGHTS


def _read(folder: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                state[name] = f.get_tensor(name)
    for name, owner in json.loads((folder / ALIASES).read_text()).items():
        state[name] = state[owner]
    return state


def _assign(model: nn.Module, plan: Mapping[str, str], state: dict[str, torch.Tensor]) -> None:
    """Check that ``state`` is exactly what ``model`` with ``plan`` holds, then take it in:
    nothing is changed when it is not."""
    compact = {f"{name}.weight" for name in plan}
    params = {n: p for n, p in model.named_parameters(remove_duplicate=False) if n not in compact}
    expected = set(params)
    for name, fmt in plan.items():
        expected.add(f"{name}.qweight")
        if fmt not in HALF_FORMATS:  # int8 and q4 have scales
            expected.add(f"{name}.wscale")
    if set(state) != expected:
        unknown, missing = sorted(set(state) - expected), sorted(expected - set(state))
        raise ValueError(f"tensors not in the model: {unknown[:4]}; missing: {missing[:4]}")
    modules = dict(model.named_modules())
    for name, param in params.items():
        tensor = state[name]
        dtype = torch.float32 if _is_compact_bias(name, plan) else param.dtype
        if tensor.shape != param.shape or tensor.dtype != dtype:
            raise ValueError(
                f"{name}: {tuple(tensor.shape)} {tensor.dtype} cached, the model has "
                f"{tuple(param.shape)} {dtype}"
            )
    for name in plan:
        layer = modules[name]
        assert isinstance(layer, Linear)
        layer.set_compact_weight(plan[name], state[f"{name}.qweight"], state.get(f"{name}.wscale"))
    for name, param in params.items():
        param.data = state[name]  # the Parameter object stays, so a tied owner sees it too


def _is_compact_bias(name: str, plan: Mapping[str, str]) -> bool:
    """Whether ``name`` is the bias of a compact Linear (which keeps it in fp32)."""
    layer, _, leaf = name.rpartition(".")
    return leaf == "bias" and layer in plan
