"""Log and trace settings (Triton's /v2/logging and /v2[/models/m]/trace/setting), with
Triton's key names and value types: log settings typed, trace settings strings."""

from __future__ import annotations

import logging
from typing import Any

from tritium.server.errors import invalid_arg, unsupported
from tritium.server.options import ServerOptions

_LOG_TYPES: dict[str, type] = {
    "log_file": str,
    "log_info": bool,
    "log_warning": bool,
    "log_error": bool,
    "log_verbose_level": int,
    "log_format": str,
}
_LOG_FORMATS = ("default", "ISO8601")

TRACE_DEFAULTS: dict[str, Any] = {
    "trace_file": "",
    "trace_level": ["OFF"],
    "trace_rate": "1000",
    "trace_count": "-1",
    "log_frequency": "0",
    "trace_mode": "triton",  # Triton's own trace format (the only one Tritium writes)
}
_TRACE_LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")


class LogSettings:
    """The server's logging switches, applied to the `tritium` logger."""

    def __init__(self, options: ServerOptions) -> None:
        self.values: dict[str, Any] = {
            "log_file": options.log_file,
            "log_info": options.log_info,
            "log_warning": options.log_warning,
            "log_error": options.log_error,
            "log_verbose_level": options.log_verbose,
            "log_format": options.log_format,
        }
        self._apply()

    def get(self) -> dict[str, Any]:
        return dict(self.values)

    def update(self, settings: dict[str, Any]) -> dict[str, Any]:
        new = dict(self.values)
        for key, value in settings.items():
            want = _LOG_TYPES.get(key)
            if want is None:
                raise invalid_arg(f"log setting '{key}' is not supported")
            if value is None:
                continue
            # bool is an int subclass: a JSON true is not a verbose level.
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                kind = {bool: "boolean", int: "integer", str: "string"}[want]
                raise invalid_arg(f"expect {kind} for '{key}'")
            if key == "log_file" and value != self.values["log_file"]:
                raise unsupported("log file location can not be updated through network protocol")
            if key == "log_format" and value not in _LOG_FORMATS:
                raise invalid_arg(
                    f"invalid log format '{value}', expected one of {list(_LOG_FORMATS)}"
                )
            if key == "log_verbose_level" and isinstance(value, int) and value < 0:
                raise invalid_arg("log_verbose_level must be non-negative")
            new[key] = value
        self.values = new
        self._apply()
        return self.get()

    def _apply(self) -> None:
        v = self.values
        if v["log_verbose_level"] > 0:
            level = logging.DEBUG
        elif v["log_info"]:
            level = logging.INFO
        elif v["log_warning"]:
            level = logging.WARNING
        elif v["log_error"]:
            level = logging.ERROR
        else:
            level = logging.CRITICAL + 1
        logging.getLogger("tritium").setLevel(level)


class TraceSettings:
    """Global trace settings plus per-model overrides (a model shows the global value for
    every key it does not override; updating a key to null clears the override)."""

    def __init__(self) -> None:
        self.global_values: dict[str, Any] = {k: _copy(v) for k, v in TRACE_DEFAULTS.items()}
        self.model_values: dict[str, dict[str, Any]] = {}

    def get(self, model: str = "") -> dict[str, Any]:
        out = {k: _copy(v) for k, v in self.global_values.items()}
        out.update({k: _copy(v) for k, v in self.model_values.get(model, {}).items()})
        return out

    def update(self, settings: dict[str, Any], model: str = "") -> dict[str, Any]:
        checked = {k: _check_trace(k, v) for k, v in settings.items()}
        target = self.model_values.setdefault(model, {}) if model else self.global_values
        for key, value in checked.items():
            if value is None:
                if model:
                    target.pop(key, None)
                else:
                    target[key] = _copy(TRACE_DEFAULTS[key])
            else:
                target[key] = value
        return self.get(model)


def _check_trace(key: str, value: Any) -> Any:
    if key not in TRACE_DEFAULTS:
        raise invalid_arg(f"trace setting '{key}' is not supported")
    if value is None:
        return None
    if key == "trace_level":
        levels = value if isinstance(value, list) else [value]
        if not levels or not all(isinstance(x, str) and x in _TRACE_LEVELS for x in levels):
            raise invalid_arg(
                f"invalid trace_level {value!r}, expected values from {list(_TRACE_LEVELS)}"
            )
        return list(levels)
    if key == "trace_mode":
        if value != "triton":
            raise invalid_arg(f"trace_mode '{value}' is not supported, only 'triton' is")
        return value
    if key == "trace_file":
        if not isinstance(value, str):
            raise invalid_arg("expect string for 'trace_file'")
        return value
    # trace_rate, trace_count, log_frequency: integers carried as strings
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise invalid_arg(f"expect a number for '{key}'")
    try:
        number = int(value)
    except ValueError as exc:
        raise invalid_arg(f"unable to parse '{key}', got: {value}") from exc
    if number < (-1 if key == "trace_count" else 0):
        raise invalid_arg(f"invalid value for '{key}': {value}")
    return str(number)


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value
