"""pb_utils.TritonError and pb_utils.TritonModelException, with Triton's error codes."""

from __future__ import annotations

from tritium.server.errors import ErrorCode


class TritonError:
    """An error a model puts in an InferenceResponse: `TritonError(message, code)`.

    Codes are Triton's TRITONSERVER_Error_Code values, as class attributes."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    _NAMES = (
        "UNKNOWN",
        "INTERNAL",
        "NOT_FOUND",
        "INVALID_ARG",
        "UNAVAILABLE",
        "UNSUPPORTED",
        "ALREADY_EXISTS",
        "CANCELLED",
    )

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message = message
        self._code = int(code)

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def code_name(self) -> str:
        """The tritium.server.errors.ErrorCode name of this error's code."""
        if 0 <= self._code < len(self._NAMES):
            return self._NAMES[self._code]
        return "INTERNAL"

    @classmethod
    def from_code_name(cls, message: str, name: str) -> TritonError:
        code = cls._NAMES.index(name) if name in cls._NAMES else cls.INTERNAL
        return cls(message, code)

    def __str__(self) -> str:
        return self._message

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, {self.code_name()})"


class TritonModelException(Exception):
    """Raised by pb_utils calls that fail (a closed response sender, a failed load_model ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self._message = message

    def message(self) -> str:
        return self._message


def to_error_code(name: str) -> ErrorCode:
    """A wire code name -> ErrorCode (INTERNAL when unknown)."""
    try:
        return ErrorCode[name]
    except KeyError:
        return ErrorCode.INTERNAL
