"""A small, real in-process backend for the core's tests (registered as "tritium_test").

It implements the Backend/BackendFactory protocol for real: the core schedules batches
onto its instances, it computes outputs and sends responses through request.send().
Behaviour comes from config parameters:
  mode: "add_sub" (OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1), "identity"
        (OUTPUT0 = INPUT0) or "stream" (decoupled: INPUT0[0] responses, then a final flag)
  delay_ms: time each execution takes
  fail_load: "1" makes load() fail
In add_sub and identity modes, INPUT0[0] == -1 makes the model answer with an error (a
success for statistics, as a pb_utils.TritonError response is in Triton) and -2 makes
execute() raise (a failure).
A file `tag` in the version folder names the generation of a model (poll tests).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2

from tritium.server.backend import BackendContext, ModelConfig, RequestTimings
from tritium.server.errors import ErrorCode, TritonError
from tritium.server.types import InferenceRequest, InferenceResponse, Tensor

NAME = "tritium_test"


@dataclass
class Execution:
    model: str
    version: int
    tag: str
    instance: int
    batch_size: int  # sum of the requests' batch dimensions
    request_ids: list[str]
    start: float
    end: float = 0.0


@dataclass
class TestBackendFactory:
    """Records what its backends did, for the tests to assert on."""

    supports_gpu = False
    executions: list[Execution] = field(default_factory=list)
    backends: list[TestBackend] = field(default_factory=list)
    auto_completed: list[str] = field(default_factory=list)

    async def auto_complete(
        self, config: ModelConfig, model_dir: Path, version_dir: Path
    ) -> ModelConfig:
        self.auto_completed.append(model_dir.name)
        if not config.input:  # what a model.py's auto_complete_config would add
            config.max_batch_size = config.max_batch_size or 4
            config.input.add(name="INPUT0", data_type=model_config_pb2.TYPE_FP32, dims=[-1])
            config.output.add(name="OUTPUT0", data_type=model_config_pb2.TYPE_FP32, dims=[-1])
            config.parameters["mode"].string_value = "identity"
        return config

    def create(self, context: BackendContext) -> TestBackend:
        backend = TestBackend(context, self)
        self.backends.append(backend)
        return backend

    def batch_sizes(self, model: str) -> list[int]:
        return [e.batch_size for e in self.executions if e.model == model]


class TestBackend:
    def __init__(self, context: BackendContext, factory: TestBackendFactory) -> None:
        self.context = context
        self.factory = factory
        params = {k: v.string_value for k, v in context.config.parameters.items()}
        self.mode = params.get("mode", "add_sub")
        self.delay_s = float(params.get("delay_ms", "0")) / 1000
        self.fail_load = params.get("fail_load") == "1"
        tag_file = context.version_dir / "tag"
        self.tag = tag_file.read_text().strip() if tag_file.exists() else ""
        self.loaded = False
        self.unloaded = False

    @property
    def instance_count(self) -> int:
        return sum(g.count for g in self.context.config.instance_group)

    async def load(self) -> None:
        if self.fail_load:
            raise TritonError(f"load of '{self.context.model_name}' failed on purpose")
        self.loaded = True

    async def unload(self) -> None:
        self.unloaded = True

    async def execute(
        self, instance: int, requests: list[InferenceRequest]
    ) -> list[RequestTimings]:
        batching = self.context.config.max_batch_size > 0
        size = sum(next(iter(r.inputs.values())).shape[0] if batching else 1 for r in requests)
        record = Execution(
            self.context.model_name,
            self.context.version,
            self.tag,
            instance,
            size,
            [r.id for r in requests],
            time.monotonic(),
        )
        self.factory.executions.append(record)
        t0 = time.monotonic_ns()
        if self.mode == "stream":
            await asyncio.gather(*(self._stream(r) for r in requests))
        else:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            firsts = [float(r.inputs["INPUT0"].data.reshape(-1)[0]) for r in requests]
            if -2 in firsts:
                raise TritonError("execute failed on purpose")
            for r, first in zip(requests, firsts, strict=True):
                if first == -1:
                    r.send(InferenceResponse(error=TritonError("model says no")))
                else:
                    r.send(InferenceResponse(outputs=self._compute(r)))
        record.end = time.monotonic()
        infer_ns = time.monotonic_ns() - t0
        return [
            RequestTimings(
                compute_input_ns=1000,
                compute_infer_ns=infer_ns,
                compute_output_ns=2000,
                success=True,
            )
            for _ in requests
        ]

    def _compute(self, r: InferenceRequest) -> list[Tensor]:
        a = r.inputs["INPUT0"].data
        if self.mode == "identity":
            return [Tensor("OUTPUT0", r.inputs["INPUT0"].datatype, a.copy())]
        b = r.inputs["INPUT1"].data
        dt = r.inputs["INPUT0"].datatype
        return [Tensor("OUTPUT0", dt, a + b), Tensor("OUTPUT1", dt, a - b)]

    async def _stream(self, r: InferenceRequest) -> None:
        count = int(r.inputs["INPUT0"].data.reshape(-1)[0])
        for i in range(count):
            if r.is_cancelled():
                r.send(InferenceResponse(error=TritonError("cancelled", ErrorCode.CANCELLED)))
                return
            out = Tensor("OUTPUT0", "INT32", np.array([i], dtype=np.int32))
            r.send(InferenceResponse(outputs=[out], final=False))
            await asyncio.sleep(self.delay_s)
        r.send(InferenceResponse(final=True))
