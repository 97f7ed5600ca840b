"""ModelConfig protobuf <-> the JSON Triton hands to Python models.

Triton renders the configuration with snake_case field names, every default filled and
64-bit integers as JSON numbers (protobuf's own JSON mapping writes them as strings, which
would break `model_config["max_batch_size"] > 0` in user code).
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from tritium.server.backend import ModelConfig

_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def _fix_int64(descriptor: Descriptor, value: dict[str, Any]) -> dict[str, Any]:
    for key, item in value.items():
        field = descriptor.fields_by_name.get(key)
        if field is None:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            message = field.message_type
            if message.GetOptions().map_entry:
                value_field = message.fields_by_name["value"]
                for map_key, map_value in item.items():
                    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                        _fix_int64(value_field.message_type, map_value)
                    elif value_field.type in _INT64_TYPES:
                        item[map_key] = int(map_value)
            elif isinstance(item, list):
                for element in item:
                    _fix_int64(message, element)
            else:
                _fix_int64(message, item)
        elif field.type in _INT64_TYPES:
            value[key] = [int(x) for x in item] if isinstance(item, list) else int(item)
    return value


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """The configuration as Triton's JSON object (snake_case, defaults, numeric int64)."""
    value = json_format.MessageToDict(
        config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _fix_int64(config.DESCRIPTOR, value)


def config_to_json(config: ModelConfig) -> str:
    return json.dumps(config_to_dict(config))


def config_from_dict(value: dict[str, Any]) -> ModelConfig:
    config = ModelConfig()
    json_format.ParseDict(value, config)
    return config
