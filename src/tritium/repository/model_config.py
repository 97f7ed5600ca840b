"""config.pbtxt <-> ModelConfig: parsing (protobuf text format), JSON overrides, and the
defaults Triton fills in so that `/config` shows what the server will actually do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tritonclient.grpc import model_config_pb2

from tritium.server.backend import ModelConfig
from tritium.server.errors import invalid_arg

CONFIG_FILENAME = "config.pbtxt"

# Backends whose model folder is recognised by a file when config.pbtxt names none.
DEFAULT_MODEL_FILENAMES = {"python": "model.py"}
# Triton's AutoCompleteBackendFields also recognises other frameworks' files; Tritium has
# no backend for them, and such a model then fails to load as in Triton (no library).
OTHER_FRAMEWORK_FILENAMES = {
    "tensorrt": "model.plan",
    "tensorflow": "model.savedmodel",
    "onnxruntime": "model.onnx",
    "pytorch": "model.pt",
}


def parse_config_text(text: str, path: Path | str = CONFIG_FILENAME) -> ModelConfig:
    """Parse protobuf text format; a syntax error names the file, line and column."""
    config = ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        line, col = exc.GetLine(), exc.GetColumn()
        detail = str(exc).split(" : ", 1)[-1]
        raise invalid_arg(
            f"failed to read text proto from {path}: line {line}, column {col}: {detail}"
        ) from exc
    return config


def read_config(model_dir: Path) -> ModelConfig | None:
    """The model's config.pbtxt, or None when the folder has none (auto-complete may help)."""
    path = model_dir / CONFIG_FILENAME
    if not path.is_file():
        return None
    return parse_config_text(path.read_text(encoding="utf-8"), path)


def config_from_json(text: str) -> ModelConfig:
    """A ModelConfig from the JSON a load request carries (`parameters.config`)."""
    config = ModelConfig()
    try:
        json_format.Parse(text, config)
    except json_format.ParseError as exc:
        raise invalid_arg(f"failed to parse model config JSON: {exc}") from exc
    return config


def config_from_dict(value: dict[str, Any]) -> ModelConfig:
    """A ModelConfig from Triton's JSON object (what a model's auto_complete_config returns)."""
    config = ModelConfig()
    json_format.ParseDict(value, config)
    return config


_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def _fix_int64(value: Any, field: FieldDescriptor) -> Any:
    if field.type in _INT64_TYPES:
        return [int(v) for v in value] if isinstance(value, list) else int(value)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        sub = field.message_type
        if sub.GetOptions().map_entry:
            value_field = sub.fields_by_name["value"]
            return {k: _fix_int64(v, value_field) for k, v in value.items()}
        if isinstance(value, list):
            return [_fix_message_int64(v, sub) for v in value]
        return _fix_message_int64(value, sub)
    return value


def _fix_message_int64(doc: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    for key, value in doc.items():
        field = descriptor.fields_by_name.get(key)
        if field is not None:
            doc[key] = _fix_int64(value, field)
    return doc


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """The config as Triton's JSON shows it (`/config`, and the `model_config` a Python
    model is given): snake_case names, every field printed (defaults included), enums by
    name, 64-bit integers as numbers (protobuf's JSON mapping writes them as strings,
    which would break `model_config["max_batch_size"] > 0` in user code)."""
    doc = json_format.MessageToDict(
        config,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return _fix_message_int64(doc, config.DESCRIPTOR)


def config_to_json(config: ModelConfig) -> str:
    """config_to_dict as a JSON string."""
    return json.dumps(config_to_dict(config))


def detect_backend(config: ModelConfig, version_dirs: list[Path]) -> None:
    """Triton's AutoCompleteBackendFields: a config naming no backend or platform gets
    the backend whose default model file lies in a version folder (model.py -> python)."""
    if config.backend or config.platform:
        return
    for backend, filename in DEFAULT_MODEL_FILENAMES.items():
        name = config.default_model_filename or filename
        if any((d / name).is_file() for d in version_dirs):
            config.backend = backend
            return
    for backend, filename in OTHER_FRAMEWORK_FILENAMES.items():
        name = config.default_model_filename or filename
        if any((d / name).exists() for d in version_dirs):
            config.backend = backend
            return


def fill_defaults(
    config: ModelConfig, model_name: str, *, gpu_ids: list[int], backend_supports_gpu: bool
) -> None:
    """Fill in what Triton's NormalizeModelConfig / NormalizeInstanceGroup fill in."""
    if not config.name:
        config.name = model_name
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    if config.backend in DEFAULT_MODEL_FILENAMES and not config.default_model_filename:
        config.default_model_filename = DEFAULT_MODEL_FILENAMES[config.backend]
    if config.HasField("dynamic_batching"):
        # Triton fills the preferred size only; an absent default_queue_policy stays absent
        # (its zero values are the defaults the scheduler applies).
        db = config.dynamic_batching
        if not db.preferred_batch_size and config.max_batch_size > 0:
            db.preferred_batch_size.append(config.max_batch_size)
    opt = config.optimization
    if not opt.HasField("input_pinned_memory"):
        opt.input_pinned_memory.enable = True
    if not opt.HasField("output_pinned_memory"):
        opt.output_pinned_memory.enable = True
    # model_transaction_policy is not filled in: Triton's /config omits it unless given.
    _fill_instance_groups(config, gpu_ids, backend_supports_gpu)


def _fill_instance_groups(config: ModelConfig, gpu_ids: list[int], supports_gpu: bool) -> None:
    group_cls = model_config_pb2.ModelInstanceGroup
    if not config.instance_group:
        # Triton names the group it adds after the model itself ("m"); groups the config
        # declares without a name become "m_<index>".
        config.instance_group.add(name=config.name)
    for i, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{config.name}_{i}"
        if group.kind == group_cls.KIND_AUTO:
            group.kind = group_cls.KIND_GPU if gpu_ids and supports_gpu else group_cls.KIND_CPU
        if group.count < 1:
            group.count = 1
        if group.kind == group_cls.KIND_GPU and not group.gpus:
            group.gpus.extend(gpu_ids)


def validate_config(config: ModelConfig, model_name: str) -> None:
    """The checks Triton makes before a model is loaded (the ones clients run into)."""
    if config.name != model_name:
        raise invalid_arg(
            f"unexpected directory name '{model_name}' for model '{config.name}', "
            "directory name must equal model name"
        )
    if not config.backend and not config.platform:
        raise invalid_arg(
            f"unexpected platform type '' for {model_name}: set 'backend' in {CONFIG_FILENAME}"
        )
    if config.max_batch_size < 0:
        raise invalid_arg(f"'max_batch_size' must be non-negative value for {model_name}")
    for kind, tensors in (("input", config.input), ("output", config.output)):
        seen: set[str] = set()
        for t in tensors:
            if t.name in seen:
                raise invalid_arg(f"model '{model_name}' has duplicate {kind} '{t.name}'")
            seen.add(t.name)
            if t.data_type == model_config_pb2.TYPE_INVALID:
                raise invalid_arg(f"model {kind} '{t.name}' must specify 'data_type'")
    db = config.dynamic_batching
    if config.HasField("dynamic_batching"):
        for size in db.preferred_batch_size:
            if size < 1 or (config.max_batch_size > 0 and size > config.max_batch_size):
                raise invalid_arg(
                    f"dynamic batching preferred size must be positive and must not exceed "
                    f"max_batch_size for {model_name}"
                )
        if db.priority_levels and not (1 <= db.default_priority_level <= db.priority_levels):
            raise invalid_arg(
                f"default priority level must be in range [1, {db.priority_levels}] for {model_name}"
            )


def gpu_ids() -> list[int]:
    """Visible NVIDIA GPUs (NVML; empty without a driver)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return list(range(pynvml.nvmlDeviceGetCount()))
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library: a CPU machine
        return []
