"""A real `tritium serve` on free ports, serving the fake LLMs of model_repository/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPOSITORY = Path(__file__).parent / "model_repository"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    """Addresses of a running server."""

    http: str  # host:port
    grpc: str
    process: subprocess.Popen[bytes]


def tritium(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the `tritium` CLI as users do, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "tritium.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    http, grpc, metrics = free_port(), free_port(), free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "tritium.cli", "serve",
                "--model-repository", str(REPOSITORY),
                "--http-address", "127.0.0.1", "--http-port", str(http),
                "--grpc-address", "127.0.0.1", "--grpc-port", str(grpc),
                "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"tritium serve exited {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{http}/v2/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"tritium serve not ready in 90 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield Server(f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
