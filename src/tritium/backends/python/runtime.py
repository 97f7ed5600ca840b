"""The link between pb_utils (the model's API) and the stub process that serves it.

pb_utils is a module of free functions and classes, as in Triton, so the stub installs
itself here once at start-up; pb_utils calls that need the server (BLS, responses,
load_model, metrics, logging) go through `current()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from tritium.backends.python.pb_errors import TritonModelException

if TYPE_CHECKING:
    from tritium.backends.python.pb_types import InferenceRequest, InferenceResponse


class StubServices(Protocol):
    """What a stub offers to pb_utils."""

    model_dir: str
    decoupled: bool

    def send_response(
        self, request: InferenceRequest, response: InferenceResponse | None, final: bool
    ) -> None: ...

    def bls(self, request: InferenceRequest) -> Iterator[InferenceResponse]: ...

    def call(self, op: str, **args: Any) -> Any: ...

    def update_metric(self, metric: int, op: str, value: float) -> None: ...

    def log(self, level: str, message: str) -> None: ...


_current: StubServices | None = None


def install(services: StubServices | None) -> None:
    global _current
    _current = services


def current() -> StubServices:
    if _current is None:
        raise TritonModelException(
            "this call is only available inside a model served by the Python backend"
        )
    return _current


def installed() -> bool:
    return _current is not None
