"""The LLM backend (`backend: "vllm"`): Triton's vLLM-backend and the seed (PROMPT/TEXT)
conventions over Tritium's engine, with one engine worker process per device.

The package imports nothing heavy itself: the engine worker process
(`python -m tritium.backends.llm.worker`) must not pay for the server's imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tritium.backends.llm.backend import LLMBackendFactory

_factory: LLMBackendFactory | None = None


def factory() -> LLMBackendFactory:
    """The process's LLM backend factory (it owns the device workers, so there is one)."""
    global _factory
    if _factory is None:
        from tritium.backends.llm.backend import LLMBackendFactory

        _factory = LLMBackendFactory()
    return _factory


__all__ = ["factory"]
