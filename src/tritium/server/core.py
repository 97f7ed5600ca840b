"""InferenceServer: the one object the frontends talk to (HTTP, gRPC, metrics, OpenAI).

INTERFACE SKELETON — the signatures and docstrings below are the contract between the
frontends and the core; bodies are being filled in. Frontends must not reach past it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from tritium.server.backend import ModelConfig
from tritium.server.options import ServerOptions
from tritium.server.statistics import ModelStatistics
from tritium.server.types import InferenceRequest, InferenceResponse


@dataclass
class ModelHandle:
    """A loaded, resolved model version, as the frontends see it."""

    name: str
    version: int
    config: ModelConfig

    @property
    def decoupled(self) -> bool:
        return self.config.model_transaction_policy.decoupled


class InferenceServer:
    """The serving core: repository, registry, schedulers, statistics."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        # Backends register their metrics here (pb_utils.MetricFamily, vllm:*); the
        # metrics frontend serves it together with the nv_inference_* families.
        self.metrics_registry = CollectorRegistry(auto_describe=True)

    async def start(self) -> None:
        """Scan repositories and load models per the control mode; start polling."""
        raise NotImplementedError

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stop accepting, drain in-flight requests (up to timeout), unload every model."""
        raise NotImplementedError

    # -- health and metadata ------------------------------------------------------
    def is_live(self) -> bool:
        raise NotImplementedError

    def is_ready(self) -> bool:
        """Strict readiness: every model that should be loaded is READY."""
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        """{"name": "triton", "version": ..., "extensions": [...]}"""
        raise NotImplementedError

    def get_model(self, name: str, version: int = -1) -> ModelHandle:
        """The READY version (-1: highest ready). Raises TritonError NOT_FOUND /
        UNAVAILABLE with Triton's messages."""
        raise NotImplementedError

    def model_ready(self, name: str, version: int = -1) -> bool:
        raise NotImplementedError

    def model_metadata(self, name: str, version: int = -1) -> dict[str, Any]:
        """Triton's /v2/models/{m} JSON: name, versions, platform, inputs, outputs."""
        raise NotImplementedError

    def model_config(self, name: str, version: int = -1) -> ModelConfig:
        """The complete ModelConfig (frontends render it with MessageToDict/MessageToJson,
        preserving_proto_field_name=True)."""
        raise NotImplementedError

    # -- inference ----------------------------------------------------------------
    def infer(self, request: InferenceRequest) -> AsyncIterator[InferenceResponse]:
        """Validate, enqueue on the model's scheduler and yield responses until the final one.
        Validation errors raise TritonError before the first response. Closing the
        iterator early (client went away) cancels the request."""
        raise NotImplementedError

    # -- statistics ---------------------------------------------------------------
    def statistics(self, name: str = "", version: int = -1) -> dict[str, Any]:
        """Triton's {"model_stats": [...]} JSON; unknown model raises INVALID_ARG
        "requested model 'x' is not available"."""
        raise NotImplementedError

    def stats_snapshot(self) -> list[ModelStatistics]:
        """Every model version's counters, for the metrics frontend."""
        raise NotImplementedError

    # -- repository ---------------------------------------------------------------
    def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def load_model(self, name: str, config_json: str | None = None,
                         files: dict[str, bytes] | None = None) -> None:
        raise NotImplementedError

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None:
        raise NotImplementedError

    def is_model_ready(self, name: str, version: int = -1) -> bool:
        return self.model_ready(name, version)

    # -- settings -----------------------------------------------------------------
    def log_settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def update_log_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def trace_settings(self, model: str = "") -> dict[str, Any]:
        raise NotImplementedError

    def update_trace_settings(self, settings: dict[str, Any], model: str = "") -> dict[str, Any]:
        raise NotImplementedError
