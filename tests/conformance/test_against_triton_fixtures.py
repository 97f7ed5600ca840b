"""Tritium against NVIDIA Triton 2.51, `none` control mode: every HTTP and gRPC case of
triton_cases.py and the nv_* metric families, compared with the answers the real server
gave (fixtures/, recorded by record_fixtures.py; CI has no Triton).

One `tritium serve` on a copy of examples/python_models answers every case, in order, in
a module fixture; each case is then its own test. What is compared exactly and what only
structurally is explained in triton_compare.py. Cases listed in known_discrepancies.py are
strict xfails: they name the owner of the difference, and they fail once it is fixed (so
the entry gets removed).
"""

from __future__ import annotations

from typing import Any

import pytest
import record_fixtures
import triton_cases
import triton_compare
from known_discrepancies import KNOWN, params
from triton_compare import fixture as _fixture

HTTP_CASES = {c.name: c for c in triton_cases.http_cases()}
GRPC_CASES = {c.name: c for c in triton_cases.grpc_cases()}


@pytest.fixture(scope="module")
def ours() -> dict[str, Any]:
    return record_fixtures.run_none_mode(record_fixtures.tritium_server)


@pytest.mark.parametrize("name", params("http", list(HTTP_CASES)))
def test_http(ours: dict[str, Any], name: str) -> None:
    mode = HTTP_CASES[name].compare
    want = triton_compare.http_view(_fixture("http")[name], mode)
    assert triton_compare.http_view(ours["http"][name], mode) == want


@pytest.mark.parametrize("name", params("grpc", list(GRPC_CASES)))
def test_grpc(ours: dict[str, Any], name: str) -> None:
    mode = GRPC_CASES[name].compare
    want = triton_compare.grpc_view(_fixture("grpc")[name], mode)
    assert triton_compare.grpc_view(ours["grpc"][name], mode) == want


METRIC_PARAMS = [
    pytest.param(group, family, id=f"{group}-{family}", marks=marks)
    for group in ("metrics_start", "metrics")
    for family in sorted(_fixture(group))
    for marks in [
        [pytest.mark.xfail(strict=True, reason=KNOWN[f"{group}/{family}"])]
        if f"{group}/{family}" in KNOWN
        else []
    ]
]


@pytest.mark.parametrize(("group", "family"), METRIC_PARAMS)
def test_metric_family(ours: dict[str, Any], group: str, family: str) -> None:
    """Every nv_* family Triton exports on a CPU machine: same type, same label names,
    a series for every model (values are not compared)."""
    want = triton_compare.metrics_view(_fixture(group))[family]
    assert triton_compare.metrics_view(ours[group]).get(family) == want
