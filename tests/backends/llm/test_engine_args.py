"""model.json -> EngineArgs: supported names map, harmless ones are accepted, anything else
fails the load naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tritium.backends.llm.engine_args import engine_args_from_dict, read_engine_args
from tritium.server.errors import ErrorCode, TritonError

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_example_model_json_files_load() -> None:
    for folder in ("model_repository/smollm2/1", "model_repository/smollm2-chat/1",
                   "eks/model_repository/llama2/1", "eks/model_repository/mistral7b/1"):  # fmt: skip
        args = read_engine_args(EXAMPLES / folder)
        assert args.model


def test_supported_and_harmless_arguments() -> None:
    args = engine_args_from_dict({
        "model": "smollm2", "max_model_len": 512, "max_num_seqs": 4, "enable_prefix_caching": False,
        "gpu_memory_utilization": 0.5, "dtype": "float32", "enforce_eager": True,
        "disable_log_requests": True, "disable_log_stats": True, "trust_remote_code": True,
        "tensor_parallel_size": 1, "worker_use_ray": False,
    })  # fmt: skip
    assert (args.max_model_len, args.max_num_seqs, args.enable_prefix_caching) == (512, 4, False)
    assert args.gpu_memory_utilization == 0.5


@pytest.mark.parametrize(
    ("doc", "needles"),
    [
        ({"model": "m", "tensor_parallel_size": 2}, ["tensor_parallel_size=2"]),
        (
            {"model": "m", "enable_lora": True, "speculative_model": "x"},
            ["enable_lora=True", "speculative_model"],
        ),
        ({"model": "m", "quantization": "awq"}, ["quantization='awq'"]),
        ({"max_model_len": 5}, ["must name a 'model'"]),
        ({"model": "m", "dtype": "int3"}, ["dtype must be one of"]),
    ],
)
def test_unsupported_arguments_fail_by_name(doc: dict, needles: list[str]) -> None:
    with pytest.raises(TritonError) as info:
        engine_args_from_dict(doc)
    assert info.value.code == ErrorCode.INVALID_ARG
    for needle in needles:
        assert needle in info.value.message


def test_missing_or_bad_model_json(tmp_path: Path) -> None:
    with pytest.raises(
        TritonError, match=r"'model\.json' containing engine arguments must be provided"
    ):
        read_engine_args(tmp_path)
    (tmp_path / "model.json").write_text("[1, 2]")
    with pytest.raises(TritonError, match="JSON object"):
        read_engine_args(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"model": "weights"}))
    (tmp_path / "weights").mkdir()
    assert read_engine_args(tmp_path).model == str(
        tmp_path / "weights"
    )  # relative to the version folder
