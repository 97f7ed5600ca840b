"""The process boundary between the frontend (AsyncLLM) and an EngineCore.

`EngineCoreProc` runs the core's busy loop (inputs -> step -> outputs) in its own process,
talking msgpack-encoded msgspec structs over two ZeroMQ PUSH/PULL sockets, as vLLM V1
does. `InprocCoreClient` runs the same loop in a thread (tests, notebooks). Both give the
frontend the same four async calls. A future worker that hosts several models per device
replaces the busy loop here and nothing else.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import tempfile
import threading
import traceback
import uuid
from collections.abc import Callable
from typing import Protocol

import msgspec
import zmq
import zmq.asyncio

from tritium.engine.config import EngineArgs
from tritium.engine.engine_core import EngineCore
from tritium.engine.messages import (
    AbortRequests,
    AddRequest,
    EngineCoreInfo,
    EngineCoreInput,
    EngineCoreOutput,
    EngineCoreOutputs,
    EngineCoreRequest,
    SchedulerStats,
    Shutdown,
)

STARTUP_TIMEOUT_S = 600


class EngineDeadError(RuntimeError):
    """The engine core failed; every live request fails with it."""


class EngineCoreError(msgspec.Struct, tag=True, array_like=True):
    message: str


class Ready(msgspec.Struct, tag=True, array_like=True):
    info: EngineCoreInfo


CoreMessage = EngineCoreOutputs | EngineCoreError | Ready


def run_busy_loop(
    core: EngineCore,
    get_input: Callable[[bool], EngineCoreInput | None],
    put_output: Callable[[EngineCoreOutputs], None],
) -> None:
    """Drain inputs, step while there is work, block for input when idle."""
    while True:
        msg = get_input(not core.has_unfinished_requests())
        idle_change = False
        while msg is not None:
            if isinstance(msg, Shutdown):
                return
            if isinstance(msg, AddRequest):
                try:
                    core.add_request(msg.request)
                except ValueError:  # the frontend validates; refuse quietly as an abort
                    put_output(
                        EngineCoreOutputs(
                            [EngineCoreOutput(msg.request.request_id, [], finish_reason="abort")]
                        )
                    )
            else:
                core.abort_requests(msg.request_ids)
            idle_change = True
            msg = get_input(False)
        if core.has_unfinished_requests():
            put_output(core.step())
        elif idle_change:
            put_output(EngineCoreOutputs([], core.get_stats()))


class CoreClient(Protocol):
    """What AsyncLLM needs from an engine core, wherever it runs."""

    info: EngineCoreInfo

    async def add_request_async(self, request: EngineCoreRequest) -> None: ...
    async def abort_requests_async(self, request_ids: list[str]) -> None: ...
    async def get_output_async(self) -> EngineCoreOutputs: ...
    async def shutdown_async(self) -> None: ...


class InprocCoreClient:
    """The engine core in a background thread of this process."""

    def __init__(self, args: EngineArgs, core: EngineCore | None = None) -> None:
        self.core = core or EngineCore(args)
        self.info = self.core.info
        self._inputs: queue.Queue[EngineCoreInput] = queue.Queue()
        self._outputs: asyncio.Queue[EngineCoreOutputs | BaseException] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="tritium-engine-core", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        def get_input(block: bool) -> EngineCoreInput | None:
            try:
                return self._inputs.get(block=block)
            except queue.Empty:
                return None

        def put(item: EngineCoreOutputs | BaseException) -> None:
            try:
                self._loop.call_soon_threadsafe(self._outputs.put_nowait, item)
            except RuntimeError:
                pass  # the event loop is closed; nobody is listening

        try:
            run_busy_loop(self.core, get_input, put)
        except Exception as exc:
            put(EngineDeadError(f"engine core failed: {exc!r}"))

    async def add_request_async(self, request: EngineCoreRequest) -> None:
        self._inputs.put(AddRequest(request))

    async def abort_requests_async(self, request_ids: list[str]) -> None:
        self._inputs.put(AbortRequests(request_ids))

    async def get_output_async(self) -> EngineCoreOutputs:
        item = await self._outputs.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def shutdown_async(self) -> None:
        await asyncio.to_thread(self.shutdown)

    def shutdown(self) -> None:
        self._inputs.put(Shutdown())
        self._thread.join(timeout=30)


def _engine_core_main(args: EngineArgs, in_addr: str, out_addr: str) -> None:
    """Entry point of the engine core process."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(in_addr)
    push = ctx.socket(zmq.PUSH)
    push.connect(out_addr)
    enc = msgspec.msgpack.Encoder()
    dec = msgspec.msgpack.Decoder(EngineCoreInput)
    try:
        core = EngineCore(args)
        push.send(enc.encode(Ready(core.info)))

        def get_input(block: bool) -> EngineCoreInput | None:
            if not block and not pull.poll(0):
                return None
            return dec.decode(pull.recv())

        run_busy_loop(core, get_input, lambda o: push.send(enc.encode(o)))
    except Exception:
        push.send(enc.encode(EngineCoreError(traceback.format_exc())))
    finally:
        push.close(linger=1000)
        pull.close(linger=0)
        ctx.term()


class MPCoreClient:
    """The engine core in its own process, so the frontend's GIL never stalls a step."""

    def __init__(self, args: EngineArgs) -> None:
        base = os.path.join(tempfile.gettempdir(), f"tritium-core-{uuid.uuid4().hex[:12]}")
        self._paths = [base + "-in", base + "-out"]
        in_addr, out_addr = (f"ipc://{p}" for p in self._paths)
        self._ctx = zmq.asyncio.Context()
        self._push = self._ctx.socket(zmq.PUSH)
        self._push.bind(in_addr)
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.bind(out_addr)
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(CoreMessage)
        mp = multiprocessing.get_context("spawn")
        self.proc = mp.Process(
            target=_engine_core_main,
            args=(args, in_addr, out_addr),
            daemon=True,
            name="tritium-engine-core",
        )
        self.proc.start()
        self.info: EngineCoreInfo

    async def wait_ready(self) -> None:
        """Wait for the core to load its model; raise EngineDeadError if it fails."""
        if not await self._pull.poll(STARTUP_TIMEOUT_S * 1000):
            self.shutdown()
            raise EngineDeadError("the engine core did not start in time")
        msg = self._dec.decode(await self._pull.recv())
        if isinstance(msg, EngineCoreError):
            self.shutdown()
            raise EngineDeadError(f"the engine core failed to start:\n{msg.message}")
        assert isinstance(msg, Ready)
        self.info = msg.info

    async def add_request_async(self, request: EngineCoreRequest) -> None:
        await self._push.send(self._enc.encode(AddRequest(request)))

    async def abort_requests_async(self, request_ids: list[str]) -> None:
        await self._push.send(self._enc.encode(AbortRequests(request_ids)))

    async def get_output_async(self) -> EngineCoreOutputs:
        while True:
            if await self._pull.poll(1000):
                msg = self._dec.decode(await self._pull.recv())
                if isinstance(msg, EngineCoreError):
                    raise EngineDeadError(f"engine core failed:\n{msg.message}")
                if isinstance(msg, EngineCoreOutputs):
                    return msg
            elif not self.proc.is_alive():
                raise EngineDeadError(f"the engine core process exited (code {self.proc.exitcode})")

    async def shutdown_async(self) -> None:
        """Ask the core to stop, then clean up."""
        if self.proc.is_alive():
            await self._push.send(self._enc.encode(Shutdown()))
            await asyncio.to_thread(self.proc.join, 10)
        self.shutdown()

    def shutdown(self) -> None:
        """Stop the core process (terminating it if it did not stop) and close sockets."""
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(timeout=5)
        self._push.close(linger=0)
        self._pull.close(linger=0)
        self._ctx.term()
        for p in self._paths:
            if os.path.exists(p):
                os.unlink(p)


__all__ = ["CoreClient", "EngineDeadError", "InprocCoreClient", "MPCoreClient", "SchedulerStats"]
