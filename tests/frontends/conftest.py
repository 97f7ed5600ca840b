"""A real `tritium serve` process on free ports, as users run it (uvicorn's run_server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving import ROOT, RunningServer
from serving import start_server as start_tritium

PYTHON_MODELS = ROOT / "examples" / "python_models"
MAX_INPUT_SIZE = 1 << 20  # small, so the oversized-body test stays cheap


def start_server(tmp: Path, *extra: str) -> RunningServer:
    """The example Python models, with a small --http-max-input-size."""
    return start_tritium(
        PYTHON_MODELS,
        tmp,
        "--http-max-input-size", str(MAX_INPUT_SIZE),
        "--exit-timeout-secs", "5",
        *extra,
    )  # fmt: skip


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
