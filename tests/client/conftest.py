"""A real `tritium serve` on free ports, serving the fake LLMs of model_repository/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving import RunningServer, start_server

REPOSITORY = Path(__file__).parent / "model_repository"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    s = start_server(
        REPOSITORY,
        tmp_path_factory.mktemp("server"),
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        ready_timeout=90,
    )
    try:
        yield s
    finally:
        s.stop()
