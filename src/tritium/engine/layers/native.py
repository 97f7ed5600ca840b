"""Tritium's C kernels for CPU (csrc/*.c): the quantized matmuls (quant_linear.c) and the
small fused ops of a decode step (cpu_ops.c), built once per machine into one library and
called through ctypes.

Building with the system C compiler takes about a second, against a minute for a torch C++
extension, and the library links nothing but OpenMP: torch's own libgomp is already loaded,
so both share one thread pool. The build lands in Tritium's cache folder, keyed by the
sources, the compiler flags and the CPU's vector extensions, and is renamed into place so
concurrent processes never load a half-written file.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from tritium.engine.loader.cache import OTHER_VERSION_GRACE_S, cache_root

logger = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")
SOURCES = (CSRC / "quant_linear.c", CSRC / "amx_linear.c", CSRC / "cpu_ops.c")
HEADERS = (CSRC / "tritium_cpu.h",)

_p, _i64, _int, _f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
#: Every exported function: (argument types, return type).
SIGNATURES: dict[str, tuple[list, object]] = {
    # x, M, K, weight codes, scales, bias, N, out, threads
    "tritium_int8_linear": ([_p, _i64, _i64, _p, _p, _p, _i64, _p, _int], _int),
    "tritium_q4_linear": ([_p, _i64, _i64, _p, _p, _p, _i64, _p, _int], _int),
    "tritium_q8_linear": ([_p, _i64, _i64, _p, _p, _p, _i64, _p, _int], _int),
    # x, M, K, 16-bit weights, bias, N, out, threads (bf16: then bf16_inputs)
    "tritium_bf16_linear": ([_p, _i64, _i64, _p, _p, _i64, _p, _int, _int], _int),
    "tritium_fp16_linear": ([_p, _i64, _i64, _p, _p, _i64, _p, _int], _int),
    # whether the several-row matmuls run on AMX; turn them on (1) or off (0)
    "tritium_amx_enabled": ([], _int),
    "tritium_set_amx": ([_int], _int),
    # x, residual, weight, T, N, eps, out
    "tritium_add_rms_norm": ([_p, _p, _p, _i64, _i64, _f32, _p], None),
    # qkv, T, row stride, first head, heads, D, weight, eps
    "tritium_head_rms_norm": ([_p, _i64, _i64, _i64, _i64, _i64, _p, _f32], None),
    # qkv, T, row stride, heads, D, cos, sin
    "tritium_rope": ([_p, _i64, _i64, _i64, _i64, _p, _p], None),
    # gate_up, T, I, out
    "tritium_silu_mul": ([_p, _i64, _i64, _p], None),
    # k, v, T, row stride, width, k pool, v pool, slots, k dense, v dense, rows, num rows,
    # kv_format (0: the caches hold fp32, 1: fp16, 2: bf16)
    "tritium_store_kv": ([_p, _p, _i64, _i64, _i64, _p, _p, _p, _p, _p, _p, _i64, _int], None),
    # q, q row stride, B, H, KVH, D, k, v, k/v strides (batch, head, token), lo, n, mask,
    # scale, kv_format, out
    "tritium_decode_attention": (
        [
            _p,
            _i64,
            _i64,
            _i64,
            _i64,
            _i64,
            _p,
            _p,
            _i64,
            _i64,
            _i64,
            _i64,
            _i64,
            _p,
            _f32,
            _int,
            _p,
        ],
        None,
    ),
    # layer, x, residual, B, cos, sin, k pool, v pool, slots, k dense, v dense, rows,
    # dense strides (batch, head, token), lo, n, mask, kv_format, work, threads
    "tritium_decode_layer": (
        [
            _p,
            _p,
            _p,
            _i64,
            _p,
            _p,
            _p,
            _p,
            _p,
            _p,
            _p,
            _p,
            _i64,
            _i64,
            _i64,
            _i64,
            _i64,
            _p,
            _int,
            _p,
            _int,
        ],
        _int,
    ),
}


class KernelUnavailable(RuntimeError):
    """The C kernels cannot be built or loaded here (no C compiler)."""


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


#: CPU flags (/proc/cpuinfo) -> compiler flags of the AMX kernels (amx_linear.c).
_AMX_FLAGS = {
    "avx512f": "-mavx512f",
    "avx512bw": "-mavx512bw",
    "avx512vl": "-mavx512vl",
    "avx512_bf16": "-mavx512bf16",
    "amx_tile": "-mamx-tile",
    "amx_int8": "-mamx-int8",
    "amx_bf16": "-mamx-bf16",
}


def _compile_flags() -> list[list[str]]:
    """The flag sets to build with, best first: with AMX where the CPU has it (a compiler
    too old for it fails, and the next set leaves it out), then AVX2, then plain C."""
    # No FMA contraction of plain-C expressions: they then round exactly as torch's ops do.
    flags = ["-O3", "-shared", "-fPIC", "-std=c11", "-ffp-contract=off"]
    cpu = _cpu_flags()
    if platform.machine() not in ("x86_64", "AMD64") or not {"avx2", "fma", "f16c"} <= cpu:
        return [flags]
    flags += ["-mavx2", "-mfma", "-mf16c"]
    if set(_AMX_FLAGS) <= cpu:
        return [flags + list(_AMX_FLAGS.values()), flags]
    return [flags]


def library() -> ctypes.CDLL:
    """The loaded library; KernelUnavailable (or OSError) says why it cannot be had."""
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
            "Tritium's CPU kernels are compiled at first use and need a C compiler (cc or gcc)"
        )
    candidates = _compile_flags()
    digest = hashlib.sha256(" ".join([compiler, *candidates[0]]).encode())
    for src in (*SOURCES, *HEADERS):
        digest.update(src.read_bytes())
    target = cache_root() / "kernels" / f"tritium_cpu-{digest.hexdigest()[:16]}.so"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
        # OpenMP first; a compiler without it still gives working single-threaded kernels.
        attempts = [(flags, extra) for flags in candidates for extra in (["-fopenmp"], [])]
        for flags, extra in attempts:
            cmd = [compiler, *flags, *extra, *map(str, SOURCES), "-lm", "-o", str(tmp)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                break
        else:
            tmp.unlink(missing_ok=True)
            raise KernelUnavailable(f"building Tritium's CPU kernels failed: {proc.stderr[-500:]}")
        os.replace(tmp, target)
        logger.info("built Tritium's CPU kernels: %s", target)
        remove_unused_builds(target)
    else:
        with contextlib.suppress(OSError):  # a read-only cache still loads
            os.utime(target)  # last used: what remove_unused_builds goes by
    lib = ctypes.CDLL(str(target))
    for name, (argtypes, restype) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = restype
    return lib


def remove_unused_builds(keep: Path) -> list[Path]:
    """Delete the other builds beside ``keep`` that no process loaded for
    OTHER_VERSION_GRACE_S (each load marks its file): every change of the sources, the
    flags or the CPU leaves one behind. A process that has one loaded keeps it mapped."""
    removed = []
    now = time.time()
    for old in keep.parent.glob("tritium_cpu-*.so"):
        with contextlib.suppress(OSError):
            if old != keep and now - old.stat().st_mtime > OTHER_VERSION_GRACE_S:
                old.unlink()
                removed.append(old)
    return removed


def ensure_available() -> None:
    """Build and load the kernels now; KernelUnavailable says why they cannot be."""
    library()


def is_available() -> bool:
    """Whether the kernels build and load on this machine."""
    try:
        library()
    except (KernelUnavailable, OSError) as exc:
        logger.warning("Tritium's CPU kernels are unavailable: %s", exc)
        return False
    return True
