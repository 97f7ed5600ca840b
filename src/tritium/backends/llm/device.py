"""The server's side of the engine workers: one `DeviceWorker` per device, started on the
first model placed there and stopped when its last model unloads (which frees the device
completely, CUDA context included; the next load pays a few seconds of process start).

A worker that dies (killed, out of memory) fails the in-flight requests of every model it
held and reports each model UNAVAILABLE through its sink; the next load on that device
starts a fresh worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from typing import Protocol

import zmq
import zmq.asyncio

from tritium.backends.llm.worker_protocol import (
    AbortRequests,
    AddRequest,
    LoadModel,
    ModelLoaded,
    ModelUnloaded,
    RequestRejected,
    Shutdown,
    StepOutputs,
    UnloadModel,
    WorkerInput,
    input_encoder,
    output_decoder,
)
from tritium.engine.config import EngineArgs, default_cpu_kv_bytes
from tritium.engine.messages import EngineCoreInfo, EngineCoreRequest
from tritium.server.errors import TritonError, internal, unavailable

log = logging.getLogger("tritium.llm.device")

UNLOAD_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class ModelSink(Protocol):
    """What a worker delivers to the server-side engine of one model."""

    def on_step(self, msg: StepOutputs) -> None: ...

    def on_rejected(self, request_id: str, error: str) -> None: ...

    def on_worker_died(self, reason: str) -> None: ...


class DeviceWorker:
    """One engine worker process and its two ZeroMQ sockets."""

    def __init__(self, device: str, kv_budget_bytes: int) -> None:
        self.device = device
        self.kv_budget_bytes = kv_budget_bytes
        self.kv_assigned: dict[str, int] = {}
        self.sinks: dict[str, ModelSink] = {}
        self.proc: asyncio.subprocess.Process | None = None
        self._loads: dict[str, asyncio.Future[ModelLoaded]] = {}
        self._unloads: dict[str, asyncio.Future[None]] = {}
        self._ctx = zmq.asyncio.Context.instance()
        self._dir = tempfile.mkdtemp(prefix="tritium-llm-")
        self._to_worker = self._ctx.socket(zmq.PUSH)
        self._from_worker = self._ctx.socket(zmq.PULL)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.dead_reason = ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and not self.dead_reason

    async def start(self) -> None:
        in_addr = f"ipc://{self._dir}/in"
        out_addr = f"ipc://{self._dir}/out"
        self._to_worker.setsockopt(zmq.LINGER, 0)
        self._to_worker.bind(in_addr)
        self._from_worker.bind(out_addr)
        env = dict(os.environ)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tritium.backends.llm.worker",
            "--input", in_addr, "--output", out_addr, "--device", self.device,
            env=env,
        )  # fmt: skip
        log.info("started the engine worker for %s (pid %d)", self.device, self.proc.pid)
        self._tasks = [
            asyncio.create_task(self._read(), name=f"llm-worker-read-{self.device}"),
            asyncio.create_task(self._watch(), name=f"llm-worker-watch-{self.device}"),
        ]

    def _send(self, msg: WorkerInput) -> None:
        if not self.alive:
            raise unavailable(
                f"the engine worker for {self.device} is not running: {self.dead_reason}"
            )
        self._to_worker.send(input_encoder.encode(msg), copy=False)

    # -- models --------------------------------------------------------------------------
    def kv_share(self, model_id: str, asked: int | None) -> int:
        """A KV pool size for a new model out of this device's budget: what it asks for
        (model.json kv_cache_memory_bytes), else a quarter of the budget, never more than
        what is left. The long-term design is one pool shared by every model."""
        left = self.kv_budget_bytes - sum(self.kv_assigned.values())
        want = asked if asked else self.kv_budget_bytes // 4
        if left < min(want, 16 << 20):
            raise unavailable(
                f"the KV-cache budget of {self.device} is exhausted "
                f"({self.kv_budget_bytes >> 20} MiB held by {', '.join(self.kv_assigned)})"
            )
        share = min(want, left)
        self.kv_assigned[model_id] = share
        return share

    async def load_model(self, model_id: str, args: EngineArgs, sink: ModelSink) -> EngineCoreInfo:
        """Load a model in the worker (weights are read there); raises TritonError."""
        fut: asyncio.Future[ModelLoaded] = asyncio.get_running_loop().create_future()
        self._loads[model_id] = fut
        self.sinks[model_id] = sink
        try:
            self._send(LoadModel(model_id, dataclasses.asdict(args)))
            loaded = await fut
        except BaseException:
            self.sinks.pop(model_id, None)
            self.kv_assigned.pop(model_id, None)
            raise
        finally:
            self._loads.pop(model_id, None)
        if loaded.error or loaded.info is None:
            self.sinks.pop(model_id, None)
            self.kv_assigned.pop(model_id, None)
            raise internal(f"the engine failed to load '{args.model}': {loaded.error}")
        return loaded.info

    async def unload_model(self, model_id: str) -> None:
        self.sinks.pop(model_id, None)
        self.kv_assigned.pop(model_id, None)
        if not self.alive:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unloads[model_id] = fut
        try:
            self._send(UnloadModel(model_id))
            await asyncio.wait_for(fut, UNLOAD_TIMEOUT_S)
        except (TimeoutError, TritonError):
            log.warning(
                "the engine worker for %s did not confirm unloading %s", self.device, model_id
            )
        finally:
            self._unloads.pop(model_id, None)

    def add_request(self, model_id: str, request: EngineCoreRequest) -> None:
        self._send(AddRequest(model_id, request))

    def abort(self, model_id: str, request_ids: list[str]) -> None:
        if request_ids and self.alive:
            self._send(AbortRequests(model_id, request_ids))

    @property
    def empty(self) -> bool:
        return not self.sinks and not self._loads and not self.kv_assigned

    async def stop(self) -> None:
        """Ask the worker to exit (kill it if it does not), close the sockets."""
        self._stopping = True
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(TritonError, zmq.ZMQError):
                self._send(Shutdown())
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._to_worker.close(0)
        self._from_worker.close(0)
        shutil.rmtree(self._dir, ignore_errors=True)

    # -- background ----------------------------------------------------------------------
    async def _read(self) -> None:
        while True:
            raw = await self._from_worker.recv(copy=True)
            msg = output_decoder.decode(raw)
            try:
                self._dispatch(msg)
            except Exception:  # one bad message must not stop every model's outputs
                log.exception("dispatching an engine worker message failed")

    def _dispatch(self, msg: object) -> None:
        if isinstance(msg, StepOutputs):
            sink = self.sinks.get(msg.model_id)
            if sink is not None:
                sink.on_step(msg)
        elif isinstance(msg, ModelLoaded):
            fut = self._loads.get(msg.model_id)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif isinstance(msg, RequestRejected):
            sink = self.sinks.get(msg.model_id)
            if sink is not None:
                sink.on_rejected(msg.request_id, msg.error)
        elif isinstance(msg, ModelUnloaded):
            ufut = self._unloads.get(msg.model_id)
            if ufut is not None and not ufut.done():
                ufut.set_result(None)

    async def _watch(self) -> None:
        assert self.proc is not None
        code = await self.proc.wait()
        if self._stopping:
            return
        self.dead_reason = f"the engine worker for {self.device} exited with code {code}"
        log.error("%s", self.dead_reason)
        for fut in list(self._loads.values()):
            if not fut.done():
                fut.set_exception(unavailable(self.dead_reason))
        for ufut in list(self._unloads.values()):
            if not ufut.done():
                ufut.set_result(None)
        for sink in list(self.sinks.values()):
            try:
                sink.on_worker_died(self.dead_reason)
            except Exception:
                log.exception("reporting the engine worker's death failed")


def cpu_kv_budget() -> int:
    """The CPU worker's KV budget for all its models: TRITIUM_CPU_KV_BYTES or the engine's
    default pool size (min(2 GiB, 10% of RAM))."""
    env = os.environ.get("TRITIUM_CPU_KV_BYTES")
    return int(env) if env else default_cpu_kv_bytes()


class DevicePool:
    """Every device's worker, started on demand."""

    def __init__(self) -> None:
        self.workers: dict[str, DeviceWorker] = {}
        self._lock = asyncio.Lock()

    async def acquire(
        self, device: str, model_id: str, kv_asked: int | None
    ) -> tuple[DeviceWorker, int]:
        """The live worker of `device` (starting one when there is none or it died) and the
        KV pool size reserved there for `model_id`."""
        async with self._lock:
            worker = self.workers.get(device)
            if worker is not None and not worker.alive:
                await worker.stop()
                worker = None
            if worker is None:
                budget = cpu_kv_budget() if device == "cpu" else 0
                worker = DeviceWorker(device, budget)
                await worker.start()
                self.workers[device] = worker
            try:
                return worker, worker.kv_share(model_id, kv_asked)
            except TritonError:
                if worker.empty:
                    del self.workers[device]
                    await worker.stop()
                raise

    async def release_if_empty(self, worker: DeviceWorker) -> None:
        """Stop a worker that holds no model any more."""
        async with self._lock:
            if worker.empty and self.workers.get(worker.device) is worker:
                del self.workers[worker.device]
                await worker.stop()
