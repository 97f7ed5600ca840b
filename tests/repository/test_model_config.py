"""config.pbtxt parsing and the defaults Triton fills in (model_config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from tritium.repository.model_config import (
    config_from_json,
    config_to_dict,
    detect_backend,
    fill_defaults,
    parse_config_text,
    read_config,
    validate_config,
)
from tritium.server.errors import ErrorCode, TritonError

PY_CONFIG = """
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
parameters { key: "k" value { string_value: "v" } }
"""


def test_parse_error_names_file_and_line(tmp_path: Path):
    path = tmp_path / "m" / "config.pbtxt"
    path.parent.mkdir()
    path.write_text('name: "m"\nmax_batch_size: 8\ninput [ { name: "a" dimz: [1] } ]\n')
    with pytest.raises(TritonError) as err:
        read_config(path.parent)
    assert err.value.code == ErrorCode.INVALID_ARG
    assert str(path) in err.value.message
    assert "line 3, column 21" in err.value.message and "dimz" in err.value.message


def test_missing_config_is_none(tmp_path: Path):
    assert read_config(tmp_path) is None


def test_defaults_match_triton():
    config = parse_config_text(PY_CONFIG)
    fill_defaults(config, "m", gpu_ids=[], backend_supports_gpu=True)
    validate_config(config, "m")
    d = config_to_dict(config)
    assert d["name"] == "m"
    assert d["version_policy"] == {"latest": {"num_versions": 1}}
    assert d["default_model_filename"] == "model.py"
    assert d["platform"] == "" and d["backend"] == "python"
    group = d["instance_group"][0]
    assert (group["name"], group["kind"], group["count"], group["gpus"]) == (
        "m",  # the group Triton adds is named after the model; declared ones "m_<i>"
        "KIND_CPU",
        1,
        [],
    )
    assert d["optimization"]["input_pinned_memory"] == {"enable": True}
    assert d["optimization"]["output_pinned_memory"] == {"enable": True}
    db = d["dynamic_batching"]
    assert db["preferred_batch_size"] == [8]
    assert int(db["max_queue_delay_microseconds"]) == 100
    # As Triton 2.51 shows them: no default_queue_policy, no model_transaction_policy.
    assert "default_queue_policy" not in db
    assert "model_transaction_policy" not in d
    assert d["parameters"] == {"k": {"string_value": "v"}}


def test_instance_groups_named_and_placed_on_gpus():
    config = parse_config_text(
        'backend: "python" instance_group [ { count: 2 }, { name: "mine" kind: KIND_CPU } ]'
    )
    fill_defaults(config, "m", gpu_ids=[0, 1], backend_supports_gpu=True)
    groups = [(g.name, g.count, list(g.gpus)) for g in config.instance_group]
    assert groups == [("m_0", 2, [0, 1]), ("mine", 1, [])]
    assert config_to_dict(config)["instance_group"][0]["kind"] == "KIND_GPU"
    cpu_only = parse_config_text('backend: "python"')
    fill_defaults(cpu_only, "m", gpu_ids=[0], backend_supports_gpu=False)
    assert config_to_dict(cpu_only)["instance_group"][0]["kind"] == "KIND_CPU"


def test_detect_backend_from_model_py(tmp_path: Path):
    (tmp_path / "1").mkdir()
    config = parse_config_text("")
    detect_backend(config, [tmp_path / "1"])
    assert config.backend == ""
    (tmp_path / "1" / "model.py").write_text("")
    detect_backend(config, [tmp_path / "1"])
    assert config.backend == "python"


def test_validation_errors():
    config = parse_config_text('name: "other" backend: "python"')
    with pytest.raises(TritonError, match="directory name must equal model name"):
        validate_config(config, "m")
    config = parse_config_text(
        'backend: "python" max_batch_size: 4 dynamic_batching { preferred_batch_size: [ 8 ] }'
    )
    fill_defaults(config, "m", gpu_ids=[], backend_supports_gpu=True)
    with pytest.raises(TritonError, match="preferred size"):
        validate_config(config, "m")


def test_config_from_json():
    config = config_from_json('{"backend": "python", "max_batch_size": 2}')
    assert config.max_batch_size == 2
    with pytest.raises(TritonError):
        config_from_json('{"max_batch_size": "lots"}')


def test_int64_fields_are_numbers_and_defaults_are_shown() -> None:
    """/config (and a Python model's model_config) render int64 fields as numbers, as
    Triton does."""
    cfg = mc.ModelConfig(name="add_sub", backend="python", max_batch_size=8)
    i = cfg.input.add(name="INPUT0", data_type=mc.TYPE_FP32)
    i.dims.extend([4])
    cfg.dynamic_batching.max_queue_delay_microseconds = 100
    cfg.version_policy.specific.versions.extend([1, 3])
    cfg.parameters["k"].string_value = "v"
    doc = config_to_dict(cfg)
    assert doc["max_batch_size"] == 8
    assert doc["input"][0]["dims"] == [4]
    assert doc["input"][0]["data_type"] == "TYPE_FP32"
    assert doc["input"][0]["optional"] is False
    assert doc["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    assert doc["version_policy"]["specific"]["versions"] == [1, 3]
    assert doc["parameters"] == {"k": {"string_value": "v"}}
    assert doc["platform"] == ""
