"""EngineArgs: the engine's one config dataclass, with vLLM's argument names."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch

#: `quantization` values that pick a CPU weight format (layers.linear.QUANT_METHODS): 4-bit
#: or 8-bit blocks, int8 rows, or 16-bit floats widened to fp32 in the kernels.
CPU_WEIGHT_FORMATS = ("q4", "q8", "int8", "bf16", "fp16")

_DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "float": torch.float32,
    "fp32": torch.float32,
}


#: Explicit `kv_cache_dtype` values.
KV_CACHE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX); else bf16 is emulated
    and slower than fp32 for batched matmuls."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_cpu_kv_bytes() -> int:
    """min(2 GiB, 10% of RAM): enough for hundreds of short sequences of a small model."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = 8 << 30
    return min(2 << 30, ram // 10)


@dataclass
class EngineArgs:
    """Arguments of an engine instance. Names and meanings follow vLLM's EngineArgs."""

    model: str = ""
    tokenizer: str | None = None
    revision: str | None = None
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    max_model_len: int | None = None  # default: the model's max_position_embeddings (capped)
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    block_size: int = 16
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    kv_cache_memory_bytes: int | None = None  # CPU pool size; default min(2 GiB, 10% RAM)
    num_gpu_blocks_override: int | None = None  # tests: force a tiny pool
    load_format: str = "auto"  # auto | safetensors | pt | gguf | dummy
    # None: follow the checkpoint on CPU (a quantized GGUF keeps its 4-bit / 8-bit weights,
    # 16-bit float weights stay 16-bit under fp32 math); one of CPU_WEIGHT_FORMATS: that
    # format for every weight; "none": every weight in `dtype`.
    quantization: str | None = None
    # auto: the compute dtype, or float16 for quantized weights on CPU (llama.cpp's default
    # cache type); a 16-bit cache on CPU under fp32 math holds twice the tokens in the same
    # kv_cache_memory_bytes. On CUDA only the compute dtype.
    kv_cache_dtype: str = "auto"  # auto | float16 | bfloat16 | float32
    trust_remote_code: bool = False  # accepted for vLLM compatibility, ignored
    disable_log_stats: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", *_DTYPES):
            raise ValueError(
                f"dtype must be one of auto, bfloat16, float16, float32; got {self.dtype!r}"
            )
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda; got {self.device!r}")
        if self.load_format not in ("auto", "safetensors", "pt", "gguf", "dummy"):
            raise ValueError(
                f"load_format must be auto, safetensors, pt, gguf or dummy; got {self.load_format!r}"
            )
        if self.quantization not in (None, *CPU_WEIGHT_FORMATS, "none"):
            raise ValueError(
                f"quantization={self.quantization!r} is not supported: leave it unset "
                "(follow the checkpoint), or use 'q4', 'q8', 'int8', 'bf16' or 'fp16' (CPU "
                "weight formats) or 'none'"
            )
        if self.kv_cache_dtype not in ("auto", *KV_CACHE_DTYPES):
            raise ValueError(
                "kv_cache_dtype must be auto, float16, bfloat16 or float32; "
                f"got {self.kv_cache_dtype!r}"
            )
        if self.block_size <= 0 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two; got {self.block_size}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1; got {self.max_num_seqs}")
        if self.max_num_batched_tokens < 1:
            raise ValueError(
                f"max_num_batched_tokens must be >= 1; got {self.max_num_batched_tokens}"
            )
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1]; got {self.gpu_memory_utilization}"
            )
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1; got {self.max_model_len}")
        if self.kv_cache_memory_bytes is not None and self.kv_cache_memory_bytes <= 0:
            raise ValueError("kv_cache_memory_bytes must be positive")

    @classmethod
    def from_dict(cls, args: dict[str, Any]) -> EngineArgs:
        """Build from a dict (e.g. a model.json), rejecting unknown names with a clear message."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ValueError(
                f"unknown engine argument(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**args)

    def resolved_device(self) -> torch.device:
        """'auto' is CUDA when available, else CPU."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved_dtype(self) -> torch.dtype:
        """'auto': bf16 on CUDA and on CPUs with native bf16, fp32 otherwise."""
        if self.dtype != "auto":
            return _DTYPES[self.dtype]
        if self.resolved_device().type == "cuda" or cpu_has_bf16():
            return torch.bfloat16
        return torch.float32
