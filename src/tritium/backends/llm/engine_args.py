"""`<version>/model.json` -> EngineArgs, with vLLM's argument names.

Arguments our engine implements map onto EngineArgs; arguments that change nothing here
(logging switches, a single-GPU tensor_parallel_size, Ray flags) are accepted so existing
vLLM-backend model folders load unchanged; anything else fails the load naming it, so a
setting is never silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from tritium.engine.config import EngineArgs
from tritium.server.errors import invalid_arg

MODEL_JSON = "model.json"

_ENGINE_FIELDS = frozenset(f.name for f in dataclasses.fields(EngineArgs))

# Accepted and ignored whatever their value: they only steer vLLM's logging or launcher.
HARMLESS = frozenset(
    {
        "disable_log_requests",
        "enable_log_requests",
        "disable_log_stats",
        "trust_remote_code",
        "worker_use_ray",
        "engine_use_ray",
        "distributed_executor_backend",
        "disable_custom_all_reduce",
        "swap_space",
        "max_seq_len_to_capture",
        "tokenizer_mode",
        "served_model_name",
        "download_dir",
        "disable_sliding_window",
        "max_logprobs",
        "enable_chunked_prefill",
    }
)

# Accepted only with the value that means "what we do anyway".
ONLY_VALUE: dict[str, Any] = {
    "tensor_parallel_size": 1,
    "pipeline_parallel_size": 1,
    "data_parallel_size": 1,
    "enable_lora": False,
    "kv_cache_dtype": "auto",
    "speculative_config": None,
}


def engine_args_from_dict(doc: dict[str, Any], model_dir: Path | None = None) -> EngineArgs:
    """EngineArgs from model.json's dict. Raises INVALID_ARG naming unsupported arguments.
    A relative `model` path that exists under the model folder is resolved against it."""
    unsupported = []
    kwargs: dict[str, Any] = {}
    for name, value in doc.items():
        if name in HARMLESS:
            continue
        if name in ONLY_VALUE:
            if _same(value, ONLY_VALUE[name]):
                continue
            unsupported.append(f"{name}={value!r} (only {ONLY_VALUE[name]!r} is supported)")
            continue
        if name not in _ENGINE_FIELDS:
            unsupported.append(name)
            continue
        kwargs[name] = value
    if unsupported:
        raise invalid_arg(
            f"unsupported engine argument(s) in {MODEL_JSON}: {', '.join(unsupported)}"
        )
    if not kwargs.get("model"):
        raise invalid_arg(
            f"{MODEL_JSON} must name a 'model' (a Hugging Face id, a folder or a .gguf file)"
        )
    model = str(kwargs["model"])
    if model_dir is not None and not Path(model).is_absolute() and (model_dir / model).exists():
        kwargs["model"] = str(model_dir / model)
    try:
        return EngineArgs(**kwargs)
    except (TypeError, ValueError) as exc:
        raise invalid_arg(f"invalid engine arguments in {MODEL_JSON}: {exc}") from exc


def _same(value: Any, expected: Any) -> bool:
    if expected is None:
        return value in (None, "", "none", "None")
    if isinstance(expected, bool):
        return str(value).lower() == str(expected).lower()
    return str(value) == str(expected)


def read_engine_args(version_dir: Path) -> EngineArgs:
    """Read `<version_dir>/model.json`; INVALID_ARG when it is missing or malformed."""
    path = version_dir / MODEL_JSON
    if not path.is_file():
        raise invalid_arg(
            f"'{MODEL_JSON}' containing engine arguments must be provided in '{version_dir}'"
        )
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise invalid_arg(f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise invalid_arg(f"{path} must hold a JSON object of engine arguments")
    return engine_args_from_dict(doc, version_dir)
