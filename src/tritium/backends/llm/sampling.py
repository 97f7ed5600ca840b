"""Sampling parameters from a request: the `sampling_parameters` tensor (JSON) or else the
request parameters, as Triton's vLLM backend reads them.

Values may be JSON numbers or strings ("0.1", "100", "true"); lists (stop, stop_token_ids)
may be JSON-encoded strings, because KServe request parameters can only be int, bool or
string. Anything that cannot be read is an INVALID_ARG naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from tritium.engine.sampling_params import SamplingParams
from tritium.server.errors import invalid_arg

# Fields a client may set (vLLM's names). Internal fields (output_kind, all_stop_token_ids,
# detokenize) are the backend's business.
USER_FIELDS = (
    "n",
    "best_of",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "stop_token_ids",
    "include_stop_str_in_output",
    "ignore_eos",
    "max_tokens",
    "min_tokens",
    "logprobs",
    "prompt_logprobs",
    "skip_special_tokens",
    "spaces_between_special_tokens",
)

# Request parameters that transports add and that are not sampling parameters.
IGNORED_REQUEST_PARAMETERS = frozenset(
    {"binary_data_output", "priority", "timeout", "sequence_id", "sequence_start", "sequence_end"}
)

_FIELD_TYPES: dict[str, Any] = typing.get_type_hints(SamplingParams)


def _base_kind(name: str) -> str:
    """'int', 'float', 'bool', 'str_list' or 'int_list' for a SamplingParams field."""
    if name == "best_of":
        return "int"
    hint = _FIELD_TYPES[name]
    args = set(typing.get_args(hint)) if isinstance(hint, types.UnionType) else {hint}
    args.discard(type(None))
    if name == "stop":
        return "str_list"
    if name == "stop_token_ids":
        return "int_list"
    (kind,) = args
    return {int: "int", float: "float", bool: "bool", str: "str"}[kind]


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise invalid_arg(f"sampling parameter '{name}' must be a boolean, got {value!r}")


def _to_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise invalid_arg(f"sampling parameter '{name}' must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            pass
        else:
            if f.is_integer():
                return int(f)
    raise invalid_arg(f"sampling parameter '{name}' must be an integer, got {value!r}")


def _to_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise invalid_arg(f"sampling parameter '{name}' must be a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise invalid_arg(f"sampling parameter '{name}' must be a number, got {value!r}")


def _to_list(name: str, value: Any, item: str) -> list[Any]:
    if isinstance(value, str):
        text = value.strip()
        if item == "int" or text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                if item == "int":
                    raise invalid_arg(
                        f"sampling parameter '{name}' must be a list of integers, got {value!r}"
                    ) from None
        if isinstance(value, str):
            return [value]  # a single stop string
        if isinstance(value, int) and item == "int":
            return [value]
    if not isinstance(value, list):
        raise invalid_arg(f"sampling parameter '{name}' must be a list, got {value!r}")
    if item == "int":
        return [_to_int(name, v) for v in value]
    if not all(isinstance(v, str) for v in value):
        raise invalid_arg(f"sampling parameter '{name}' must be a list of strings, got {value!r}")
    return list(value)


def coerce_value(name: str, value: Any) -> Any:
    """One sampling parameter in its SamplingParams type; INVALID_ARG when it cannot be."""
    kind = _base_kind(name)
    if kind == "bool":
        return _to_bool(name, value)
    if kind == "int":
        return _to_int(name, value)
    if kind == "float":
        return _to_float(name, value)
    if kind == "str_list":
        return _to_list(name, value, "str")
    if kind == "int_list":
        return _to_list(name, value, "int")
    return str(value)


def sampling_params_from_dict(
    values: dict[str, Any], *, strict: bool = True, defaults: dict[str, Any] | None = None
) -> SamplingParams:
    """SamplingParams from a dict of vLLM-named values (None means "default").

    strict: unknown names are INVALID_ARG (the `sampling_parameters` tensor); otherwise
    keys starting with `triton_` and transport keys are skipped first (request parameters).
    """
    fields: dict[str, Any] = dict(defaults or {})
    unknown = []
    for name, value in values.items():
        if not strict and (name.startswith("triton_") or name in IGNORED_REQUEST_PARAMETERS):
            continue
        if name not in USER_FIELDS:
            unknown.append(name)
            continue
        if value is None:
            continue
        fields[name] = coerce_value(name, value)
    if unknown:
        raise invalid_arg(
            f"unknown sampling parameter(s): {', '.join(sorted(unknown))}; "
            f"supported: {', '.join(USER_FIELDS)}"
        )
    best_of = fields.pop("best_of", None)
    if best_of is not None and best_of != fields.get("n", 1):
        raise invalid_arg("sampling parameter 'best_of' is not supported (only best_of == n)")
    if fields.get("logprobs") is not None and fields["logprobs"] > 20:
        raise invalid_arg(f"logprobs must be at most 20, got {fields['logprobs']}.")
    try:
        return SamplingParams(**fields)
    except ValueError as exc:
        raise invalid_arg(f"invalid sampling parameters: {exc}") from exc


def parse_sampling_parameters(
    tensor_json: str | bytes | None, request_parameters: dict[str, Any]
) -> SamplingParams:
    """The request's SamplingParams: from the JSON tensor when given, else from the
    request parameters (Triton's vLLM backend does the same)."""
    if tensor_json is not None:
        if isinstance(tensor_json, bytes):
            try:
                tensor_json = tensor_json.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise invalid_arg("sampling parameters must be UTF-8 JSON") from exc
        text = tensor_json.strip()
        if not text:
            return sampling_params_from_dict({})
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise invalid_arg(f"sampling parameters are not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise invalid_arg("sampling parameters must be a JSON object")
        return sampling_params_from_dict(doc, strict=True)
    return sampling_params_from_dict(dict(request_parameters), strict=False)


def params_to_dict(params: SamplingParams) -> dict[str, Any]:
    """The user-facing fields of `params` (for logs and tests)."""
    return {
        f.name: getattr(params, f.name) for f in dataclasses.fields(params) if f.name in USER_FIELDS
    }
