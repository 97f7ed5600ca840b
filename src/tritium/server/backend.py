"""The contract between the core and a backend (python, vllm/llm).

A `Backend` is one loaded model version. The core's scheduler forms batches and calls
`execute(instance, requests)` on a free instance; the backend delivers responses with
`request.send(...)` (any number for a decoupled model, the last one final=True) and
returns per-request timings for statistics. A backend that loses an instance (a stub
process died) calls `context.report_failure(reason)`: the registry marks that version
UNAVAILABLE with the reason while every other model keeps serving.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeAlias

from tritonclient.grpc import model_config_pb2

from tritium.server.types import InferenceRequest, InferenceResponse

ModelConfig: TypeAlias = model_config_pb2.ModelConfig


@dataclass
class RequestTimings:
    """Nanoseconds spent on one request inside a backend, for Triton's statistics.
    queue_ns is extra queueing inside the backend (an LLM waiting for the engine)."""

    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0
    queue_ns: int = 0
    # Whether the request executed successfully, as a Triton backend reports it
    # (TRITONBACKEND_ModelInstanceReportStatistics): a model's own error response
    # (pb_utils.TritonError) is a success, an exception in execute() a failure. None: the
    # core judges by the final response (an error is a failure).
    success: bool | None = None
    # False when the backend refused the request before executing it (Triton's python
    # backend checking BYTES inputs): no execution is counted for it.
    executed: bool = True


class ServerHandle(Protocol):
    """What a backend may ask of the server (BLS, pb_utils.load_model ...)."""

    def infer(self, request: InferenceRequest) -> AsyncIterator[InferenceResponse]: ...

    async def load_model(
        self, name: str, config_json: str | None = None, files: dict[str, bytes] | None = None
    ) -> None: ...

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None: ...

    def is_model_ready(self, name: str, version: int = -1) -> bool: ...


@dataclass
class BackendContext:
    """Everything a backend gets from the core when it is created."""

    model_name: str
    version: int
    config: ModelConfig  # complete: auto-completed and defaults filled
    model_dir: Path  # <repo>/<model>
    version_dir: Path  # <repo>/<model>/<version>
    server: ServerHandle
    report_failure: Callable[[str], None]
    metrics_registry: Any = None  # prometheus_client.CollectorRegistry for pb_utils.MetricFamily
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """One loaded model version."""

    @property
    def instance_count(self) -> int:
        """How many batches may execute at once (instance_group count for python models;
        the engine's own concurrency for LLMs)."""
        ...

    async def load(self) -> None:
        """Start instances (stub processes, engine placement). Raise TritonError on failure."""
        ...

    async def execute(
        self, instance: int, requests: list[InferenceRequest]
    ) -> list[RequestTimings]:
        """Run one batch on instance `instance` (0 <= instance < instance_count).
        Deliver every response through request.send(). Return one RequestTimings per request."""
        ...

    async def unload(self) -> None:
        """Stop instances and free their memory; waits for in-flight executions to finish."""
        ...


class BackendFactory(Protocol):
    """How the core creates backends: `auto_complete` runs before the config is final."""

    async def auto_complete(
        self, config: ModelConfig, model_dir: Path, version_dir: Path
    ) -> ModelConfig: ...

    def create(self, context: BackendContext) -> Backend: ...
