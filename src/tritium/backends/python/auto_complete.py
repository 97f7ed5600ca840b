"""auto_complete_config: run a model's hook in a throwaway stub process.

Triton runs `TritonPythonModel.auto_complete_config` in the stub before the model loads;
user code never runs in the server process, so neither does this.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from tritium.backends.python.backend import model_file_path, stub_env
from tritium.repository.model_config import config_from_dict, config_to_json
from tritium.server.backend import ModelConfig
from tritium.server.errors import internal

AUTO_COMPLETE_TIMEOUT_S = 120.0


async def auto_complete(config: ModelConfig, version_dir: Path) -> ModelConfig:
    """The configuration as the model's auto_complete_config leaves it (unchanged when the
    model has no such hook)."""
    model_file = model_file_path(config, version_dir)
    if not model_file.is_file():
        return config  # load() reports the missing file
    # Skip a process start for the (common) models without the hook.
    if "auto_complete_config" not in model_file.read_text(errors="ignore"):
        return config
    with tempfile.TemporaryDirectory(prefix="tritium_autocomplete_") as tmp:
        input_path = Path(tmp) / "in.json"
        output_path = Path(tmp) / "out.json"
        input_path.write_text(config_to_json(config))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tritium.backends.python.stub",
            "--auto-complete",
            "--model-file",
            str(model_file),
            "--version-dir",
            str(version_dir),
            "--input",
            str(input_path),
            "--output",
            str(output_path),
            env={**os.environ, **stub_env()},
            start_new_session=True,
        )
        try:
            await asyncio.wait_for(process.wait(), AUTO_COMPLETE_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise internal(f"auto_complete_config of model '{config.name}' timed out") from None
        if not output_path.exists():
            raise internal(
                f"auto_complete_config of model '{config.name}' crashed "
                f"(exit code {process.returncode})"
            )
        result = json.loads(output_path.read_text())
    if "error" in result:
        raise internal(result["error"])
    try:
        return config_from_dict(result["config"])
    except Exception as exc:
        raise internal(
            f"auto_complete_config of model '{config.name}' produced an invalid "
            f"configuration: {exc}"
        ) from exc
