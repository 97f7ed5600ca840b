"""Tritium against NVIDIA Triton 2.51, `explicit` control mode: the repository API (load,
unload, config and file overrides, failed loads, the index after each) compared with the
recorded answers (fixtures/http_explicit.json). One server for the module; see
test_against_triton_fixtures.py for how cases are compared and known differences marked.
"""

from __future__ import annotations

from typing import Any

import pytest
import record_fixtures
import triton_cases
import triton_compare
from known_discrepancies import params
from triton_compare import fixture as _fixture

CASES = {c.name: c for c in triton_cases.explicit_http_cases() if c.method != "WAIT_UNLOADED"}


@pytest.fixture(scope="module")
def ours() -> dict[str, Any]:
    return record_fixtures.run_explicit_mode(record_fixtures.tritium_server)


@pytest.mark.parametrize("name", params("http_explicit", list(CASES)))
def test_http_explicit(ours: dict[str, Any], name: str) -> None:
    mode = CASES[name].compare
    want = triton_compare.http_view(_fixture("http_explicit")[name], mode)
    assert triton_compare.http_view(ours["http_explicit"][name], mode) == want
