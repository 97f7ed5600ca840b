"""The stub process: serves one instance of one Python model (`python -m ...stub --fd N`).

As in Triton, each model instance runs in its own process so a crashing model.py takes
down only itself. The stub loads model.py (its version folder first on sys.path, so
sibling imports work), installs pb_utils as `triton_python_backend_utils`, calls
`initialize(args)`, then executes the batches the server sends until told to shut down
(or until the server goes away: the socket reaches EOF and the stub exits).

Threads: a reader thread decodes server messages (cancellations and BLS replies are
handled right there, so a model blocked in `exec()` or polling `is_cancelled()` sees
them); execute() runs on the main thread's asyncio loop, so `async def execute` works
and tasks a decoupled model spawns keep running between batches. Responses may be sent
from any thread (decoupled models often use their own); writes are serialized by a lock.

`--auto-complete` mode runs `TritonPythonModel.auto_complete_config` once and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import itertools
import json
import os
import queue
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from tritium.backends.python import pb_utils, runtime
from tritium.backends.python import protocol as p
from tritium.backends.python.pb_errors import TritonError, TritonModelException
from tritium.backends.python.pb_types import InferenceRequest, InferenceResponse, Tensor
from tritium.backends.python.shm import ShmWriter, decode, discard

_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def format_exception(exc: BaseException) -> str:
    """pybind11's rendering, which Triton's error messages carry:
    '<Type>: <msg>\\n\\nAt:\\n  <file>(<line>): <function>\\n' (innermost frame first),
    leaving out the stub's own frames."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith(_PACKAGE_DIR)
    ]
    lines = [f"{type(exc).__name__}: {exc}", "", "At:"]
    lines += [f"  {f.filename}({f.lineno}): {f.name}" for f in reversed(frames)]
    return "\n".join(lines) + "\n"


def load_model_module(model_file: str, version_dir: str) -> ModuleType:
    """Import model.py as module `model`, with its folder first on sys.path."""
    if version_dir not in sys.path:
        sys.path.insert(0, version_dir)
    spec = importlib.util.spec_from_file_location("model", model_file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {model_file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["model"] = module
    spec.loader.exec_module(module)
    return module


def install_pb_utils() -> None:
    sys.modules["triton_python_backend_utils"] = pb_utils


class _PendingCall:
    """A BLS or server call waiting for replies from the reader thread."""

    def __init__(self) -> None:
        self.replies: queue.SimpleQueue[p.BlsReply | p.CallReply | None] = queue.SimpleQueue()


class Stub:
    """One model instance: the control channel, the model object, the open requests."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._rfile = sock.makefile("rb", buffering=1 << 16)
        self._write_lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._open: dict[int, InferenceRequest] = {}
        self._open_lock = threading.Lock()
        self._calls: dict[int, _PendingCall] = {}
        self._call_ids = itertools.count(1)
        self._model: Any = None
        self._instance_name = ""
        self._requested: dict[int, set[str]] = {}
        self._writer: ShmWriter | None = None
        self.model_dir = ""
        self.decoupled = False

    # -- channel --------------------------------------------------------------------------
    def _read(self) -> p.ToStub | None:
        header = self._rfile.read(4)
        if len(header) < 4:
            return None
        (length,) = p.HEADER.unpack(header)
        body = self._rfile.read(length)
        if len(body) < length:
            return None
        return p.to_stub_decoder.decode(body)

    def _post(self, message: Any) -> None:
        self._post_frames([p.frame(message)])

    def _post_frames(self, frames: list[bytes]) -> None:
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        with self._write_lock:
            self._sock.sendall(data)

    # -- lifecycle ------------------------------------------------------------------------
    def run(self) -> None:
        init = self._read()
        if not isinstance(init, p.Init):
            return
        self._writer = ShmWriter(init.shm_dir, init.shm_prefix)
        self.model_dir = init.args.get("model_repository", "")
        self.decoupled = init.decoupled
        self._instance_name = init.args.get("model_instance_name", "")
        install_pb_utils()
        runtime.install(self)
        # The reader must run before initialize(): a model may call BLS or
        # pb_utils.load_model while initializing.
        threading.Thread(target=self._reader, name="stub-reader", daemon=True).start()
        try:
            module = load_model_module(init.model_file, init.version_dir)
            self._model = module.TritonPythonModel()
            if hasattr(self._model, "initialize"):
                result = self._model.initialize(dict(init.args))
                if inspect.isawaitable(result):
                    self._loop.run_until_complete(result)
        except BaseException as exc:
            self._post(p.InitDone(error=format_exception(exc), pid=os.getpid()))
            self._exit(1)
        self._post(p.InitDone(pid=os.getpid()))
        self._loop.run_forever()  # until Shutdown stops it
        self._shutdown()

    def _exit(self, code: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        # os._exit: user threads (non-daemon) must not keep a finished stub alive.
        os._exit(code)

    def _shutdown(self) -> None:
        if self._model is not None and hasattr(self._model, "finalize"):
            try:
                result = self._model.finalize()
                if inspect.isawaitable(result):
                    self._loop.run_until_complete(result)
            except BaseException as exc:
                self.log("ERROR", f"finalize() failed: {format_exception(exc)}")
        self._exit(0)

    def _reader(self) -> None:
        while True:
            try:
                message = self._read()
            except (OSError, ValueError):
                message = None
            if message is None:
                self._exit(0)  # the server went away
            match message:
                case p.Execute():
                    self._loop.call_soon_threadsafe(self._start_batch, message)
                case p.Cancel(key=key):
                    with self._open_lock:
                        request = self._open.get(key)
                    if request is not None:
                        request._cancelled = True
                case p.BlsReply(call=call) | p.CallReply(call=call):
                    pending = self._calls.get(call)
                    if pending is not None:
                        pending.replies.put(message)
                    elif isinstance(message, p.BlsReply):
                        # The model stopped reading this BLS stream: drop its tensors.
                        for tensor in message.response.outputs:
                            discard(tensor)
                case p.Shutdown():
                    self._loop.call_soon_threadsafe(self._loop.stop)
                    threading.Thread(target=self._await_shutdown, daemon=True).start()

    def _await_shutdown(self) -> None:
        """Exit even if execute() or a model thread never returns."""
        time.sleep(float(os.environ.get("TRITIUM_STUB_FINALIZE_TIMEOUT_S", "30")))
        self._exit(0)

    # -- execution ------------------------------------------------------------------------
    def _start_batch(self, message: p.Execute) -> None:
        self._loop.create_task(self._run_batch(message))

    def _to_request(self, wire: p.WireRequest) -> InferenceRequest:
        inputs = [Tensor(t.name, decode(t), triton_dtype=t.datatype) for t in wire.inputs]
        request = InferenceRequest(
            request_id=wire.request_id,
            correlation_id=wire.correlation_id,
            inputs=inputs,
            requested_output_names=wire.requested_output_names,
            flags=wire.flags,
            timeout=wire.timeout,
            parameters=wire.parameters,
        )
        request._key = wire.key
        with self._open_lock:
            self._open[wire.key] = request
        return request

    async def _run_batch(self, message: p.Execute) -> None:
        requests = [self._to_request(w) for w in message.requests]
        # The returned responses and ExecuteDone leave in one write: one wake-up of the
        # server per batch instead of one per message.
        frames: list[bytes] = []
        start = time.monotonic_ns()
        end = 0
        error: str | None = None
        try:
            result = self._model.execute(requests)
            if inspect.isawaitable(result):
                if self.decoupled:
                    # As in Triton: a decoupled coroutine runs on while the instance takes
                    # the next batch; its responses go through the senders.
                    self._loop.create_task(self._finish_async(result, requests))
                    result = None
                else:
                    result = await result
            # Sending the returned responses is compute_output, not compute_infer.
            end = time.monotonic_ns()
            if result is not None:
                self._send_returned(requests, result, frames)
        except BaseException as exc:
            error = self._execute_error(exc)
            # The server answers every request still open with this error.
            with self._open_lock:
                for request in requests:
                    key = request._key
                    if (
                        key is not None
                        and self._open.pop(key, None) is not None
                        and request._sender
                    ):
                        request._sender._closed = True
        done = p.ExecuteDone(
            batch=message.batch, start_ns=start, end_ns=end or time.monotonic_ns(), error=error
        )
        frames.append(p.frame(done))
        self._post_frames(frames)

    def _execute_error(self, exc: BaseException) -> str:
        return (
            f"Failed to process the request(s) for model '{self._instance_name}', "
            f"message: {format_exception(exc)}"
        )

    async def _finish_async(self, coroutine: Any, requests: list[InferenceRequest]) -> None:
        try:
            await coroutine
        except BaseException as exc:
            error = TritonError(self._execute_error(exc), TritonError.INTERNAL)
            for request in requests:
                if request._key in self._open:
                    self.send_response(request, InferenceResponse([], error=error), True)

    def _send_returned(
        self, requests: list[InferenceRequest], responses: Any, frames: list[bytes]
    ) -> None:
        if not isinstance(responses, list | tuple):
            raise TritonModelException("Expected a list in the execute return")
        if len(responses) != len(requests):
            raise TritonModelException(
                "Number of InferenceResponse objects do not match number of InferenceRequest "
                f"objects. InferenceRequest(s) size is:{len(requests)}, and "
                f"InferenceResponse(s) size is:{len(responses)}\n"
            )
        for request, response in zip(requests, responses, strict=True):
            if response is None or request._key not in self._open:
                continue  # answered through its response sender
            if not isinstance(response, InferenceResponse):
                raise TritonModelException(
                    "Expected an 'InferenceResponse' object in the execute function return list"
                )
            self.send_response(request, response, True, frames)

    # -- StubServices (what pb_utils calls) -----------------------------------------------
    def _encode_response(self, response: InferenceResponse, wanted: list[str]) -> p.WireResponse:
        assert self._writer is not None
        keep = set(wanted)
        outputs = [
            self._writer.encode(t.name(), t.datatype, t.raw_array())
            for t in response.output_tensors()
            if not keep or t.name() in keep
        ]
        error = response.error()
        wire_error = None if error is None else p.WireError(error.message(), error.code_name())
        return p.WireResponse(outputs=outputs, error=wire_error, parameters=response.parameters())

    def send_response(
        self,
        request: InferenceRequest,
        response: InferenceResponse | None,
        final: bool,
        frames: list[bytes] | None = None,
    ) -> None:
        """Send one response now, or append its frame to `frames` (sent by the caller)."""
        key = request._key
        assert key is not None
        wire = (
            None
            if response is None
            else self._encode_response(response, request.requested_output_names())
        )
        if final:
            with self._open_lock:
                self._open.pop(key, None)
            if request._sender is not None:
                request._sender._closed = True
        message = p.Respond(key=key, response=wire, final=final)
        if frames is not None:
            frames.append(p.frame(message))
        else:
            self._post(message)

    def bls(self, request: InferenceRequest) -> Iterator[InferenceResponse]:
        assert self._writer is not None
        call = next(self._call_ids)
        pending = _PendingCall()
        self._calls[call] = pending
        inputs = [
            self._writer.encode(t.name(), t.datatype, t.raw_array()) for t in request.inputs()
        ]
        wire = p.WireRequest(
            key=call,
            inputs=inputs,
            requested_output_names=request.requested_output_names(),
            request_id=request.request_id(),
            correlation_id=request.correlation_id(),
            flags=request.flags(),
            timeout=request.timeout(),
            parameters=request.parameters(),
            model_name=request.model_name(),
            model_version=request.model_version(),
        )
        self._post(p.BlsCall(call=call, request=wire, decoupled=True))
        return self._bls_responses(call, pending)

    def _bls_responses(self, call: int, pending: _PendingCall) -> Iterator[InferenceResponse]:
        try:
            while True:
                reply = pending.replies.get()
                assert isinstance(reply, p.BlsReply)
                yield self._decode_response(reply.response)
                if reply.final:
                    return
        finally:
            self._calls.pop(call, None)

    @staticmethod
    def _decode_response(wire: p.WireResponse) -> InferenceResponse:
        outputs = [Tensor(t.name, decode(t), triton_dtype=t.datatype) for t in wire.outputs]
        error = (
            None
            if wire.error is None
            else TritonError.from_code_name(wire.error.message, wire.error.code)
        )
        return InferenceResponse(outputs, error=error, parameters=wire.parameters)

    def call(self, op: str, **args: Any) -> Any:
        call = next(self._call_ids)
        pending = _PendingCall()
        self._calls[call] = pending
        try:
            self._post(p.ServerCall(call=call, op=op, args=args))
            reply = pending.replies.get()
        finally:
            self._calls.pop(call, None)
        assert isinstance(reply, p.CallReply)
        if reply.error is not None:
            raise TritonModelException(reply.error.message)
        return reply.value

    def update_metric(self, metric: int, op: str, value: float) -> None:
        self._post(p.MetricUpdate(metric=metric, op=op, value=value))

    def log(self, level: str, message: str) -> None:
        self._post(p.Log(level=level, message=message))


def auto_complete(model_file: str, version_dir: str, input_path: str, output_path: str) -> int:
    """Run TritonPythonModel.auto_complete_config on the config JSON in `input_path`."""
    install_pb_utils()
    try:
        module = load_model_module(model_file, version_dir)
        config = pb_utils.ModelConfig(Path(input_path).read_text())
        model_class = module.TritonPythonModel
        if hasattr(model_class, "auto_complete_config"):
            result = model_class.auto_complete_config(config)
            if result is not None:
                config = result
        Path(output_path).write_text(json.dumps({"config": config.as_dict()}))
        return 0
    except BaseException as exc:
        Path(output_path).write_text(json.dumps({"error": format_exception(exc)}))
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int, help="the control socket, inherited from the server")
    parser.add_argument("--auto-complete", action="store_true")
    parser.add_argument("--model-file")
    parser.add_argument("--version-dir")
    parser.add_argument("--input")
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    if args.auto_complete:
        return auto_complete(args.model_file, args.version_dir, args.input, args.output)
    sock = socket.socket(fileno=args.fd)
    Stub(sock).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
