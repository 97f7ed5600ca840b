"""The CPU weight-only quantized matmuls (csrc/quant_linear.c: int8 and 4-bit), built once
per machine and called through ctypes, and the functions that quantize weights for them.

Building with the system C compiler takes about a second, against a minute for a torch C++
extension, and the library links nothing but OpenMP: torch's own libgomp is already loaded,
so both share one thread pool. The build lands in Tritium's cache folder, keyed by the
source, the compiler flags and the CPU's vector extensions, and is renamed into place so
concurrent processes never load a half-written file.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import torch

from tritium.engine.loader.cache import cache_root

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "quant_linear.c"

#: 4-bit block size along K: the GGUF Q4_0/Q4_1 block, so those files map block for block.
Q4_BLOCK = 32


class KernelUnavailable(RuntimeError):
    """The quantized kernels cannot be built or loaded here (no C compiler)."""


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _compile_flags() -> list[str]:
    flags = ["-O3", "-shared", "-fPIC", "-std=c11"]
    cpu = _cpu_flags()
    if platform.machine() in ("x86_64", "AMD64") and {"avx2", "fma", "f16c"} <= cpu:
        flags += ["-mavx2", "-mfma", "-mf16c"]
    return flags


def _library() -> ctypes.CDLL:
    lib = _load()
    if isinstance(lib, Exception):
        raise lib
    return lib


@functools.cache
def _load() -> ctypes.CDLL | KernelUnavailable | OSError:
    """The built library, or why it cannot be had: a failure is remembered too, so every
    model load after it does not run the compiler again."""
    try:
        return _build()
    except (KernelUnavailable, OSError) as exc:
        return exc


def _build() -> ctypes.CDLL:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise KernelUnavailable(
            "the quantized CPU kernels are compiled at first use and need a C compiler (cc or gcc)"
        )
    flags = _compile_flags()
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([compiler, *flags]).encode()).hexdigest()[:16]
    target = cache_root() / "kernels" / f"quant_linear-{key}.so"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
        # OpenMP first; a compiler without it still gives a working single-threaded kernel.
        for extra in (["-fopenmp"], []):
            cmd = [compiler, *flags, *extra, str(SOURCE), "-o", str(tmp)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                break
        else:
            tmp.unlink(missing_ok=True)
            raise KernelUnavailable(
                f"building the quantized CPU kernels failed: {proc.stderr[-500:]}"
            )
        os.replace(tmp, target)
        logger.info("built the quantized CPU kernels: %s", target)
    lib = ctypes.CDLL(str(target))
    for fn in (lib.tritium_int8_linear, lib.tritium_q4_linear):
        # x, M, K, weight codes, scales, bias, N, out, threads
        fn.argtypes = [
            ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
            ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int,
        ]  # fmt: skip
        fn.restype = ctypes.c_int
    return lib


def ensure_available() -> None:
    """Build and load the kernels now; KernelUnavailable says why they cannot be."""
    _library()


def is_available() -> bool:
    """Whether the kernels build and load on this machine."""
    try:
        _library()
    except (KernelUnavailable, OSError) as exc:
        logger.warning("quantized CPU kernels unavailable: %s", exc)
        return False
    return True


def quantize_weight_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-row int8: ``weight ~= q * scale[:, None]``; returns (q, scale)."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def quantize_weight_q4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks of 32 along each row as 4-bit codes with an fp16 scale and minimum each
    (``w ~= d * q + m``, Q4_1's rule: m is the block's minimum, d its range / 15).

    Returns (codes [N, K / 2] uint8, dm [N, K / 32, 2] fp16). Weights that came from a Q4_1
    GGUF come back exactly: each of their blocks holds its own minimum and maximum codes.
    """
    n, k = weight.shape
    w = weight.detach().float().reshape(n, k // Q4_BLOCK, Q4_BLOCK)
    lo, hi = w.amin(dim=-1), w.amax(dim=-1)
    d = ((hi - lo) / 15.0).half()
    m = lo.half()
    # Codes from the fp16 d and m the kernel will use, so rounding happens once.
    inv = torch.where(d.float() > 0, 1.0 / d.float(), torch.zeros_like(lo))
    q = torch.round((w - m.float()[..., None]) * inv[..., None]).clamp_(0, 15).to(torch.uint8)
    codes = q[..., :16] | (q[..., 16:] << 4)
    return codes.reshape(n, k // 2).contiguous(), torch.stack((d, m), dim=-1).contiguous()


def dequantize_q4(codes: torch.Tensor, dm: torch.Tensor) -> torch.Tensor:
    """The fp32 weight [N, K] that (codes, dm) encode."""
    n = codes.shape[0]
    c = codes.reshape(n, -1, 16)
    q = torch.cat((c & 0x0F, c >> 4), dim=-1).float()  # [N, K / 32, 32]
    d, m = dm.float().unbind(-1)
    return (q * d[..., None] + m[..., None]).reshape(n, -1)


def _call(
    fn: Callable[..., int],
    x: torch.Tensor,
    codes: torch.Tensor,
    scales: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    # Decode steps make ~120 of these calls; skip conversions that are no-ops.
    x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    if x2.dtype != torch.float32 or not x2.is_contiguous():
        x2 = x2.to(torch.float32).contiguous()
    m, k = x2.shape
    n = codes.shape[0]
    out = torch.empty(m, n, dtype=torch.float32)
    rc = fn(
        x2.data_ptr(), m, k, codes.data_ptr(), scales.data_ptr(),
        None if bias is None else bias.data_ptr(), n, out.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    if rc != 0:
        raise MemoryError("quantized linear: cannot allocate its scratch buffer")
    if x.dim() != 2:
        out = out.view(*x.shape[:-1], n)
    return out if x.dtype == torch.float32 else out.to(x.dtype)


def int8_linear(
    x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x @ (qweight * scale[:, None]).T + bias`` on CPU, in x's dtype.

    x: [..., K] float; qweight: [N, K] int8 (K a multiple of 8); scale, bias: [N] float32,
    contiguous (Linear.quantize makes them so).
    """
    return _call(_library().tritium_int8_linear, x, qweight, scale, bias)


def q4_linear(
    x: torch.Tensor, codes: torch.Tensor, dm: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x @ dequantize_q4(codes, dm).T + bias`` on CPU, in x's dtype (K a multiple of 32)."""
    return _call(_library().tritium_q4_linear, x, codes, dm, bias)
