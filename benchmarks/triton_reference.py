"""NVIDIA's real Triton Inference Server, as a reference to compare Tritium with.

The `nvidia-pytriton` wheel bundles a complete `tritonserver` binary (HTTP, gRPC, metrics)
and the Python backend, so the real server runs without a container. This module finds
(or installs) it in its own virtual environment, never the project's, and starts it on
given ports:

    from triton_reference import running
    with running("examples/python_models", ports=(18000, 18001, 18002)) as triton:
        ...  # triton.http_url, triton.grpc_url, triton.metrics_url

or from the shell (runs until interrupted):

    python benchmarks/triton_reference.py --model-repository examples/python_models \\
        --http-port 18000 --grpc-port 18001 --metrics-port 18002 [-- --log-verbose 1]
    python benchmarks/triton_reference.py --install-only   # prints the binary's path

What makes the bundled server work outside pytriton:
- its shared libraries live in the wheel's `nvidia_pytriton.libs` folder (LD_LIBRARY_PATH);
- the Python backend's stub for this Python (`python_backend_stubs/3.11/...`) must be
  copied next to `libtriton_python.so` in `backends/python/`;
- the stub links against libpython3.11.so (the interpreter's `lib` folder) and embeds the
  `python3` first on PATH: the venv's, whose site-packages hold numpy<2 (pytriton's pin;
  the stub reads wrong tensor data through a numpy 2 found elsewhere).

The venv defaults to /tmp/pytriton-venv (override with TRITIUM_TRITON_VENV).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_VENV = Path(os.environ.get("TRITIUM_TRITON_VENV", "/tmp/pytriton-venv"))
PACKAGES = ["nvidia-pytriton", "numpy"]


@dataclass(frozen=True)
class TritonInstall:
    """Where the bundled tritonserver and what it needs live."""

    venv: Path
    site_packages: Path
    root: Path  # .../site-packages/pytriton/tritonserver

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.root / "backends"

    def python_version(self) -> str:
        return f"{sys.version_info.major}.{sys.version_info.minor}"

    def env(self) -> dict[str, str]:
        """The environment tritonserver and its Python stubs need."""
        env = dict(os.environ)
        libdirs = [
            self.site_packages / "nvidia_pytriton.libs",
            self.root / "lib",
            Path(sysconfig.get_config_var("LIBDIR") or ""),  # libpython3.x.so for the stub
        ]
        paths = [str(p) for p in libdirs if str(p) and p.is_dir()]
        if env.get("LD_LIBRARY_PATH"):
            paths.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(paths)
        # The stub embeds the `python3` found first on PATH (and its site-packages, where
        # numpy must be); PYTHONPATH is ignored by it.
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '')}"
        env.pop("PYTHONPATH", None)
        return env

    def command(
        self,
        repositories: Sequence[str | Path],
        ports: tuple[int, int, int],
        address: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
    ) -> list[str]:
        http, grpc, metrics = ports
        cmd = [str(self.binary)]
        for repo in repositories:
            cmd += ["--model-repository", str(Path(repo).resolve())]
        cmd += [
            f"--backend-directory={self.backends}",
            f"--http-address={address}",
            f"--http-port={http}",
            f"--grpc-address={address}",
            f"--grpc-port={grpc}",
            f"--metrics-address={address}",
            f"--metrics-port={metrics}",
        ]
        return cmd + list(extra_args)


def _site_packages(venv: Path) -> Path | None:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    return found[0] if found else None


def _prepare_stub(install: TritonInstall) -> None:
    """Put the stub built for this Python where the Python backend looks for it."""
    target = install.backends / "python" / "triton_python_backend_stub"
    if target.exists():
        return
    stub = install.root / "python_backend_stubs" / install.python_version()
    stub = stub / "triton_python_backend_stub"
    if not stub.exists():
        raise RuntimeError(f"pytriton ships no Python backend stub for {install.python_version()}")
    tmp = target.with_suffix(".tmp")
    shutil.copy2(stub, tmp)
    tmp.replace(target)  # atomic: another process may be preparing the same install


def find(venv: Path = DEFAULT_VENV) -> TritonInstall | None:
    """The install in `venv`, ready to run, or None when there is none."""
    site = _site_packages(venv)
    if site is None:
        return None
    install = TritonInstall(venv, site, site / "pytriton" / "tritonserver")
    if not install.binary.exists() or not (site / "numpy").is_dir():
        return None
    _prepare_stub(install)
    return install


def install(venv: Path = DEFAULT_VENV, quiet: bool = True) -> TritonInstall:
    """Create the venv with this interpreter (the stub must match its Python) and install."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", *(["-q"] if quiet else [])]
    subprocess.run([*pip, *PACKAGES], check=True)
    found = find(venv)
    if found is None:
        raise RuntimeError(f"installed {PACKAGES} into {venv} but found no tritonserver there")
    return found


def ensure(venv: Path = DEFAULT_VENV) -> TritonInstall:
    return find(venv) or install(venv)


@dataclass
class RunningTriton:
    process: subprocess.Popen[bytes]
    ports: tuple[int, int, int]
    address: str
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"http://{self.address}:{self.ports[0]}"

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.ports[1]}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}:{self.ports[2]}/metrics"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # Triton unloads models and exits
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _live(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v2/health/live", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start(
    repositories: str | Path | Sequence[str | Path],
    ports: tuple[int, int, int] = (18000, 18001, 18002),
    *,
    address: str = "127.0.0.1",
    extra_args: Sequence[str] = (),
    log_path: Path | None = None,
    timeout_s: float = 180.0,
    venv: Path = DEFAULT_VENV,
) -> RunningTriton:
    """Start tritonserver and return once its HTTP endpoint is live (Triton opens its
    endpoints only after the start-up model loads are done)."""
    repos = [repositories] if isinstance(repositories, (str, Path)) else list(repositories)
    inst = ensure(venv)
    if log_path is None:
        log_path = Path(f"/tmp/tritonserver-{ports[0]}.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            inst.command(repos, ports, address, extra_args),
            env=inst.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    triton = RunningTriton(proc, ports, address, log_path)
    deadline = time.monotonic() + timeout_s
    while not _live(triton.http_url):
        if proc.poll() is not None:
            raise RuntimeError(f"tritonserver exited with {proc.returncode}:\n{triton.log()}")
        if time.monotonic() > deadline:
            triton.stop()
            raise TimeoutError(f"tritonserver not live after {timeout_s}s:\n{triton.log()}")
        time.sleep(0.2)
    return triton


@contextlib.contextmanager
def running(*args: object, **kwargs: object) -> Iterator[RunningTriton]:
    """`start(...)` as a context manager that stops the server on exit."""
    triton = start(*args, **kwargs)  # type: ignore[arg-type]
    try:
        yield triton
    finally:
        triton.stop()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model-repository", action="append", default=[])
    p.add_argument("--http-port", type=int, default=18000)
    p.add_argument("--grpc-port", type=int, default=18001)
    p.add_argument("--metrics-port", type=int, default=18002)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    p.add_argument("--install-only", action="store_true", help="install, print the binary path")
    args = p.parse_args(argv)
    inst = ensure(args.venv)
    if args.install_only or not args.model_repository:
        print(inst.binary)
        return 0
    ports = (args.http_port, args.grpc_port, args.metrics_port)
    triton = start(
        args.model_repository, ports, address=args.address, extra_args=extra, venv=args.venv
    )
    print(f"tritonserver ready: {triton.http_url} grpc {triton.grpc_url} log {triton.log_path}")
    try:
        triton.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        triton.stop()
    return triton.process.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
