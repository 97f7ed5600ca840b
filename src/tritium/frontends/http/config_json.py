"""ModelConfig -> Triton's /config JSON.

Protobuf's JSON mapping renders 64-bit integers as strings; Triton turns them back into
numbers (e.g. "dims": [4], "max_queue_delay_microseconds": 100), so we do the same.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def _fix(value: Any, field: FieldDescriptor) -> Any:
    if field.type in _INT64_TYPES:
        return [int(v) for v in value] if isinstance(value, list) else int(value)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        sub = field.message_type
        if sub.GetOptions().map_entry:
            value_field = sub.fields_by_name["value"]
            return {k: _fix(v, value_field) for k, v in value.items()}
        if isinstance(value, list):
            return [_fix_message(v, sub) for v in value]
        return _fix_message(value, sub)
    return value


def _fix_message(doc: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    for key, value in doc.items():
        field = descriptor.fields_by_name.get(key)
        if field is not None:
            doc[key] = _fix(value, field)
    return doc


def config_to_json(config: Message) -> dict[str, Any]:
    """The whole config, snake_case names, defaults shown, 64-bit integers as numbers."""
    doc = json_format.MessageToDict(
        config,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return _fix_message(doc, config.DESCRIPTOR)
