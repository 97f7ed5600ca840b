"""Triton's error kinds. Raised anywhere below the frontends; turned into an HTTP
status, a gRPC status code or an OpenAI error object in the frontends only."""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    """Triton's TRITONSERVER_Error codes (same names as pb_utils.TritonError)."""

    UNKNOWN = "UNKNOWN"
    INTERNAL = "INTERNAL"
    NOT_FOUND = "NOT_FOUND"
    INVALID_ARG = "INVALID_ARG"
    UNAVAILABLE = "UNAVAILABLE"
    UNSUPPORTED = "UNSUPPORTED"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    CANCELLED = "CANCELLED"


class TritonError(Exception):
    """An error with a Triton error kind; `message` is what the client sees verbatim."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.INTERNAL) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __repr__(self) -> str:
        return f"TritonError({self.message!r}, {self.code.name})"


# Triton's Status::CodeString, the prefix of a failed version's reason ("Internal: ...").
_CODE_STRINGS = {
    ErrorCode.UNKNOWN: "Unknown",
    ErrorCode.INTERNAL: "Internal",
    ErrorCode.NOT_FOUND: "Not found",
    ErrorCode.INVALID_ARG: "Invalid argument",
    ErrorCode.UNAVAILABLE: "Unavailable",
    ErrorCode.UNSUPPORTED: "Unsupported",
    ErrorCode.ALREADY_EXISTS: "Already exists",
    ErrorCode.CANCELLED: "Cancelled",
}


def code_string(code: ErrorCode) -> str:
    return _CODE_STRINGS[code]


def invalid_arg(message: str) -> TritonError:
    return TritonError(message, ErrorCode.INVALID_ARG)


def not_found(message: str) -> TritonError:
    return TritonError(message, ErrorCode.NOT_FOUND)


def unavailable(message: str) -> TritonError:
    return TritonError(message, ErrorCode.UNAVAILABLE)


def unsupported(message: str) -> TritonError:
    return TritonError(message, ErrorCode.UNSUPPORTED)


def internal(message: str) -> TritonError:
    return TritonError(message, ErrorCode.INTERNAL)
