"""One model instance seen from the server: a stub process and its control channel.

`StubInstance` owns the process, the socket, the requests it has open (a decoupled
request stays open after execute() returns, until its final response) and the batches in
flight. Messages from the stub are handled by one reader task; a stub that dies (EOF on
the socket) fails everything it had open and reports through `on_death`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tritium.backends.python import protocol as p
from tritium.backends.python.pb_errors import to_error_code
from tritium.backends.python.shm import ShmWriter, decode, discard, sweep
from tritium.server.errors import ErrorCode, TritonError
from tritium.server.types import InferenceRequest, InferenceResponse, Tensor

logger = logging.getLogger("tritium.backends.python")

_LOG_LEVELS = {
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "VERBOSE": logging.DEBUG,
}
CANCEL_POLL_S = 0.02
# Tensors above this size are written to shared memory off the event loop.
_OFFLOAD_BYTES = 1 << 20


@dataclass
class OpenRequest:
    request: InferenceRequest
    batch: int
    cancel_sent: bool = False


@dataclass
class StubSpec:
    """Everything needed to start one stub."""

    args: dict[str, str]  # initialize(args), all strings
    model_file: str
    version_dir: str
    decoupled: bool
    output_names: list[str]  # all outputs of the model config
    shm_dir: str
    shm_prefix: str
    env: dict[str, str] = field(default_factory=dict)


def wire_to_response(wire: p.WireResponse | None, final: bool) -> InferenceResponse:
    """A stub's response -> the core's InferenceResponse."""
    if wire is None:
        return InferenceResponse(outputs=[], final=final)
    outputs = [Tensor(t.name, t.datatype, decode(t)) for t in wire.outputs]
    error = None
    if wire.error is not None:
        error = TritonError(wire.error.message, to_error_code(wire.error.code))
    parameters = json.loads(wire.parameters) if wire.parameters not in ("", "{}") else {}
    return InferenceResponse(outputs=outputs, error=error, final=final, parameters=parameters)


def response_to_wire(writer: ShmWriter, response: InferenceResponse) -> p.WireResponse:
    """The core's InferenceResponse -> a reply to a stub (BLS)."""
    outputs = [writer.encode(t.name, t.datatype, t.data) for t in response.outputs]
    error = None
    if response.error is not None:
        error = p.WireError(response.error.message, response.error.code.name)
    return p.WireResponse(
        outputs=outputs, error=error, parameters=json.dumps(response.parameters or {})
    )


class StubInstance:
    """A running stub process serving one model instance."""

    def __init__(
        self,
        spec: StubSpec,
        handle_call: Callable[[StubInstance, Any], None],
        on_death: Callable[[StubInstance, str], None],
    ) -> None:
        self.spec = spec
        self.name = spec.args["model_instance_name"]
        self._handle_call = handle_call
        self._on_death = on_death
        self._writer = ShmWriter(spec.shm_dir, spec.shm_prefix + "p")
        self._process: asyncio.subprocess.Process | None = None
        self._stream: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._cancel_task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[p.InitDone] | None = None
        self._batches: dict[int, asyncio.Future[p.ExecuteDone | None]] = {}
        self._open: dict[int, OpenRequest] = {}
        self._keys = itertools.count(1)
        self._batch_ids = itertools.count(1)
        self._has_open = asyncio.Event()
        self.alive = False
        self.stopping = False
        self.pid = 0

    @property
    def writer(self) -> ShmWriter:
        return self._writer

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the stub and run initialize(); raise TritonError with the model's error."""
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tritium.backends.python.stub",
                "--fd",
                str(child_sock.fileno()),
                pass_fds=(child_sock.fileno(),),
                env={**os.environ, **self.spec.env},
                # Own session: a Ctrl-C meant for the server must not kill the stubs first;
                # the server shuts them down in order.
                start_new_session=True,
            )
        finally:
            child_sock.close()
        self.pid = self._process.pid
        reader, self._stream = await asyncio.open_unix_connection(sock=parent_sock)
        self._ready = asyncio.get_running_loop().create_future()
        self.alive = True
        self._reader_task = asyncio.create_task(self._read_loop(reader), name=f"stub:{self.name}")
        self._post(
            p.Init(
                args=self.spec.args,
                model_file=self.spec.model_file,
                version_dir=self.spec.version_dir,
                decoupled=self.spec.decoupled,
                shm_dir=self.spec.shm_dir,
                shm_prefix=self.spec.shm_prefix + "s",
            )
        )
        done = await self._ready
        if done.error is not None:
            await self.stop()
            raise TritonError(done.error, ErrorCode.INTERNAL)
        self._cancel_task = asyncio.create_task(self._watch_cancellation())

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Shut the stub down (finalize() runs), killing it if it does not exit in time."""
        self.stopping = True
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._post(p.Shutdown())
            try:
                await asyncio.wait_for(self._process.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self._process.kill()
                await self._process.wait()
        for task in (self._cancel_task, self._reader_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._fail_all(f"Stub process '{self.name}' was shut down")
        self.alive = False
        if self._stream is not None:
            self._stream.close()
        sweep(self.spec.shm_dir, self.spec.shm_prefix)

    @property
    def open_requests(self) -> int:
        return len(self._open)

    # -- execution ------------------------------------------------------------------------
    async def execute(self, requests: list[InferenceRequest]) -> tuple[int, p.ExecuteDone | None]:
        """Send one batch; return when execute() returned in the stub (responses may still
        be flowing for decoupled models). Returns (send time, ExecuteDone or None if the
        stub died)."""
        sent_ns = time.monotonic_ns()
        if not self.alive:
            self._fail(requests, self._unhealthy_message())
            return sent_ns, None
        batch = next(self._batch_ids)
        wire_requests = await self._encode_requests(requests)
        future: asyncio.Future[p.ExecuteDone | None] = asyncio.get_running_loop().create_future()
        self._batches[batch] = future
        for request, wire in zip(requests, wire_requests, strict=True):
            self._open[wire.key] = OpenRequest(request, batch)
        self._has_open.set()
        try:
            self._post(p.Execute(batch=batch, requests=wire_requests))
            done = await future
        except (ConnectionError, RuntimeError):
            done = None
        finally:
            self._batches.pop(batch, None)
        if done is None:
            return sent_ns, None
        if done.error is not None:
            # An exception raised by execute(): INTERNAL, as in Triton (HTTP 500).
            error = TritonError(done.error, ErrorCode.INTERNAL)
            for key, entry in list(self._open.items()):
                if entry.batch == batch:
                    del self._open[key]
                    entry.request.send(InferenceResponse(error=error, final=True))
        return sent_ns, done

    async def _encode_requests(self, requests: list[InferenceRequest]) -> list[p.WireRequest]:
        total = sum(
            t.data.nbytes for r in requests for t in r.inputs.values() if t.data.dtype != np.object_
        )
        keys = [next(self._keys) for _ in requests]
        if total > _OFFLOAD_BYTES:
            return await asyncio.to_thread(self._wire_requests, requests, keys)
        return self._wire_requests(requests, keys)

    def _wire_requests(
        self, requests: list[InferenceRequest], keys: list[int]
    ) -> list[p.WireRequest]:
        result = []
        for key, request in zip(keys, requests, strict=True):
            if request.requested_outputs is not None:
                wanted = [o.name for o in request.requested_outputs]
            else:
                wanted = list(self.spec.output_names)
            result.append(
                p.WireRequest(
                    key=key,
                    inputs=[
                        self._writer.encode(t.name, t.datatype, t.data)
                        for t in request.inputs.values()
                    ],
                    requested_output_names=wanted,
                    request_id=request.id,
                    correlation_id=request.correlation_id,
                    flags=request.flags,
                    timeout=request.timeout_us,
                    parameters=json.dumps(request.parameters or {}),
                )
            )
        return result

    # -- channel --------------------------------------------------------------------------
    def _post(self, message: Any) -> None:
        if self._stream is None or self._stream.is_closing():
            raise ConnectionError(f"stub '{self.name}' is not running")
        self._stream.write(p.frame(message))

    def post(self, message: Any) -> None:
        """Send a message to the stub, dropping it if the stub is gone."""
        with contextlib.suppress(ConnectionError):
            self._post(message)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await reader.readexactly(4)
                (length,) = p.HEADER.unpack(header)
                message = p.to_server_decoder.decode(await reader.readexactly(length))
                self._dispatch(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("stub '%s': bad message; stopping it", self.name)
            if self._process is not None:
                with contextlib.suppress(ProcessLookupError):
                    self._process.kill()
        await self._died()

    def _dispatch(self, message: p.ToServer) -> None:
        match message:
            case p.Respond(key=key, response=wire, final=final):
                entry = self._open.get(key)
                if entry is None:
                    if wire is not None:
                        for tensor in wire.outputs:
                            discard(tensor)
                    return
                if final:
                    del self._open[key]
                entry.request.send(wire_to_response(wire, final))
            case p.ExecuteDone(batch=batch):
                future = self._batches.get(batch)
                if future is not None and not future.done():
                    future.set_result(message)
            case p.InitDone():
                self.pid = message.pid or self.pid
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(message)
            case p.Log(level=level, message=text):
                logger.log(_LOG_LEVELS.get(level, logging.INFO), "%s: %s", self.name, text)
            case _:
                self._handle_call(self, message)

    async def _died(self) -> None:
        if self._stream is not None:
            self._stream.close()
        was_alive = self.alive
        self.alive = False
        returncode = None
        if self._process is not None:
            with contextlib.suppress(TimeoutError):
                returncode = await asyncio.wait_for(self._process.wait(), 5.0)
        if self._ready is not None and not self._ready.done():
            # Died while loading: the load fails; nothing was serving yet.
            detail = f" (exit code {returncode})" if returncode is not None else ""
            self._ready.set_result(
                p.InitDone(error=f"Stub process '{self.name}' exited during initialize{detail}")
            )
            return
        if self.stopping or not was_alive:
            return
        reason = self._unhealthy_message(returncode)
        self._fail_all(self._unhealthy_message())
        sweep(self.spec.shm_dir, self.spec.shm_prefix)
        if self._cancel_task is not None:
            self._cancel_task.cancel()
        self._on_death(self, reason)

    def _unhealthy_message(self, returncode: int | None = None) -> str:
        """Triton's message for requests to a dead stub (exactly this, no exit code); with
        `returncode` the longer reason reported for the model's state."""
        detail = ""
        if returncode is not None:
            detail = (
                f" (killed by signal {-returncode})"
                if returncode < 0
                else f" (exit code {returncode})"
            )
        return f"Stub process '{self.name}' is not healthy{detail}."

    def _fail(self, requests: list[InferenceRequest], reason: str) -> None:
        error = TritonError(reason, ErrorCode.INTERNAL)
        for request in requests:
            request.send(InferenceResponse(error=error, final=True))

    def _fail_all(self, reason: str) -> None:
        entries = list(self._open.values())
        self._open.clear()
        self._fail([e.request for e in entries], reason)
        for future in self._batches.values():
            if not future.done():
                future.set_result(None)

    async def _watch_cancellation(self) -> None:
        """Tell the stub when a request's client went away (request.is_cancelled())."""
        while True:
            await self._has_open.wait()
            await asyncio.sleep(CANCEL_POLL_S)
            if not self._open:
                self._has_open.clear()
                continue
            for key, entry in list(self._open.items()):
                if not entry.cancel_sent and entry.request.is_cancelled():
                    entry.cancel_sent = True
                    self.post(p.Cancel(key=key))
