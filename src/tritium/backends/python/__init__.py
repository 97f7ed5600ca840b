"""Triton Python-backend compatibility: `triton_python_backend_utils` and one stub process
per model instance.

Exports are lazy so the stub process (which imports this package) does not pay for the
server-side modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tritium.backends.python.backend import PythonBackend, PythonBackendFactory

__all__ = ["PythonBackend", "PythonBackendFactory", "factory"]


def factory() -> PythonBackendFactory:
    """The core's entry point (tritium.server.backends maps `backend: "python"` here)."""
    from tritium.backends.python.backend import PythonBackendFactory

    return PythonBackendFactory()


def __getattr__(name: str) -> Any:
    if name == "PythonBackendFactory":
        from tritium.backends.python.backend import PythonBackendFactory

        return PythonBackendFactory
    if name == "PythonBackend":
        from tritium.backends.python.backend import PythonBackend

        return PythonBackend
    raise AttributeError(name)
