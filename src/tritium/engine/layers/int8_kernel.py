"""The CPU weight-only int8 matmul (csrc/int8_linear.c), built once per machine and called
through ctypes.

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
from pathlib import Path

import torch

from tritium.engine.loader.cache import cache_root

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "int8_linear.c"


class Int8KernelUnavailable(RuntimeError):
    """The int8 kernel cannot be built or loaded here (no C compiler, unsupported CPU)."""


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
    if platform.machine() in ("x86_64", "AMD64") and {"avx2", "fma"} <= cpu:
        flags += ["-mavx2", "-mfma"]
    return flags


@functools.cache
def _library() -> ctypes.CDLL:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise Int8KernelUnavailable(
            "the int8 CPU kernel is compiled at first use and needs a C compiler (cc or gcc)"
        )
    flags = _compile_flags()
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([compiler, *flags]).encode()).hexdigest()[:16]
    target = cache_root() / "kernels" / f"int8_linear-{key}.so"
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
            raise Int8KernelUnavailable(
                f"building the int8 CPU kernel failed: {proc.stderr[-500:]}"
            )
        os.replace(tmp, target)
        logger.info("built the int8 CPU kernel: %s", target)
    lib = ctypes.CDLL(str(target))
    fn = lib.tritium_int8_linear
    fn.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int,
    ]  # fmt: skip
    fn.restype = ctypes.c_int
    return lib


def ensure_available() -> None:
    """Build and load the kernel now; Int8KernelUnavailable says why it cannot be."""
    _library()


def is_available() -> bool:
    """Whether the kernel builds and loads on this machine."""
    try:
        _library()
    except (Int8KernelUnavailable, OSError) as exc:
        logger.warning("int8 CPU kernel unavailable: %s", exc)
        return False
    return True


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-row int8: ``weight ~= q * scale[:, None]``; returns (q, scale)."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def int8_linear(
    x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x @ (qweight * scale[:, None]).T + bias`` on CPU, in x's dtype.

    x: [..., K] float; qweight: [N, K] int8 (K a multiple of 8); scale, bias: [N] float32,
    contiguous (Linear.quantize_int8 makes them so).
    """
    fn = _library().tritium_int8_linear
    # Decode steps make ~120 of these calls; skip conversions that are no-ops.
    x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    if x2.dtype != torch.float32 or not x2.is_contiguous():
        x2 = x2.to(torch.float32).contiguous()
    m, k = x2.shape
    n = qweight.shape[0]
    out = torch.empty(m, n, dtype=torch.float32)
    rc = fn(
        x2.data_ptr(), m, k, qweight.data_ptr(), scale.data_ptr(),
        None if bias is None else bias.data_ptr(), n, out.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    if rc != 0:
        raise MemoryError("int8 linear: cannot allocate its scratch buffer")
    if x.dim() != 2:
        out = out.view(*x.shape[:-1], n)
    return out if x.dtype == torch.float32 else out.to(x.dtype)
