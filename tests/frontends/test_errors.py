"""Error kinds -> HTTP statuses and gRPC codes (PROTOCOL.md section 1)."""

from __future__ import annotations

import grpc
import pytest

from tritium.frontends.errors import as_triton_error, grpc_status, http_status
from tritium.server.errors import ErrorCode, TritonError


@pytest.mark.parametrize(
    "code,status,grpc_code",
    [
        (ErrorCode.INTERNAL, 500, grpc.StatusCode.INTERNAL),
        (ErrorCode.NOT_FOUND, 404, grpc.StatusCode.NOT_FOUND),
        (ErrorCode.UNAVAILABLE, 503, grpc.StatusCode.UNAVAILABLE),
        (ErrorCode.UNSUPPORTED, 501, grpc.StatusCode.UNIMPLEMENTED),
        (ErrorCode.INVALID_ARG, 400, grpc.StatusCode.INVALID_ARGUMENT),
        (ErrorCode.UNKNOWN, 400, grpc.StatusCode.UNKNOWN),
        (ErrorCode.ALREADY_EXISTS, 400, grpc.StatusCode.ALREADY_EXISTS),
        (ErrorCode.CANCELLED, 400, grpc.StatusCode.CANCELLED),
    ],
)
def test_mapping(code: ErrorCode, status: int, grpc_code: grpc.StatusCode) -> None:
    err = TritonError("m", code)
    assert http_status(err) == status
    assert grpc_status(err) == grpc_code


def test_unexpected_exceptions_become_internal_without_traceback() -> None:
    err = as_triton_error(KeyError("x"))
    assert err.code is ErrorCode.INTERNAL
    assert "Traceback" not in err.message
