"""GGUF files (llama.cpp's format) turned into Hugging Face folders, once, and cached.

The conversion dequantizes every tensor with the ``gguf`` package, maps llama.cpp's tensor
names back to Hugging Face names, undoes the Q/K row permutation that llama.cpp's
``convert_hf_to_gguf.py`` applies to LLaMA models, rebuilds ``config.json`` from the GGUF
metadata and the tokenizer (with its chat template) through transformers. The result is a
plain HF folder under ``<cache>/gguf/<key>/`` that every later start reads directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, PretrainedConfig

from tritium.engine.loader.cache import (
    ShardWriter,
    atomic_folder,
    cache_root,
    file_identity,
    identity_holds,
    is_complete,
    remove_stale_entries,
)
from tritium.engine.loader.hf_folder import HALF_WEIGHT_TYPES

logger = logging.getLogger(__name__)

#: Bump when the converted folder's layout or contents change, to invalidate old caches.
FORMAT_VERSION = 2

#: GGUF ``general.architecture`` -> (HF model_type, HF architecture class).
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "llama": ("llama", "LlamaForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
}

#: convert_hf_to_gguf.py permutes the Q and K rows (to llama.cpp's rotary layout) only for these.
PERMUTED_ARCHITECTURES = frozenset({"llama"})

_TOP_LEVEL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
#: Tensors that carry configuration rather than weights (read into the config instead).
_CONFIG_TENSORS = frozenset({"rope_freqs.weight"})
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")
_TOP_RE = re.compile(r"^(\w+)\.(weight|bias)$")

# Arrays longer than this (the vocabulary, merges) are not needed as plain metadata.
_MAX_METADATA_ARRAY = 64


def hf_tensor_name(gguf_name: str) -> str:
    """The Hugging Face name of a llama.cpp tensor (``blk.3.attn_q.weight`` ->
    ``model.layers.3.self_attn.q_proj.weight``). Raises ValueError for unknown tensors."""
    if m := _BLOCK_RE.match(gguf_name):
        layer, part, kind = m.groups()
        if part in _BLOCK_NAMES:
            return f"model.layers.{layer}.{_BLOCK_NAMES[part]}.{kind}"
    elif (m := _TOP_RE.match(gguf_name)) and m.group(1) in _TOP_LEVEL_NAMES:
        return f"{_TOP_LEVEL_NAMES[m.group(1)]}.{m.group(2)}"
    raise ValueError(f"GGUF tensor {gguf_name!r} has no Hugging Face equivalent known to Tritium")


def reverse_permute(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's ``permute(w, n_head)``: rows grouped as (head, pair, half) go back to
    Hugging Face's (head, half, pair) order for rotate-half RoPE."""
    half = weight.shape[0] // n_head // 2
    return weight.reshape(n_head, half, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def open_gguf(path: Path) -> Any:
    """A ``gguf.GGUFReader`` for ``path`` (memory-mapped); ValueError when it is not a GGUF file."""
    from gguf import GGUFReader

    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    try:
        return GGUFReader(str(path))
    except (ValueError, OSError, KeyError) as exc:
        raise ValueError(f"{path} is not a readable GGUF file: {exc}") from exc


def read_metadata(reader: Any) -> dict[str, Any]:
    """The GGUF key/values as Python values (long arrays such as the vocabulary left out)."""
    from gguf import GGUFValueType

    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        is_array = bool(field.types) and field.types[0] == GGUFValueType.ARRAY
        if is_array and len(field.data) > _MAX_METADATA_ARRAY:
            continue
        meta[key] = field.contents()
    return meta


def build_config(reader: Any, meta: dict[str, Any], dtype: torch.dtype) -> PretrainedConfig:
    """The transformers config described by the GGUF metadata (``llama.*``, ``qwen2.*``, ...)."""
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"GGUF architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})"
        )
    model_type, hf_class = ARCHITECTURES[arch]
    tensors = {t.name: t for t in reader.tensors}

    def get(key: str, default: Any = ...) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is ...:
            raise ValueError(f"GGUF metadata lacks the required key {arch}.{key}")
        return value

    heads = int(get("attention.head_count"))
    kv_heads = get("attention.head_count_kv", heads)
    if isinstance(kv_heads, list):  # per-layer counts; only uniform ones are supported
        if len(set(kv_heads)) != 1:
            raise ValueError(f"per-layer attention.head_count_kv {kv_heads} is not supported")
        kv_heads = kv_heads[0]
    hidden = int(get("embedding_length"))
    head_dim = int(get("attention.key_length", hidden // heads))
    if "token_embd.weight" not in tensors:
        raise ValueError("GGUF file has no token_embd.weight tensor")
    vocab = int(get("vocab_size", 0)) or int(tensors["token_embd.weight"].shape[-1])
    rope = _rope_parameters(get, tensors, head_dim)

    kwargs: dict[str, Any] = {
        "architectures": [hf_class],
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(get("feed_forward_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(kv_heads),
        "head_dim": head_dim,
        "rms_norm_eps": _f32(get("attention.layer_norm_rms_epsilon", 1e-6)),
        "max_position_embeddings": int(get("context_length", 4096)),
        "rope_parameters": rope,
        # llama.cpp drops output.weight when it equals the embedding.
        "tie_word_embeddings": "output.weight" not in tensors,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
        "dtype": dtype,
    }
    if model_type == "llama":
        kwargs["attention_bias"] = "blk.0.attn_q.bias" in tensors
        kwargs["mlp_bias"] = "blk.0.ffn_up.bias" in tensors
    return AutoConfig.for_model(model_type, **kwargs)


def _rope_parameters(get: Any, tensors: dict[str, Any], head_dim: int) -> dict[str, Any]:
    theta = _f32(get("rope.freq_base", 10000.0))
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": theta}
    scaling = get("rope.scaling.type", None)
    if scaling in ("linear", "yarn"):
        rope.update(rope_type=scaling, factor=_f32(get("rope.scaling.factor")))
        original = get("rope.scaling.original_context_length", None)
        if original:
            rope["original_max_position_embeddings"] = int(original)
    elif "rope_freqs.weight" in tensors:
        # Llama 3.1+ rope scaling: llama.cpp stores the per-frequency divisors as a tensor.
        factors = torch.from_numpy(np.array(tensors["rope_freqs.weight"].data, dtype=np.float32))
        rope.update(_llama3_rope(factors, theta, head_dim))
    return rope


def _llama3_rope(factors: torch.Tensor, theta: float, head_dim: int) -> dict[str, Any]:
    """Recover HF's ``llama3`` rope parameters from llama.cpp's ``rope_freqs`` tensor.

    The tensor only keeps the resulting divisors; ``factor`` is their maximum and the
    other three are the values every published Llama 3.x model uses, which is checked by
    recomputing the divisors the way convert_hf_to_gguf.py does.
    """
    params = {
        "rope_type": "llama3",
        "factor": round(float(factors.max()), 4),
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    expected = _llama3_divisors(theta, head_dim, params)
    if expected.shape != factors.shape or not torch.allclose(expected, factors, rtol=1e-3):
        logger.warning("GGUF rope_freqs differ from Llama 3 defaults; rope scaling is approximate")
    return params


def _llama3_divisors(theta: float, head_dim: int, p: dict[str, Any]) -> torch.Tensor:
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    old = p["original_max_position_embeddings"]
    low, high, factor = p["low_freq_factor"], p["high_freq_factor"], p["factor"]
    out = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(out, dtype=torch.float32)


def _f32(value: Any) -> float:
    """A float32 metadata value at its shortest decimal (9.9999997e-06 -> 1e-05)."""
    return float(str(np.float32(value)))


def dequantize(tensor: Any) -> torch.Tensor:
    """One GGUF tensor as a float torch tensor in Hugging Face (row-major) shape."""
    from gguf import GGMLQuantizationType, quants

    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    qtype = tensor.tensor_type
    if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        array = np.array(tensor.data)  # copy out of the read-only memory map
    else:
        try:
            array = quants.dequantize(tensor.data, qtype)
        except NotImplementedError as exc:
            raise ValueError(
                f"GGUF tensor {tensor.name} uses {qtype.name}, which gguf cannot dequantize"
            ) from exc
    return torch.from_numpy(array).reshape(shape)


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor of a GGUF file is and what it holds: all that reading it takes."""

    name: str
    type_name: str
    dims: tuple[int, ...]
    """GGUF order: the innermost (row) length first."""
    data_offset: int
    """Bytes from the start of the file."""


class MappedTensor:
    """A `TensorInfo` over the file's memory map, with the attributes `dequantize` reads
    (those of gguf's ReaderTensor)."""

    def __init__(self, info: TensorInfo, file: np.ndarray) -> None:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        self.name = info.name
        self.tensor_type = GGMLQuantizationType[info.type_name]
        self.shape = np.array(info.dims)
        np_dims = tuple(reversed(info.dims))
        count = int(np.prod(info.dims))
        dtypes = {"F32": np.float32, "F16": np.float16}
        if info.type_name in dtypes:
            dtype = np.dtype(dtypes[info.type_name])
            start = info.data_offset
            self.data = file[start : start + count * dtype.itemsize].view(dtype).reshape(np_dims)
        else:  # quantized types (and BF16) are bytes: rows of blocks, as gguf's reader has them
            block, size = GGML_QUANT_SIZES[self.tensor_type]
            row_bytes = info.dims[0] // block * size
            start, nbytes = info.data_offset, count // block * size
            self.data = file[start : start + nbytes].reshape(*np_dims[:-1], row_bytes)


def tensor_index(path: Path) -> list[TensorInfo]:
    """Every tensor of ``path``: name, type, shape and where its data starts.

    Read once per file and remembered beside the conversions in Tritium's cache: gguf's
    reader walks every metadata array on open (the whole vocabulary), which takes seconds,
    and each start asks for these before and after converting, and to stream the weights.
    """
    path = Path(path).expanduser().resolve()
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        return [
            TensorInfo(t["name"], t["type"], tuple(t["dims"]), t["offset"])
            for t in json.loads(_index_record(path).read_text())["tensors"]
        ]
    return _record_index(path, open_gguf(path))


def _index_record(path: Path) -> Path:
    return cache_root() / "gguf" / f"{file_key(path)}.tensors.json"


def _record_index(path: Path, reader: Any) -> list[TensorInfo]:
    """`tensor_index` from an open reader, written to the cache (each parse of the header
    is recorded, so the next call reads the record instead)."""
    infos = [
        TensorInfo(t.name, t.tensor_type.name, tuple(int(d) for d in t.shape), t.data_offset)
        for t in reader.tensors
    ]
    record = _index_record(path)
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_name(f".{record.name}.{os.getpid()}")
    rows = [{"name": t.name, "type": t.type_name, "dims": t.dims, "offset": t.data_offset}
            for t in infos]  # fmt: skip
    record_data = {"source": file_identity(path), "tensors": rows}
    tmp.write_text(json.dumps(record_data, indent=1) + "\n")
    os.replace(tmp, record)  # atomic: a concurrent start reads the old or the new file
    return infos


def tensor_types(path: Path) -> dict[str, str]:
    """The GGUF type name (``"Q4_1"``, ``"F32"``, ...) of every tensor in ``path``, by
    GGUF tensor name (from `tensor_index`)."""
    return {t.name: t.type_name for t in tensor_index(path)}


#: GGUF types of at most 4 bits per weight, which run as "q4"; Q8_0 runs as "q8" (its own
#: blocks); other wider ones (Q5_*, Q6_K, Q8_K) as "int8", so a weight never loses
#: precision it had in the file.
_FOUR_BIT_OR_LESS = ("Q4", "Q3", "Q2", "IQ4", "IQ3", "IQ2", "IQ1", "TQ")


def _cpu_format(kind: str) -> str:
    if kind.startswith(_FOUR_BIT_OR_LESS):
        return "q4"
    return "q8" if kind == "Q8_0" else "int8"


def quantized_weight_formats(path: Path) -> dict[str, str]:
    """The Hugging Face names of the weights the GGUF file stores quantized, each with the
    CPU format it runs in: "q4" for 4-bit-or-less types (Q4_0, Q4_1, Q4_K, ...), "q8" for
    Q8_0, "int8" for the other wider ones (Q5_*, Q6_K, ...)."""
    return {
        hf_tensor_name(name): _cpu_format(kind)
        for name, kind in tensor_types(path).items()
        if kind not in ("F32", "F16", "BF16") and name not in _CONFIG_TENSORS
    }


def half_weight_formats(path: Path) -> dict[str, str]:
    """The Hugging Face names of the weights the GGUF file stores as F16 or BF16, each with
    the CPU format that keeps it so ("fp16", "bf16")."""
    return {
        hf_tensor_name(name): HALF_WEIGHT_TYPES[kind]
        for name, kind in tensor_types(path).items()
        if kind in HALF_WEIGHT_TYPES and name not in _CONFIG_TENSORS
    }


def iter_weights(
    tensors: Iterable[Any], config: PretrainedConfig, dtype: torch.dtype, progress: bool = True
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(hf_name, tensor)`` for every GGUF weight of ``tensors`` (a reader's, or
    `MappedTensor`s), dequantized, un-permuted, in ``dtype``."""
    arch = config.model_type
    permuted = arch in PERMUTED_ARCHITECTURES
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    tensors = [t for t in tensors if t.name not in _CONFIG_TENSORS]
    for tensor in tqdm(tensors, desc="Converting GGUF", unit="tensor", disable=not progress):
        name = hf_tensor_name(tensor.name)
        weight = dequantize(tensor)
        if permuted and ".self_attn.q_proj." in name:
            weight = reverse_permute(weight, heads)
        elif permuted and ".self_attn.k_proj." in name:
            weight = reverse_permute(weight, kv_heads)
        yield name, weight.to(dtype).contiguous()


def generation_config(meta: dict[str, Any]) -> dict[str, Any]:
    """``generation_config.json`` contents: bos and every end-of-generation id llama.cpp names."""
    eos: list[int] = []
    for key in ("eos_token_id", "eot_token_id", "eom_token_id"):
        value = meta.get(f"tokenizer.ggml.{key}")
        if value is not None and int(value) not in eos:
            eos.append(int(value))
    out: dict[str, Any] = {}
    if meta.get("tokenizer.ggml.bos_token_id") is not None:
        out["bos_token_id"] = int(meta["tokenizer.ggml.bos_token_id"])
    if eos:
        out["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    if meta.get("tokenizer.ggml.padding_token_id") is not None:
        out["pad_token_id"] = int(meta["tokenizer.ggml.padding_token_id"])
    return out


def file_key(path: Path) -> str:
    """Identity of one GGUF file: its path, size and modification time."""
    return hashlib.sha256(file_identity(path).encode()).hexdigest()[:20]


def cache_key(path: Path, dtype: torch.dtype) -> str:
    """Identity of one conversion: the file (path, size, mtime), the dtype and the format."""
    text = f"{file_identity(path)}|{dtype}|v{FORMAT_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def converted_folder(path: Path, dtype: torch.dtype) -> Path:
    """Where the conversion of ``path`` to ``dtype`` lives (whether or not it exists yet)."""
    return cache_root() / "gguf" / cache_key(path, dtype)


def convert(path: Path, dtype: torch.dtype = torch.bfloat16, progress: bool = True) -> Path:
    """The cached Hugging Face folder for GGUF file ``path``, converting it on first use.

    The folder holds config.json, model.safetensors (in ``dtype``), generation_config.json and
    the tokenizer files (tokenizer.json, tokenizer_config.json, chat_template.jinja).
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    final = converted_folder(path, dtype)
    if is_complete(final):
        return final
    logger.info("converting %s to a Hugging Face folder in %s (once)", path, final)
    remove_stale(final.parent)
    reader = open_gguf(path)
    _record_index(path, reader)
    meta = read_metadata(reader)
    config = build_config(reader, meta, dtype)
    with atomic_folder(final, _marker(path, meta, str(dtype).removeprefix("torch."))) as tmp:
        writer = ShardWriter(tmp)
        for name, tensor in iter_weights(reader.tensors, config, dtype, progress):
            writer.add(name, tensor)
        writer.close()
        del reader  # release the memory map before the (slow) tokenizer pass
        _write_metadata(path, meta, config, tmp)
    return final


def metadata_folder(path: Path, progress: bool = True) -> Path:
    """A cached folder with ``path``'s config.json, generation_config.json and tokenizer
    files but no weights, for a run that reads them from the file itself
    (`iter_file_weights`). A full conversion of any dtype, where one exists, serves."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    for dtype in (torch.bfloat16, torch.float32, torch.float16):
        folder = converted_folder(path, dtype)
        if is_complete(folder):
            return folder
    final = cache_root() / "gguf" / f"{file_key(path)}-meta-v{FORMAT_VERSION}"
    if is_complete(final):
        return final
    remove_stale(final.parent)
    reader = open_gguf(path)
    _record_index(path, reader)
    meta = read_metadata(reader)
    config = build_config(reader, meta, torch.bfloat16)
    del reader
    with atomic_folder(final, _marker(path, meta, None)) as tmp:
        _write_metadata(path, meta, config, tmp)
    return final


def iter_file_weights(
    path: Path, config: PretrainedConfig, dtype: torch.dtype, progress: bool = True
) -> Iterator[tuple[str, torch.Tensor]]:
    """`iter_weights` straight from the file (mapped when the stream is first read, its
    tensors found through `tensor_index`), for a run that caches what it makes of them: no
    converted copy is written."""
    file = np.memmap(path, dtype=np.uint8, mode="r")
    tensors = [MappedTensor(info, file) for info in tensor_index(path)]
    yield from iter_weights(tensors, config, dtype, progress)


def remove_stale(root: Path) -> None:
    """Delete the conversions and tensor records under ``root`` (``<cache>/gguf``) that
    nothing can hit again: their GGUF file changed or gone (a reinstalled package, a
    temporary file), or a conversion of an older FORMAT_VERSION (after its grace period;
    cache.remove_stale_entries). Run before each new conversion, when the cache grows."""
    for entry in remove_stale_entries(root, _marker_source, "format_version", FORMAT_VERSION):
        logger.info("removed a stale GGUF conversion: %s", entry)
    for record in root.glob("*.tensors.json"):
        with contextlib.suppress(OSError):
            try:
                live = identity_holds(json.loads(record.read_text())["source"])
            except (ValueError, TypeError, KeyError):
                live = False  # damaged, or an older layout: it is read again when asked
            if not live:
                record.unlink()


def _marker_source(marker: dict[str, Any]) -> list[str]:
    """The file identity (cache.file_identity) a conversion's marker records."""
    return [f"{marker['source']}|{marker['size']}|{marker['mtime_ns']}"]


def _marker(path: Path, meta: dict[str, Any], dtype: str | None) -> dict[str, Any]:
    st = path.stat()
    return {
        "source": str(path),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "dtype": dtype,
        "format_version": FORMAT_VERSION,
        "architecture": meta.get("general.architecture"),
        "name": meta.get("general.name"),
    }


def _write_metadata(
    path: Path, meta: dict[str, Any], config: PretrainedConfig, folder: Path
) -> None:
    """config.json, generation_config.json and the tokenizer files of ``path``."""
    config.save_pretrained(str(folder))
    (folder / "generation_config.json").write_text(
        json.dumps(generation_config(meta), indent=2) + "\n"
    )
    _save_tokenizer(path, folder)


def _save_tokenizer(path: Path, folder: Path) -> None:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (ValueError, KeyError, OSError) as exc:
        raise ValueError(
            f"cannot build a tokenizer from the GGUF metadata of {path}: {exc}"
        ) from exc
    tokenizer.save_pretrained(str(folder))
    if tokenizer.chat_template:
        # transformers writes chat_template.jinja; keep a copy in tokenizer_config.json too, for
        # readers (and copies of the folder) that only look there.
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config["chat_template"] = tokenizer.chat_template
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
