"""Reading a local Hugging Face model folder: config, generation defaults and weight files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from tqdm.auto import tqdm
from transformers import AutoConfig, PretrainedConfig

SAFETENSORS_INDEX = "model.safetensors.index.json"
PT_INDEX = "pytorch_model.bin.index.json"

#: The 16-bit float types (safetensors' and GGUF's names alike) and the CPU weight format
#: that keeps each as stored (layers.linear.HALF_FORMATS).
HALF_WEIGHT_TYPES = {"BF16": "bf16", "F16": "fp16"}

#: Buffers some old checkpoints saved next to the parameters; engines recompute them.
_SKIPPED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached")


def load_config(folder: Path) -> PretrainedConfig:
    """The model's ``config.json`` as a transformers config (``LlamaConfig``, ``Qwen2Config``, ...)."""
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a Hugging Face model folder: config.json is missing "
            "(expected config.json, *.safetensors and tokenizer files)"
        )
    try:
        return AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (ValueError, KeyError, OSError) as exc:
        raise ValueError(f"cannot read the model config {path}: {exc}") from exc


def load_generation_config(folder: Path) -> dict[str, Any]:
    """The defaults in ``generation_config.json``, or ``{}`` when the folder has none."""
    path = folder / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def find_weight_files(folder: Path, load_format: str = "auto") -> tuple[list[Path], str]:
    """The checkpoint files of ``folder`` and their format (``"safetensors"`` or ``"pt"``).

    safetensors win; ``pytorch_model*.bin`` is the fallback when a folder has none (or when
    ``load_format="pt"``). An index file, when present, names the shards to read.
    """
    if load_format in ("auto", "safetensors"):
        files = _indexed(folder, SAFETENSORS_INDEX) or _safetensors_glob(folder)
        if files:
            return files, "safetensors"
        if load_format == "safetensors":
            raise FileNotFoundError(f"no *.safetensors weights in {folder}")
    files = _indexed(folder, PT_INDEX) or sorted(folder.glob("pytorch_model*.bin"))
    if files:
        return files, "pt"
    raise FileNotFoundError(
        f"no weights in {folder}: expected model.safetensors, sharded *.safetensors "
        f"(with {SAFETENSORS_INDEX}) or pytorch_model*.bin"
    )


def _indexed(folder: Path, index_name: str) -> list[Path]:
    index = folder / index_name
    if not index.is_file():
        return []
    weight_map = json.loads(index.read_text()).get("weight_map", {})
    files = [folder / name for name in sorted(set(weight_map.values()))]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{index} names shards that are missing: {', '.join(missing)}")
    return files


def _safetensors_glob(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    # Mistral repos ship a second, differently named copy of the weights.
    hf_named = [f for f in files if not f.name.startswith("consolidated")]
    return hf_named or files


def iter_weights(
    files: list[Path], fmt: str, dtype: torch.dtype, progress: bool = False
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(hf_name, tensor)`` file by file; floating tensors are cast to ``dtype``.

    safetensors are memory-mapped and read one tensor at a time, so only one tensor (plus
    the caller's copy) is resident; ``.bin`` shards are loaded one shard at a time.
    """
    bar = tqdm(files, desc="Loading weights", unit="shard", disable=not progress or len(files) < 2)
    for path in bar:
        if fmt == "safetensors":
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    if not name.endswith(_SKIPPED_SUFFIXES):
                        yield name, _cast(f.get_tensor(name), dtype)
        elif fmt == "pt":
            state = _torch_load(path)
            for name in list(state):
                tensor = state.pop(name)
                if not name.endswith(_SKIPPED_SUFFIXES):
                    yield name, _cast(tensor, dtype)
            del state
        else:
            raise ValueError(f"unknown weight format {fmt!r}")


def half_weight_formats(files: list[Path], fmt: str) -> dict[str, str]:
    """The weights that safetensors files store as 16-bit floats, each with its CPU format
    ("bf16", "fp16"), read from the headers alone; ``{}`` for ``.bin`` checkpoints."""
    if fmt != "safetensors":
        return {}
    formats = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                half = HALF_WEIGHT_TYPES.get(f.get_slice(name).get_dtype())
                if half is not None:
                    formats[name] = half
    return formats


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        # Legacy (non-zip) files cannot be memory-mapped.
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if tensor.is_floating_point() and tensor.dtype != dtype:
        return tensor.to(dtype)
    return tensor
