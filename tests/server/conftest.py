"""Fixtures for the core's tests: a real InferenceServer over a temporary repository,
serving the in-process test backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from tritium.server.backends import register_backend, unregister_backend
from tritium.server.core import InferenceServer
from tritium.server.options import ServerOptions
from tritium.server.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

from .testing_backend import NAME, TestBackendFactory

ADD_SUB = f"""
backend: "{NAME}"
max_batch_size: 8
input [
  {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }},
  {{ name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] }}
]
output [
  {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }},
  {{ name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] }}
]
"""

IDENTITY = f"""
backend: "{NAME}"
max_batch_size: 16
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 2 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2 ] }} ]
parameters {{ key: "mode" value {{ string_value: "identity" }} }}
"""

STREAM = f"""
backend: "{NAME}"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
input [ {{ name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] }} ]
parameters {{ key: "mode" value {{ string_value: "stream" }} }}
"""


def write_model(
    repo: Path,
    name: str,
    config: str | None,
    versions: tuple[int, ...] = (1,),
    extra: str = "",
    tags: dict[int, str] | None = None,
) -> Path:
    """A model folder: config.pbtxt (unless None) plus version folders."""
    model_dir = repo / name
    model_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (model_dir / "config.pbtxt").write_text(config + extra)
    for v in versions:
        (model_dir / str(v)).mkdir(exist_ok=True)
        (model_dir / str(v) / "tag").write_text((tags or {}).get(v, f"v{v}"))
    return model_dir


@pytest.fixture
def factory() -> Callable[[], TestBackendFactory]:
    f = TestBackendFactory()
    register_backend(NAME, f)
    yield f
    unregister_backend(NAME)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
async def make_server(repo: Path, factory: TestBackendFactory) -> AsyncIterator[Callable]:
    """make_server(**options) -> a started InferenceServer over `repo`."""
    servers: list[InferenceServer] = []

    async def make(**options) -> InferenceServer:
        options.setdefault("model_repository", [str(repo)])
        server = InferenceServer(ServerOptions(**options))
        servers.append(server)
        await server.start()
        return server

    yield make
    for server in servers:
        await server.stop(timeout_s=5)


def add_sub_request(
    a: list[float],
    b: list[float],
    *,
    model: str = "add_sub",
    rid: str = "",
    outputs: list[str] | None = None,
    **kw,
) -> InferenceRequest:
    x = np.array([a], dtype=np.float32)
    y = np.array([b], dtype=np.float32)
    return InferenceRequest(
        model_name=model,
        id=rid,
        inputs={"INPUT0": Tensor("INPUT0", "FP32", x), "INPUT1": Tensor("INPUT1", "FP32", y)},
        requested_outputs=None if outputs is None else [RequestedOutput(n) for n in outputs],
        **kw,
    )


def identity_request(
    rows: int = 1, *, model: str = "identity", rid: str = "", **kw
) -> InferenceRequest:
    x = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    return InferenceRequest(
        model_name=model, id=rid, inputs={"INPUT0": Tensor("INPUT0", "FP32", x)}, **kw
    )


async def collect(server: InferenceServer, request: InferenceRequest) -> list[InferenceResponse]:
    return [r async for r in server.infer(request)]
