"""The engine worker: one process per device (the CPU, or each GPU) holding every LLM
placed on that device, each an EngineCore, stepped in turn.

    python -m tritium.backends.llm.worker --input ipc://... --output ipc://... --device cpu

The loop drains pending messages (load, unload, add, abort), then gives every model that
has work one step and sends that step's outputs. Text never enters this process: the
server tokenizes and detokenizes, so the server's GIL never stalls a decode step and this
loop does nothing but tensor work between messages.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time
import traceback

import zmq

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
    WorkerOutput,
    input_decoder,
    output_encoder,
)
from tritium.engine.config import EngineArgs
from tritium.engine.engine_core import EngineCore
from tritium.engine.messages import EngineCoreOutputs

log = logging.getLogger("tritium.llm.worker")

IDLE_POLL_MS = 500  # how often an idle worker checks that its server is still alive


class Worker:
    """The models of one device and the loop that steps them."""

    def __init__(self, pull: zmq.Socket, push: zmq.Socket) -> None:
        self.pull = pull
        self.push = push
        self.cores: dict[str, EngineCore] = {}
        self.seen: dict[str, set[str]] = {}  # per model: requests already scheduled once
        self.parent = os.getppid()
        self.running = True

    def send(self, msg: WorkerOutput) -> None:
        self.push.send(output_encoder.encode(msg), copy=False)

    # -- messages ----------------------------------------------------------------------
    def handle(self, raw: bytes) -> None:
        msg = input_decoder.decode(raw)
        if isinstance(msg, AddRequest):
            core = self.cores.get(msg.model_id)
            if core is None:
                self.send(RequestRejected(msg.model_id, msg.request.request_id, "model not loaded"))
                return
            try:
                core.add_request(msg.request)
            except ValueError as exc:
                self.send(RequestRejected(msg.model_id, msg.request.request_id, str(exc)))
        elif isinstance(msg, AbortRequests):
            core = self.cores.get(msg.model_id)
            if core is not None:
                core.abort_requests(msg.request_ids)
                self.seen[msg.model_id].difference_update(msg.request_ids)
                # Fresh gauges (blocks freed) even when no step follows.
                self.send(StepOutputs(msg.model_id, EngineCoreOutputs([], core.get_stats())))
        elif isinstance(msg, LoadModel):
            self.load(msg)
        elif isinstance(msg, UnloadModel):
            self.cores.pop(msg.model_id, None)
            self.seen.pop(msg.model_id, None)
            _free_memory()
            self.send(ModelUnloaded(msg.model_id))
        elif isinstance(msg, Shutdown):
            self.running = False

    def load(self, msg: LoadModel) -> None:
        try:
            core = EngineCore(EngineArgs(**msg.engine_args))
        except Exception as exc:  # any load failure is reported, the worker lives on
            log.error("loading %s failed:\n%s", msg.model_id, traceback.format_exc())
            _free_memory()
            self.send(ModelLoaded(msg.model_id, None, f"{type(exc).__name__}: {exc}"))
            return
        threads = os.environ.get("TRITIUM_LLM_THREADS")
        if threads:  # the engine takes every core; a shared machine may want fewer
            import torch

            torch.set_num_threads(int(threads))
        self.cores[msg.model_id] = core
        self.seen[msg.model_id] = set()
        self.send(ModelLoaded(msg.model_id, core.info))

    # -- stepping ----------------------------------------------------------------------
    def step_all(self) -> None:
        """One step of every model with work, in turn."""
        for model_id, core in list(self.cores.items()):
            if not core.has_unfinished_requests():
                continue
            seen = self.seen[model_id]
            waiting = {s.request_id for s in core.scheduler.waiting}
            start = time.monotonic_ns()
            out = core.step()
            still = {s.request_id for s in core.scheduler.waiting}
            scheduled = [r for r in waiting - still if r not in seen]
            seen.update(scheduled)
            for o in out.outputs:
                if o.finish_reason is not None:
                    seen.discard(o.request_id)
            self.send(StepOutputs(model_id, out, scheduled, start))

    def busy(self) -> bool:
        return any(c.has_unfinished_requests() for c in self.cores.values())

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        while self.running:
            timeout = 0 if self.busy() else IDLE_POLL_MS
            while self.running and poller.poll(timeout):
                self.handle(self.pull.recv(copy=True))
                timeout = 0
            if os.getppid() != self.parent:
                return  # the server is gone: nobody will read our outputs
            if self.running:
                self.step_all()


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tritium engine worker (one per device)")
    parser.add_argument("--input", required=True, help="ZeroMQ address to PULL requests from")
    parser.add_argument("--output", required=True, help="ZeroMQ address to PUSH outputs to")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(levelname).1s%(asctime)s %(process)d llm-worker[{args.device}]] %(message)s",
        stream=sys.stderr,
    )
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(args.input)
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(args.output)
    try:
        Worker(pull, push).run()
    finally:
        pull.close(0)
        push.close()
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
