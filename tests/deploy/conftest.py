"""Fixtures of the deployment tests."""

from __future__ import annotations

import pytest

from .helpers import ensure_debian_tool


@pytest.fixture(scope="session")
def promtool() -> str:
    """Prometheus's promtool, installed from Debian's prometheus package if missing."""
    return ensure_debian_tool("promtool", "prometheus")
