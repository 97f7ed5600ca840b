"""Drive PythonBackend directly, with real stub processes.

`LocalServer` is a small, real ServerHandle: it loads models from a repository folder with
PythonBackendFactory and forwards infer()/load/unload/ready to them, one execution at a
time per instance, so BLS from a stub reaches another loaded PythonBackend.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from prometheus_client import CollectorRegistry

from tritium.backends.python import PythonBackendFactory
from tritium.backends.python.backend import PythonBackend
from tritium.server.backend import BackendContext, ModelConfig
from tritium.server.errors import not_found
from tritium.server.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "python_models"
TEST_MODELS = Path(__file__).resolve().parent / "models"

WIRE = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.object_): "BYTES",
}


def read_config(model_dir: Path) -> ModelConfig:
    """config.pbtxt (or a bare config for auto-complete), with instance groups filled as the
    core fills them."""
    config = ModelConfig()
    path = model_dir / "config.pbtxt"
    if path.exists():
        text_format.Parse(path.read_text(), config)
    if not config.name:
        config.name = model_dir.name
    if not config.backend:
        config.backend = "python"
    return config


def complete_defaults(config: ModelConfig) -> None:
    if not config.instance_group:
        config.instance_group.add()
    for i, group in enumerate(config.instance_group):
        group.name = group.name or f"{config.name}_{i}"
        group.count = group.count or 1


def tensor(name: str, data: Any) -> Tensor:
    array = np.asarray(data)
    return Tensor(name, WIRE[array.dtype], array)


class LocalServer:
    """A ServerHandle over PythonBackends loaded from model folders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.backends: dict[str, PythonBackend] = {}
        self.failures: dict[str, list[str]] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._next_instance: dict[str, int] = {}

    async def load(self, model_dir: Path, **overrides: Any) -> PythonBackend:
        factory = PythonBackendFactory()
        config = read_config(model_dir)
        for key, value in overrides.items():
            setattr(config, key, value)
        version_dir = model_dir / "1"
        config = await factory.auto_complete(config, model_dir, version_dir)
        complete_defaults(config)
        name = config.name
        self.failures[name] = []
        context = BackendContext(
            model_name=name,
            version=1,
            config=config,
            model_dir=model_dir,
            version_dir=version_dir,
            server=self,
            report_failure=self.failures[name].append,
            metrics_registry=self.registry,
        )
        backend = factory.create(context)
        await backend.load()
        self.backends[name] = backend
        return backend

    async def execute(
        self, name: str, requests: list[InferenceRequest], instance: int | None = None
    ) -> Any:
        backend = self.backends[name]
        if instance is None:
            instance = self._next_instance.get(name, 0)
            self._next_instance[name] = (instance + 1) % backend.instance_count
        lock = self._locks.setdefault((name, instance), asyncio.Lock())
        async with lock:
            return await backend.execute(instance, requests)

    # -- ServerHandle ---------------------------------------------------------------------
    async def infer(self, request: InferenceRequest) -> AsyncIterator[InferenceResponse]:
        if request.model_name not in self.backends:
            raise not_found(f"Request for unknown model: '{request.model_name}' is not found")
        task = asyncio.create_task(self.execute(request.model_name, [request]))
        try:
            while True:
                response = await request.responses.get()
                yield response
                if response.final:
                    break
        finally:
            if not task.done():
                request.cancel()
            await task

    async def load_model(
        self, name: str, config_json: str | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        for folder in (EXAMPLES, TEST_MODELS):
            if (folder / name).is_dir():
                await self.load(folder / name)
                return
        raise not_found(f"failed to load '{name}', failed to poll from model repository")

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None:
        backend = self.backends.pop(name)
        await backend.unload()

    def is_model_ready(self, name: str, version: int = -1) -> bool:
        return name in self.backends

    async def close(self) -> None:
        for name in list(self.backends):
            await self.unload_model(name)


async def collect(request: InferenceRequest, timeout: float = 30.0) -> list[InferenceResponse]:
    """Every response of a request, up to and including the final one."""
    responses = []
    while True:
        response = await asyncio.wait_for(request.responses.get(), timeout)
        responses.append(response)
        if response.final:
            return responses


async def infer(
    server: LocalServer,
    model: str,
    inputs: dict[str, Any],
    outputs: list[str] | None = None,
    **fields: Any,
) -> list[InferenceResponse]:
    request = InferenceRequest(
        model_name=model,
        inputs={k: tensor(k, v) for k, v in inputs.items()},
        requested_outputs=[RequestedOutput(o) for o in outputs] if outputs else None,
        **fields,
    )
    execution = asyncio.create_task(server.execute(model, [request]))
    responses = await collect(request)
    await execution
    return responses


def outputs_of(response: InferenceResponse) -> dict[str, np.ndarray]:
    assert response.error is None, response.error
    return {t.name: t.data for t in response.outputs}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def shm_files() -> list[str]:
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
    if folder is None:
        return []
    return [f for f in os.listdir(folder) if f.startswith(f"tritium_pb_{os.getpid()}_")]


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    local = LocalServer()
    try:
        yield local
    finally:
        await local.close()
