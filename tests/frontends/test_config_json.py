"""/config renders int64 fields as numbers, as Triton does."""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from tritium.frontends.http.config_json import config_to_json


def test_int64_fields_are_numbers_and_defaults_are_shown() -> None:
    cfg = mc.ModelConfig(name="add_sub", backend="python", max_batch_size=8)
    i = cfg.input.add(name="INPUT0", data_type=mc.TYPE_FP32)
    i.dims.extend([4])
    cfg.dynamic_batching.max_queue_delay_microseconds = 100
    cfg.version_policy.specific.versions.extend([1, 3])
    cfg.parameters["k"].string_value = "v"
    doc = config_to_json(cfg)
    assert doc["max_batch_size"] == 8
    assert doc["input"][0]["dims"] == [4]
    assert doc["input"][0]["data_type"] == "TYPE_FP32"
    assert doc["input"][0]["optional"] is False
    assert doc["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    assert doc["version_policy"]["specific"]["versions"] == [1, 3]
    assert doc["parameters"] == {"k": {"string_value": "v"}}
    assert doc["platform"] == ""
