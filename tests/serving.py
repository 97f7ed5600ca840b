"""`tritium` as users run it: the command in a subprocess, and a real `tritium serve` on
free ports (uvicorn's run_server).

Shared by the tests that need a whole server (tests/frontends, tests/client, tests/e2e,
tests/repository, tests/deploy); importable as `serving` because pytest puts tests/ on
sys.path for the test packages below it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def tritium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the `tritium` command (`tritium client ...`, `tritium bench ...`) to completion."""
    return subprocess.run(
        [sys.executable, "-m", "tritium.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM, then SIGKILL when it has not exited in `timeout` seconds; its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_for(predicate: Callable[[], object], what: str, timeout_s: float = 120) -> None:
    """Poll until `predicate()` is true; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class RunningServer:
    """A `tritium serve` process, its ports and its log."""

    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        return httpx.get(self.metrics_url, timeout=10).text

    def wait_ready(self, timeout: float = 120) -> None:
        """Until /v2/health/ready answers 200; the test fails (with the log) if the server
        exits first or is not ready in `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"tritium serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.http_url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"tritium serve not ready in {timeout:g} s:\n{self.log()}")

    def stop(self, timeout: float = 30) -> int:
        return stop_process(self.proc, timeout)


def start_server(
    repository: Path | str,
    log_dir: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    ready_timeout: float = 120,
) -> RunningServer:
    """`tritium serve` of `repository` on loopback and free ports, its output in a log file
    under `log_dir`, waited for until ready unless told not to. `extra` flags come last, so
    they may override."""
    ports = free_port(), free_port(), free_port()
    log_path = log_dir / f"serve-{ports[0]}.log"
    cmd = [
        sys.executable, "-m", "tritium.cli", "serve",
        "--model-repository", str(repository),
        "--http-address", "127.0.0.1", "--http-port", str(ports[0]),
        "--grpc-address", "127.0.0.1", "--grpc-port", str(ports[1]),
        "--metrics-address", "127.0.0.1", "--metrics-port", str(ports[2]),
        *extra,
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=os.environ.copy() if env is None else env,
        )
    server = RunningServer(proc, *ports, log_path)
    if wait_ready:
        server.wait_ready(ready_timeout)
    return server
