"""Backend name -> BackendFactory, resolved lazily so that a server serving only Python
models never imports the LLM engine.

A backend module exposes `factory() -> BackendFactory`. Tests and plugins may register
an in-process factory under any name with `register_backend`.
"""

from __future__ import annotations

import importlib

from tritium.server.backend import BackendFactory
from tritium.server.errors import TritonError, invalid_arg

# config.pbtxt `backend:` value -> module exposing factory()
BACKEND_MODULES: dict[str, str] = {
    "python": "tritium.backends.python",
    "vllm": "tritium.backends.llm",
}

_factories: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Serve models with `backend: "<name>"` through `factory` (replaces any earlier one)."""
    _factories[name] = factory


def unregister_backend(name: str) -> None:
    _factories.pop(name, None)


def get_factory(name: str) -> BackendFactory:
    """The factory for a backend name; unknown or broken backends fail the model's load."""
    if name in _factories:
        return _factories[name]
    module_name = BACKEND_MODULES.get(name)
    if module_name is None:
        raise invalid_arg(
            f"unable to find backend library for backend '{name}', try specifying runtime on "
            "the model configuration."
        )
    try:
        module = importlib.import_module(module_name)
        make = module.factory
    except (ImportError, AttributeError) as exc:
        raise TritonError(f"unable to load backend '{name}' ({module_name}): {exc}") from exc
    factory = make()
    _factories[name] = factory
    return factory


def supports_gpu(factory: BackendFactory) -> bool:
    """Whether KIND_AUTO instance groups may become KIND_GPU (default: yes, as Triton's
    python backend does)."""
    return bool(getattr(factory, "supports_gpu", True))
