"""InferenceServer: the one object the frontends talk to (HTTP, gRPC, metrics, OpenAI).

The signatures and docstrings below are the contract between the frontends and the core;
frontends must not reach past it. The work is done by the repository (finding models),
the lifecycle (loading them), the registry (their states) and each model's scheduler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from tritonclient.grpc import model_config_pb2

from tritium.server.backend import ModelConfig
from tritium.server.errors import TritonError, invalid_arg, unavailable
from tritium.server.lifecycle import ModelLifecycle
from tritium.server.model import Model
from tritium.server.options import ServerOptions
from tritium.server.registry import ModelRegistry, ModelState
from tritium.server.settings import LogSettings, TraceSettings
from tritium.server.statistics import ModelStatistics
from tritium.server.types import InferenceRequest, InferenceResponse, config_to_wire_dtype
from tritium.server.validation import validate_request

log = logging.getLogger("tritium.server")

# The Triton release whose protocol Tritium speaks.
TRITON_COMPATIBLE_VERSION = "2.51.0"

# Every extension Triton 2.51 lists, in its order; /v2 lists ours in the same order.
TRITON_EXTENSION_ORDER = [
    "classification",
    "sequence",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "system_shared_memory",
    "cuda_shared_memory",
    "binary_tensor_data",
    "parameters",
    "statistics",
    "trace",
    "logging",
]

# Triton's extension names, only those Tritium implements. Frontends that implement more
# (binary_tensor_data, shared memory ...) append theirs to `InferenceServer.extensions`.
CORE_EXTENSIONS = [
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "parameters",
    "statistics",
    "logging",
]


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
        self.extensions: list[str] = list(CORE_EXTENSIONS)
        self.registry = ModelRegistry()
        self.lifecycle = ModelLifecycle(options, self.registry, self, self.metrics_registry)
        self.startup_failures: dict[str, str] = {}
        self._log_settings = LogSettings(options)
        self._trace_settings = TraceSettings()
        self._accepting = False
        self._live = False

    async def start(self) -> None:
        """Scan repositories and load models per the control mode; start polling."""
        if self.options.model_control_mode not in ("none", "poll", "explicit"):
            raise invalid_arg(f"invalid model control mode '{self.options.model_control_mode}'")
        self._live = True
        self._accepting = True
        self.startup_failures = await self.lifecycle.start()
        if self.startup_failures and self.options.exit_on_error:
            detail = "; ".join(self.startup_failures.values())
            raise TritonError(f"failed to load all models: {detail}")

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stop accepting, drain in-flight requests (up to timeout), unload every model."""
        self._accepting = False
        timeout = self.options.exit_timeout_secs if timeout_s is None else timeout_s
        await self.lifecycle.stop(timeout)
        self._live = False

    # -- health and metadata ------------------------------------------------------
    def is_live(self) -> bool:
        return self._live

    def is_ready(self) -> bool:
        """Strict readiness: every model that should be loaded is READY."""
        if not self._accepting:
            return False
        return self.registry.all_ready() if self.options.strict_readiness else True

    def metadata(self) -> dict[str, Any]:
        """{"name": "triton", "version": ..., "extensions": [...]}"""
        return {
            "name": "triton",
            "version": TRITON_COMPATIBLE_VERSION,
            "extensions": sorted(self.extensions, key=_extension_rank),
        }

    def get_model(self, name: str, version: int = -1) -> ModelHandle:
        """The READY version (-1: highest ready). Raises TritonError NOT_FOUND /
        UNAVAILABLE with Triton's messages."""
        model = self.registry.resolve(name, version, include_crashed=True)
        return ModelHandle(model.name, model.version, model.config)

    def model_ready(self, name: str, version: int = -1) -> bool:
        return self.registry.is_ready(name, version)

    def model_metadata(self, name: str, version: int = -1) -> dict[str, Any]:
        """Triton's /v2/models/{m} JSON: name, versions, platform, inputs, outputs."""
        config = self.registry.resolve(name, version).config
        batch = [-1] if config.max_batch_size > 0 else []

        def tensors(specs: Any) -> list[dict[str, Any]]:
            return [
                {
                    "name": t.name,
                    "datatype": config_to_wire_dtype(model_config_pb2.DataType.Name(t.data_type)),
                    "shape": batch + list(t.dims),
                }
                for t in specs
            ]

        return {
            "name": name,
            "versions": [str(v) for v in self.registry.records[name].ready_versions()],
            "platform": config.platform or config.backend,
            "inputs": tensors(config.input),
            "outputs": tensors(config.output),
        }

    def model_config(self, name: str, version: int = -1) -> ModelConfig:
        """The complete ModelConfig (frontends render it with MessageToDict/MessageToJson,
        preserving_proto_field_name=True)."""
        return self.registry.resolve(name, version).config

    # -- inference ----------------------------------------------------------------
    def infer(self, request: InferenceRequest) -> AsyncIterator[InferenceResponse]:
        """Validate, enqueue on the model's scheduler and yield responses until the final one.
        Validation errors raise TritonError before the first response. Closing the
        iterator early (client went away) cancels the request."""
        if not self._accepting:
            raise unavailable("Server not ready")
        model = self.registry.resolve(
            request.model_name, request.model_version, include_crashed=True
        )
        batch_size = validate_request(model.config, request)
        request.model_version = model.version
        return self._responses(model, request, batch_size)

    async def _responses(
        self, model: Model, request: InferenceRequest, batch_size: int
    ) -> AsyncIterator[InferenceResponse]:
        pending = model.submit(request, batch_size)
        wanted = (
            None
            if request.requested_outputs is None
            else {o.name for o in request.requested_outputs}
        )
        finished = False
        try:
            while True:
                response = await request.responses.get()
                if wanted is not None and response.outputs:
                    response.outputs = [t for t in response.outputs if t.name in wanted]
                finished = response.final
                yield response
                if finished:
                    return
        finally:
            if not finished:
                model.cancel(pending)

    # -- statistics ---------------------------------------------------------------
    def statistics(self, name: str = "", version: int = -1) -> dict[str, Any]:
        """Triton's {"model_stats": [...]} JSON; unknown model raises INVALID_ARG
        "requested model 'x' is not available"."""
        stats: list[dict[str, Any]] = []
        if not name:
            for rec_name in sorted(self.registry.records):
                each = self.registry.records[rec_name]
                stats += [each.stats_for(v).to_json() for v in each.ready_versions()]
            return {"model_stats": stats}
        rec = self.registry.records.get(name)
        ready = rec.ready_versions() if rec is not None else []
        if rec is None or not ready:
            raise invalid_arg(f"requested model '{name}' is not available")
        if version >= 0:
            if version not in ready:
                raise invalid_arg(f"requested model version is not available for model '{name}'")
            ready = [version]
        return {"model_stats": [rec.stats_for(v).to_json() for v in ready]}

    def stats_snapshot(self) -> list[ModelStatistics]:
        """Every model version's counters, for the metrics frontend."""
        return [
            rec.stats_for(v)
            for rec in self.registry.records.values()
            for v, vr in sorted(rec.versions.items())
            if vr.state in (ModelState.READY, ModelState.UNLOADING) or v in rec.stats
        ]

    # -- repository ---------------------------------------------------------------
    def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        try:
            names = self.lifecycle.scan().names()
        except TritonError:
            names = self.lifecycle.last_scan.names()
        return self.registry.index(names, ready_only)

    def _check_explicit(self) -> None:
        if self.options.model_control_mode != "explicit":
            raise unavailable("explicit model load / unload is not allowed if polling is enabled")

    async def load_model(
        self, name: str, config_json: str | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        self._check_explicit()
        await self.lifecycle.load(name, config_json, files)

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None:
        self._check_explicit()
        await self.lifecycle.unload(name)

    def is_model_ready(self, name: str, version: int = -1) -> bool:
        return self.model_ready(name, version)

    # -- settings -----------------------------------------------------------------
    def log_settings(self) -> dict[str, Any]:
        return self._log_settings.get()

    def update_log_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        return self._log_settings.update(settings)

    def trace_settings(self, model: str = "") -> dict[str, Any]:
        if model:
            self._known_model(model)
        return self._trace_settings.get(model)

    def update_trace_settings(self, settings: dict[str, Any], model: str = "") -> dict[str, Any]:
        if model:
            self._known_model(model)
        return self._trace_settings.update(settings, model)

    def _known_model(self, name: str) -> None:
        if name not in self.registry.records or not self.registry.records[name].versions:
            raise invalid_arg(f"Request for unknown model : {name}")

    # -- for callers that wait on the event loop ----------------------------------
    async def wait_idle(self) -> None:
        """Until no request is queued or executing anywhere (tests, graceful stop)."""
        while any(m.pending_count for m in self.registry.loaded_models()):
            await asyncio.sleep(0.005)


def _extension_rank(name: str) -> int:
    """Triton's position of an extension; names Triton does not know go last."""
    try:
        return TRITON_EXTENSION_ORDER.index(name)
    except ValueError:
        return len(TRITON_EXTENSION_ORDER)
