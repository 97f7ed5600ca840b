"""A real `tritium serve` process on free ports, as users run it (uvicorn's run_server)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON_MODELS = ROOT / "examples" / "python_models"
MAX_INPUT_SIZE = 1 << 20  # small, so the oversized-body test stays cheap


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
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

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(tmp: Path, *extra: str, wait_ready: bool = True) -> RunningServer:
    ports = free_port(), free_port(), free_port()
    log_path = tmp / f"server-{ports[0]}.log"
    cmd = [
        sys.executable, "-m", "tritium.cli", "serve",
        "--model-repository", str(PYTHON_MODELS),
        "--http-address", "127.0.0.1", "--http-port", str(ports[0]),
        "--grpc-address", "127.0.0.1", "--grpc-port", str(ports[1]),
        "--metrics-address", "127.0.0.1", "--metrics-port", str(ports[2]),
        "--http-max-input-size", str(MAX_INPUT_SIZE),
        "--exit-timeout-secs", "5",
        *extra,
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=os.environ.copy()
        )
    server = RunningServer(proc, *ports, log_path)
    if wait_ready:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"tritium serve exited with {proc.returncode}:\n{server.log()}")
            try:
                if httpx.get(f"{server.http_url}/v2/health/ready", timeout=1).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        server.stop()
        pytest.fail(f"tritium serve not ready in 120 s:\n{server.log()}")
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """All example Python models loaded (control mode none)."""
    s = start_server(tmp_path_factory.mktemp("serve"))
    yield s
    s.stop()


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=60) as client:
        yield client
