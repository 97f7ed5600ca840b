"""PythonBackend: one loaded Python model version, one stub process per instance.

The core calls `execute(instance, requests)` on a free instance; requests go to that
instance's stub and responses come back through `request.send()`. Calls the stubs make
of the server (BLS, load_model, metrics) are served here, with `BackendContext.server`
and the Prometheus registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2

import tritium
from tritium.backends.python import protocol as p
from tritium.backends.python.instance import StubInstance, StubSpec, response_to_wire
from tritium.backends.python.metrics import collector_for
from tritium.backends.python.shm import decode, default_shm_dir
from tritium.repository.model_config import config_to_json
from tritium.server.backend import BackendContext, ModelConfig, RequestTimings
from tritium.server.errors import TritonError, internal, invalid_arg
from tritium.server.types import (
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    Tensor,
    TruncatedBytes,
)

logger = logging.getLogger("tritium.backends.python")

_backend_ids = itertools.count(1)


def model_file_path(config: ModelConfig, version_dir: Path) -> Path:
    return version_dir / (config.default_model_filename or "model.py")


def instance_specs(context: BackendContext, shm_dir: str, shm_prefix: str) -> list[StubSpec]:
    """One StubSpec per model instance, named and placed as Triton does: group `<model>_<g>`,
    instance `<group>_<i>`; a GPU group runs `count` instances on each listed GPU."""
    config: Any = context.config
    groups = list(config.instance_group) or [model_config_pb2.ModelInstanceGroup(count=1)]
    config_json = config_to_json(config)
    model_file = model_file_path(config, context.version_dir)
    decoupled = config.model_transaction_policy.decoupled
    output_names = [o.name for o in config.output]
    specs: list[StubSpec] = []
    for g, group in enumerate(groups):
        group_name = group.name or f"{context.model_name}_{g}"
        count = group.count if group.count > 0 else 1
        gpu = group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        devices = list(group.gpus) if gpu and group.gpus else [0]
        index = 0
        for device in devices:
            for _ in range(count):
                args = {
                    "model_config": config_json,
                    "model_instance_kind": "GPU" if gpu else "CPU",
                    "model_instance_name": f"{group_name}_{index}",
                    "model_instance_device_id": str(device),
                    "model_repository": str(context.model_dir),
                    "model_version": str(context.version),
                    "model_name": context.model_name,
                }
                specs.append(
                    StubSpec(
                        args=args,
                        model_file=str(model_file),
                        version_dir=str(context.version_dir),
                        decoupled=decoupled,
                        output_names=output_names,
                        shm_dir=shm_dir,
                        shm_prefix=f"{shm_prefix}{len(specs)}_",
                        env=stub_env(),
                    )
                )
                index += 1
    return specs


def stub_env() -> dict[str, str]:
    """Make sure the stub imports this very tritium, installed or not."""
    source_root = str(Path(tritium.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{source_root}{os.pathsep}{path}" if path else source_root}


class PythonBackend:
    """A Triton Python-backend model: `TritonPythonModel` in stub processes."""

    def __init__(self, context: BackendContext) -> None:
        self.context = context
        self._id = next(_backend_ids)
        self._shm_dir = default_shm_dir()
        prefix = f"tritium_pb_{os.getpid()}_{self._id}_"
        self._instances = [
            StubInstance(spec, self._handle_call, self._on_death)
            for spec in instance_specs(context, self._shm_dir, prefix)
        ]
        self._metrics = collector_for(context.metrics_registry)
        self._calls: dict[StubInstance, set[asyncio.Task[None]]] = {}
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._unloading = False
        self._reported = False
        self.unload_timeout_s = float(context.extra.get("unload_timeout_s", 30.0))

    @property
    def instance_count(self) -> int:
        return len(self._instances)

    def instance_names(self) -> list[str]:
        return [i.name for i in self._instances]

    def instance_pids(self) -> list[int]:
        """The stub processes' ids (for diagnostics and tests)."""
        return [i.pid for i in self._instances]

    # -- lifecycle ------------------------------------------------------------------------
    async def load(self) -> None:
        model_file = model_file_path(self.context.config, self.context.version_dir)
        if not model_file.is_file():
            raise internal(f"unable to find '{model_file}' for model '{self.context.model_name}'")
        results = await asyncio.gather(
            *(i.start() for i in self._instances), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await asyncio.gather(*(i.stop(5.0) for i in self._instances))
            self._metrics.release(self._id)
            first = errors[0]
            if isinstance(first, TritonError):
                raise first
            raise internal(f"failed to start the Python backend stub: {first}")

    async def execute(
        self, instance: int, requests: list[InferenceRequest]
    ) -> list[RequestTimings]:
        refused = {i for i, r in enumerate(requests) if _refuse_truncated_bytes(r)}
        runnable = [r for i, r in enumerate(requests) if i not in refused]
        timings = iter(await self._execute(instance, runnable) if runnable else [])
        return [
            RequestTimings(success=False, executed=False) if i in refused else next(timings)
            for i in range(len(requests))
        ]

    async def _execute(
        self, instance: int, requests: list[InferenceRequest]
    ) -> list[RequestTimings]:
        stub = self._instances[instance]
        self._in_flight += 1
        self._idle.clear()
        try:
            sent_ns, done = await stub.execute(requests)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
        if done is None:
            return [RequestTimings() for _ in requests]
        received_ns = time.monotonic_ns()
        # execute() returned: every request executed, whatever it answered (a model's own
        # TritonError response is a success in Triton's statistics; an exception is not).
        return [
            RequestTimings(
                compute_input_ns=max(0, done.start_ns - sent_ns),
                compute_infer_ns=max(0, done.end_ns - done.start_ns),
                compute_output_ns=max(0, received_ns - done.end_ns),
                success=done.error is None,
            )
            for _ in requests
        ]

    async def unload(self) -> None:
        self._unloading = True
        await self._idle.wait()
        # Decoupled requests may still be streaming after execute() returned.
        deadline = time.monotonic() + self.unload_timeout_s
        while any(i.open_requests for i in self._instances) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.gather(*(i.stop() for i in self._instances))
        for tasks in self._calls.values():
            for task in tasks:
                task.cancel()
        self._metrics.release(self._id)

    def _on_death(self, instance: StubInstance, reason: str) -> None:
        for task in self._calls.pop(instance, set()):
            task.cancel()
        if self._unloading:
            return
        logger.error("model '%s': %s", self.context.model_name, reason)
        if not self._reported:
            self._reported = True
            self.context.report_failure(reason)

    # -- calls from the stubs -------------------------------------------------------------
    def _handle_call(self, instance: StubInstance, message: Any) -> None:
        match message:
            case p.MetricUpdate(metric=metric, op=op, value=value):
                self._metrics.update(metric, op, value)
            case p.BlsCall():
                self._spawn(instance, self._run_bls(instance, message))
            case p.ServerCall():
                self._spawn(instance, self._run_server_call(instance, message))

    def _spawn(self, instance: StubInstance, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        tasks = self._calls.setdefault(instance, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _run_bls(self, instance: StubInstance, message: p.BlsCall) -> None:
        wire = message.request
        final_sent = False
        try:
            inputs = {t.name: Tensor(t.name, t.datatype, decode(t)) for t in wire.inputs}
            request = InferenceRequest(
                model_name=wire.model_name,
                model_version=wire.model_version,
                id=wire.request_id,
                inputs=inputs,
                requested_outputs=(
                    [RequestedOutput(n) for n in wire.requested_output_names] or None
                ),
                parameters=json.loads(wire.parameters or "{}"),
                correlation_id=wire.correlation_id,
                flags=wire.flags,
                timeout_us=wire.timeout,
            )
            responses = self.context.server.infer(request)
            try:
                async for response in responses:
                    reply = response_to_wire(instance.writer, response)
                    instance.post(
                        p.BlsReply(call=message.call, response=reply, final=response.final)
                    )
                    if response.final:
                        final_sent = True
                        break
            finally:
                with contextlib.suppress(Exception):
                    await responses.aclose()  # type: ignore[attr-defined]
            if not final_sent:
                instance.post(p.BlsReply(call=message.call, response=p.WireResponse(), final=True))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = (
                p.WireError(exc.message, exc.code.name)
                if isinstance(exc, TritonError)
                else p.WireError(str(exc), "INTERNAL")
            )
            if not final_sent:
                instance.post(
                    p.BlsReply(call=message.call, response=p.WireResponse(error=error), final=True)
                )

    async def _run_server_call(self, instance: StubInstance, message: p.ServerCall) -> None:
        args = message.args
        server = self.context.server
        try:
            value: Any = None
            match message.op:
                case "load_model":
                    await server.load_model(args["name"], args.get("config"), args.get("files"))
                case "unload_model":
                    await server.unload_model(args["name"], bool(args.get("unload_dependents")))
                case "is_model_ready":
                    value = bool(server.is_model_ready(args["name"], int(args.get("version", -1))))
                case "metric_family":
                    self._metrics.family(self._id, args["name"], args["description"], args["kind"])
                case "metric":
                    value = self._metrics.metric(
                        args["family"], args.get("labels") or {}, args.get("buckets")
                    )
                case "metric_value":
                    value = self._metrics.value(int(args["metric"]))
                case other:
                    raise internal(f"unknown stub call '{other}'")
            instance.post(p.CallReply(call=message.call, value=value))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = (
                p.WireError(exc.message, exc.code.name)
                if isinstance(exc, TritonError)
                else p.WireError(f"{type(exc).__name__}: {exc}", "INTERNAL")
            )
            instance.post(p.CallReply(call=message.call, error=error))


def _refuse_truncated_bytes(request: InferenceRequest) -> bool:
    """Triton's python backend refuses a BYTES input whose last element is cut short (the
    core only counts elements); answer the request with its message."""
    for tensor in request.inputs.values():
        if tensor.datatype != "BYTES" or tensor.data.size == 0:
            continue
        last = tensor.data.reshape(-1)[-1]
        if isinstance(last, TruncatedBytes):
            request.send(
                InferenceResponse(
                    error=invalid_arg(
                        f"incomplete string data for inference input '{tensor.name}', "
                        f"expecting string of length {last.declared_length} but only "
                        f"{len(last)} bytes available"
                    ),
                    final=True,
                )
            )
            return True
    return False


class PythonBackendFactory:
    """What the core maps `backend: "python"` to."""

    supports_gpu = True  # as Triton's: KIND_AUTO instances go to GPUs when there are some

    async def auto_complete(
        self, config: ModelConfig, model_dir: Path, version_dir: Path
    ) -> ModelConfig:
        from tritium.backends.python.auto_complete import auto_complete

        return await auto_complete(config, version_dir)

    def create(self, context: BackendContext) -> PythonBackend:
        return PythonBackend(context)
