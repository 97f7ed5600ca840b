"""The core with the real Python backend (stub processes): auto-complete of a folder with
only 1/model.py, a dynamic-batched model, a decoupled model, reload in explicit mode."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from tritium.server.core import InferenceServer
from tritium.server.options import ServerOptions
from tritium.server.types import InferenceRequest, Tensor

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python_models"


@pytest.fixture
def python_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "models"
    for name in ("auto_complete", "repeat_decoupled"):
        shutil.copytree(EXAMPLES / name, repo / name)
    return repo


async def test_python_models_through_the_core(python_repo: Path):
    server = InferenceServer(
        ServerOptions(
            model_repository=[str(python_repo)], model_control_mode="explicit", load_model=["*"]
        )
    )
    await server.start()
    try:
        assert server.is_ready()
        config = server.model_config("auto_complete")
        # config.pbtxt-less folder: python backend, completed by the model's auto_complete_config
        assert config.backend == "python" and config.max_batch_size == 4
        assert config.HasField("dynamic_batching")
        assert list(config.dynamic_batching.preferred_batch_size) == [4]
        assert [i.name for i in config.input] == ["INPUT0"]
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        req = InferenceRequest("auto_complete", inputs={"INPUT0": Tensor("INPUT0", "FP32", x)})
        [resp] = [r async for r in server.infer(req)]
        assert resp.error is None
        np.testing.assert_array_equal(resp.outputs[0].data, x * 2)

        req = InferenceRequest(
            "repeat_decoupled",
            inputs={"IN": Tensor("IN", "INT32", np.array([5, 6, 7], dtype=np.int32))},
        )
        responses = [r async for r in server.infer(req)]
        data = [int(r.outputs[0].data[0]) for r in responses if r.outputs]
        assert data == [5, 6, 7] and responses[-1].final

        await server.unload_model("auto_complete")
        assert server.repository_index()[0]["reason"] == "unloaded"
        await server.load_model("auto_complete")
        assert server.model_ready("auto_complete")
    finally:
        await server.stop(timeout_s=5)


async def test_crashed_model_is_unavailable_and_answers_with_the_crash(tmp_path: Path):
    repo = tmp_path / "models"
    shutil.copytree(EXAMPLES / "crasher", repo / "crasher")
    server = InferenceServer(ServerOptions(model_repository=[str(repo)]))
    await server.start()

    async def infer(value: int) -> list:
        data = np.array([value], dtype=np.int32)
        req = InferenceRequest("crasher", inputs={"INPUT0": Tensor("INPUT0", "INT32", data)})
        return [r async for r in server.infer(req)]

    try:
        [dies] = await infer(-1)
        assert dies.error is not None and dies.error.code.name == "INTERNAL"
        assert dies.error.message == "Stub process 'crasher_0_0' is not healthy."
        for _ in range(200):  # the failure is reported once the stub's exit is seen
            if not server.model_ready("crasher"):
                break
            await asyncio.sleep(0.02)
        # UNAVAILABLE with the reason (issue 2), not ready ...
        [entry] = server.repository_index()
        assert entry["state"] == "UNAVAILABLE" and "exit code 3" in entry["reason"]
        assert not server.model_ready("crasher") and not server.is_ready()
        # ... and a later request gets Triton's answer from the dead stub, not "unknown model"
        [later] = await infer(5)
        assert later.error is not None
        assert later.error.message == "Stub process 'crasher_0_0' is not healthy."
    finally:
        await server.stop(timeout_s=5)
