"""PythonBackendFactory.auto_complete runs the model's auto_complete_config."""

from __future__ import annotations

import numpy as np
import pytest
from tests.backends.python.conftest import EXAMPLES, LocalServer, infer, outputs_of, read_config

from tritium.backends.python import PythonBackendFactory, factory
from tritium.server.backend import ModelConfig
from tritium.server.errors import TritonError


async def test_auto_complete_fills_the_config() -> None:
    model_dir = EXAMPLES / "auto_complete"
    config = await PythonBackendFactory().auto_complete(
        read_config(model_dir), model_dir, model_dir / "1"
    )
    assert config.name == "auto_complete" and config.backend == "python"
    assert config.max_batch_size == 4
    assert config.HasField("dynamic_batching")
    assert [
        (
            i.name,
            ModelConfig.DESCRIPTOR.fields_by_name["input"]
            .message_type.fields_by_name["data_type"]
            .enum_type.values_by_number[i.data_type]
            .name,
            list(i.dims),
        )
        for i in config.input
    ] == [("INPUT0", "TYPE_FP32", [4])]
    assert [o.name for o in config.output] == ["OUTPUT0"]


async def test_auto_completed_model_serves(server: LocalServer) -> None:
    await server.load(EXAMPLES / "auto_complete")
    (response,) = await infer(
        server, "auto_complete", {"INPUT0": np.array([[1, 2, 3, 4]], np.float32)}
    )
    np.testing.assert_array_equal(outputs_of(response)["OUTPUT0"], [[2, 4, 6, 8]])


async def test_auto_complete_conflict_is_an_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model_dir = tmp_path / "m"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.py").write_text((EXAMPLES / "auto_complete/1/model.py").read_text())
    config = ModelConfig(name="m", backend="python", max_batch_size=16)
    with pytest.raises(TritonError) as caught:
        await PythonBackendFactory().auto_complete(config, model_dir, model_dir / "1")
    assert "configuration specified max_batch_size 16" in caught.value.message


async def test_models_without_the_hook_are_left_alone() -> None:
    model_dir = EXAMPLES / "add_sub"
    config = read_config(model_dir)
    assert await factory().auto_complete(config, model_dir, model_dir / "1") == config
