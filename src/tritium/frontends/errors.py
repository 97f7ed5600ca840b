"""The one place where Triton error kinds become HTTP statuses and gRPC codes.

Everything below the frontends raises `TritonError`; anything else that escapes is a bug
and is reported as INTERNAL with its message only (never a stack trace to the client).
"""

from __future__ import annotations

import logging

import grpc

from tritium.server.errors import ErrorCode, TritonError

log = logging.getLogger("tritium.frontends")

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INTERNAL: 500,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.UNSUPPORTED: 501,
    ErrorCode.INVALID_ARG: 400,
    ErrorCode.UNKNOWN: 400,
    ErrorCode.ALREADY_EXISTS: 400,
    ErrorCode.CANCELLED: 400,
}

GRPC_STATUS: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.UNSUPPORTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorCode.INVALID_ARG: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNKNOWN: grpc.StatusCode.UNKNOWN,
    ErrorCode.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.CANCELLED: grpc.StatusCode.CANCELLED,
}


def as_triton_error(exc: BaseException) -> TritonError:
    """`exc` as a TritonError; unexpected exceptions are logged here and become INTERNAL."""
    if isinstance(exc, TritonError):
        return exc
    log.exception("unexpected error while serving a request", exc_info=exc)
    message = str(exc) or type(exc).__name__
    return TritonError(message, ErrorCode.INTERNAL)


def http_status(err: TritonError) -> int:
    return HTTP_STATUS.get(err.code, 500)


def grpc_status(err: TritonError) -> grpc.StatusCode:
    return GRPC_STATUS.get(err.code, grpc.StatusCode.INTERNAL)
