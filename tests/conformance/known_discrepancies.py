"""Where Tritium still answers differently from Triton 2.51, by owner. Each entry is a
strict xfail in the conformance tests: fix the behaviour, watch the test XPASS (fail),
delete the entry. Values say who owns the fix and what Triton does.
"""

from __future__ import annotations

from typing import Any

import pytest
from triton_compare import fixture

# The gRPC cases run after the HTTP cases killed crasher's stub on the same server.
CRASHED_UNAVAILABLE = (
    "deliberate (issue 2): crasher's stub died during the HTTP cases, so it is UNAVAILABLE "
    "(and the server not ready under strict readiness); Triton 2.51 keeps it READY"
)

KNOWN: dict[str, str] = {
    # -- deliberate: the issue asks a crashed model to go UNAVAILABLE with its reason -----
    # (inference requests still reach the crashed model and get Triton's 500 "Stub process
    # '<instance>' is not healthy.", so http/infer_crasher_after matches)
    "http/model_ready_crasher_after": (
        "deliberate (issue 2): a model whose stub died is UNAVAILABLE with the reason, so "
        "/ready is 400; Triton 2.51 keeps it READY and fails every request"
    ),
    "http/ready_after_crash": (
        "deliberate (issue 2): strict readiness counts the crashed model, so the server is "
        "not ready; Triton 2.51 stays ready"
    ),
    "grpc/ServerReady": CRASHED_UNAVAILABLE,
    "grpc/Health": CRASHED_UNAVAILABLE,
    "grpc/ModelMetadata_crasher": CRASHED_UNAVAILABLE,
    "grpc/ModelConfig_crasher": CRASHED_UNAVAILABLE,
    "grpc/ModelReady_crasher": CRASHED_UNAVAILABLE,
    "grpc/RepositoryIndex": CRASHED_UNAVAILABLE,
    "grpc/RepositoryIndex_ready": CRASHED_UNAVAILABLE,
}


def params(group: str, names: list[str]) -> list[Any]:
    """pytest params for the recorded cases of a group, known differences as strict xfails."""
    recorded = fixture(group)
    out = []
    for name in names:
        if name not in recorded:
            continue  # a case added since the fixtures were recorded: re-record them
        key = f"{group}/{name}"
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN[key])] if key in KNOWN else []
        out.append(pytest.param(name, id=name, marks=marks))
    return out
