"""Finding models: repository layout, config.pbtxt <-> ModelConfig, version policy, storage."""

from tritium.repository.model_config import (
    config_from_dict,
    config_from_json,
    config_to_dict,
    config_to_json,
    fill_defaults,
    parse_config_text,
    read_config,
)
from tritium.repository.repository import ModelRepository, ModelSource, ScanResult
from tritium.repository.storage import localize, register_localizer
from tritium.repository.version_policy import select_versions

__all__ = [
    "ModelRepository",
    "ModelSource",
    "ScanResult",
    "config_from_dict",
    "config_from_json",
    "config_to_dict",
    "config_to_json",
    "fill_defaults",
    "localize",
    "parse_config_text",
    "read_config",
    "register_localizer",
    "select_versions",
]
