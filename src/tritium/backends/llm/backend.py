"""The LLM backend (`backend: "vllm"`): Triton tensors <-> engine requests.

Each loaded model version is an `LLMBackend`: its weights and EngineCore live in the
device's engine worker process, its tokenizer and detokenizer here (`LLMEngine`).

Scheduling: the core's scheduler must never serialize LLM requests (the engine batches
continuously), so `instance_count` is large and every request reaches `execute` at once;
admission is the engine's: beyond max_num_seqs running plus `max_waiting` queued, a
request is answered UNAVAILABLE at once rather than left to wait without bound.

Timings, for nv_inference_queue_duration_us / nv_inference_compute_infer_duration_us:
queue_ns is the time from `execute` until the engine first schedules the request (the
start of the step that computes its first prompt tokens, reported by the worker), i.e. the
wait for a seat in the running batch; compute_infer_ns is from then until the final
output (prefill + decode); compute_input_ns is tokenization, compute_output_ns building
response tensors. Under load queue_ns grows while compute_infer_ns stays, which is what
the autoscaling ratio rate(queue)/rate(compute_infer) needs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from tritium.backends.llm.api import LLM_OUTPUT, LLMCall, llm_call_of
from tritium.backends.llm.conventions import (
    Convention,
    ResponseBuilder,
    auto_complete_config,
    detect_convention,
    parse_inputs,
)
from tritium.backends.llm.device import DevicePool, DeviceWorker
from tritium.backends.llm.engine_args import read_engine_args
from tritium.backends.llm.engine_client import LLMEngine, RequestStream
from tritium.backends.llm.metrics import VllmMetrics
from tritium.engine.config import EngineArgs
from tritium.engine.engine_core import load_engine_checkpoint
from tritium.engine.messages import EngineCoreInfo
from tritium.engine.outputs import RequestOutput
from tritium.engine.sampling_params import RequestOutputKind
from tritium.server.backend import BackendContext, ModelConfig, RequestTimings
from tritium.server.errors import ErrorCode, TritonError, internal, invalid_arg, unavailable
from tritium.server.types import InferenceRequest, InferenceResponse

log = logging.getLogger("tritium.llm")

# Concurrent executions the core may start; admission control is ours (max_waiting).
INSTANCE_COUNT = 4096
CANCEL_POLL_S = 0.05  # how often a request waiting for its next output checks is_cancelled()
_KIND = model_config_pb2.ModelInstanceGroup.Kind


def _config_param(config: ModelConfig, key: str) -> str | None:
    p = config.parameters.get(key)
    return p.string_value if p is not None and p.string_value else None


class LLMBackend:
    """One loaded LLM model version."""

    def __init__(self, context: BackendContext, pool: DevicePool) -> None:
        self.context = context
        self.pool = pool
        self.config = context.config
        self.name = context.model_name
        self.convention: Convention | None = None
        self.args: EngineArgs | None = None
        self.engine: LLMEngine | None = None
        self.worker: DeviceWorker | None = None
        self.metrics = VllmMetrics.for_registry(context.metrics_registry)
        self.model_id = f"{self.name}/{context.version}/{uuid.uuid4().hex[:8]}"
        self.max_inflight = 0
        self.tokenizer: object = None

    @property
    def instance_count(self) -> int:
        return INSTANCE_COUNT

    def device(self, args: EngineArgs) -> str:
        """Where the model runs: a KIND_GPU group's first GPU, KIND_CPU the CPU, otherwise
        what the engine arguments say (auto: the first GPU when there is one)."""
        groups = list(self.config.instance_group)
        if groups and groups[0].kind == _KIND.KIND_GPU and groups[0].gpus:
            return f"cuda:{groups[0].gpus[0]}"
        if groups and groups[0].kind == _KIND.KIND_CPU:
            return "cpu"
        dev = args.resolved_device()
        if dev.type == "cuda":
            return f"cuda:{dev.index or 0}"
        return "cpu"

    async def load(self) -> None:
        self.convention = detect_convention(self.config)
        args = read_engine_args(self.context.version_dir)
        device = self.device(args)
        args.device = device
        waiting = _config_param(self.config, "max_waiting_requests")
        try:
            max_waiting = int(waiting) if waiting else 4 * args.max_num_seqs
        except ValueError as exc:
            raise invalid_arg(
                f"parameter max_waiting_requests must be an integer, got {waiting!r}"
            ) from exc
        self.max_inflight = args.max_num_seqs + max_waiting
        try:
            # The tokenizer (and, for GGUF, the one-time conversion the worker then reuses).
            ckpt = await asyncio.to_thread(load_engine_checkpoint, args, False)
        except Exception as exc:
            raise internal(f"cannot load '{args.model}': {type(exc).__name__}: {exc}") from exc
        self.args, self.tokenizer = args, ckpt.tokenizer
        self.engine = await self._start_engine()
        self.metrics.add_model(self.name, self._stats)

    async def _start_engine(self) -> LLMEngine:
        """Place the model on its device's worker (starting one if needed) and load it there."""
        args = self.args
        assert args is not None
        worker, kv_bytes = await self.pool.acquire(
            args.device, self.model_id, args.kv_cache_memory_bytes
        )
        if args.device == "cpu":
            args.kv_cache_memory_bytes = kv_bytes
        placeholder = EngineCoreInfo(max_model_len=0, num_blocks=0, block_size=args.block_size,
                                     vocab_size=0, eos_token_ids=[])  # fmt: skip
        engine = LLMEngine(
            self.name, self.model_id, worker, self.tokenizer, placeholder, self.metrics
        )
        engine_on_death = engine.on_worker_died

        def on_death(reason: str) -> None:
            engine_on_death(reason)
            self.context.report_failure(reason)

        engine.on_worker_died = on_death  # type: ignore[method-assign]
        try:
            engine.info = await worker.load_model(self.model_id, args, engine)
        except BaseException:
            await self.pool.release_if_empty(worker)
            raise
        self.worker = worker
        log.info(
            "loaded LLM '%s' (%s) on %s: max_model_len %d, %d KV blocks",
            self.name, args.model, args.device, engine.info.max_model_len, engine.info.num_blocks,
        )  # fmt: skip
        return engine

    def _stats(self):
        return self.engine.stats if self.engine is not None else None

    async def unload(self) -> None:
        engine, worker = self.engine, self.worker
        self.engine = None
        if engine is not None:
            engine.fail_all(unavailable(f"model '{self.name}' is unloading"))
        self.metrics.remove_model(self.name, self._stats)
        if worker is not None:
            await worker.unload_model(self.model_id)
            await self.pool.release_if_empty(worker)

    # -- execution -----------------------------------------------------------------------
    async def execute(
        self, instance: int, requests: list[InferenceRequest]
    ) -> list[RequestTimings]:
        return list(await asyncio.gather(*(self._run(r) for r in requests)))

    async def _run(self, request: InferenceRequest) -> RequestTimings:
        start = time.monotonic_ns()
        t = RequestTimings()
        stream: RequestStream | None = None
        try:
            engine = self.engine
            if engine is None or engine.dead_reason:
                raise unavailable(
                    engine.dead_reason if engine else f"model '{self.name}' is not loaded"
                )
            if engine.num_unfinished >= self.max_inflight:
                raise unavailable(
                    f"Exceeds maximum queue size: model '{self.name}' has {engine.num_unfinished} "
                    "requests in its engine"
                )
            call = llm_call_of(request.parameters)
            if call is not None:
                stream = await self._run_call(engine, request, call, t, start)
            else:
                stream = await self._run_tensors(engine, request, t, start)
        except TritonError as exc:
            request.send(InferenceResponse(error=exc, final=True))
        except Exception as exc:  # a bug here must still end the request
            log.exception("LLM request failed")
            request.send(
                InferenceResponse(error=internal(f"{type(exc).__name__}: {exc}"), final=True)
            )
        end = time.monotonic_ns()
        begun = start + t.compute_input_ns
        if stream is not None and stream.scheduled_ns:
            scheduled = min(max(stream.scheduled_ns, begun), end)
        elif stream is not None and stream.first_token_ns:
            scheduled = stream.first_token_ns
        else:
            scheduled = begun
        t.queue_ns = scheduled - begun
        t.compute_infer_ns = max(end - scheduled - t.compute_output_ns, 0)
        return t

    async def _next(
        self, engine: LLMEngine, stream: RequestStream, request: InferenceRequest
    ) -> RequestOutput | None:
        """The next output, or None when the client cancelled (the engine aborts it and the
        request is answered CANCELLED)."""
        while True:
            if request.is_cancelled():
                engine.abort(stream.request_id)
                request.send(
                    InferenceResponse(
                        error=TritonError("Request was cancelled", ErrorCode.CANCELLED)
                    )
                )
                return None
            try:
                return await stream.get(CANCEL_POLL_S)
            except TimeoutError:
                continue

    async def _run_tensors(
        self, engine: LLMEngine, request: InferenceRequest, t: RequestTimings, start: int
    ) -> RequestStream | None:
        assert self.convention is not None
        inputs = parse_inputs(self.convention, request)
        params = inputs.params
        params.output_kind = (
            RequestOutputKind.CUMULATIVE if inputs.stream else RequestOutputKind.FINAL_ONLY
        )
        token_ids = engine.encode(inputs.prompt)
        t.compute_input_ns = time.monotonic_ns() - start
        stream = engine.add_request(
            uuid.uuid4().hex, inputs.prompt, token_ids, params, request.priority
        )
        builder = ResponseBuilder(self.convention, inputs)
        while True:
            out = await self._next(engine, stream, request)
            if out is None:
                return stream
            if inputs.stream or out.finished:
                t0 = time.monotonic_ns()
                tensors = builder.tensors(out, prepend=inputs.prepend_input and not inputs.stream)
                t.compute_output_ns += time.monotonic_ns() - t0
                request.send(InferenceResponse(outputs=tensors, final=out.finished))
            if out.finished:
                return stream

    async def _run_call(
        self,
        engine: LLMEngine,
        request: InferenceRequest,
        call: LLMCall,
        t: RequestTimings,
        start: int,
    ) -> RequestStream | None:
        if call.prompt_token_ids is not None:
            token_ids = list(call.prompt_token_ids)
            prompt = call.prompt
        elif call.messages is not None:
            token_ids = engine.apply_chat_template(
                call.messages, **(call.chat_template_kwargs or {})
            )
            prompt = None
        elif call.prompt is not None:
            token_ids, prompt = engine.encode(call.prompt), call.prompt
        else:
            raise invalid_arg("a prompt is required")
        params = call.params
        params.output_kind = (
            RequestOutputKind.DELTA if call.stream else RequestOutputKind.FINAL_ONLY
        )
        t.compute_input_ns = time.monotonic_ns() - start
        stream = engine.add_request(uuid.uuid4().hex, prompt, token_ids, params, request.priority)
        while True:
            out = await self._next(engine, stream, request)
            if out is None:
                return stream
            request.send(InferenceResponse(parameters={LLM_OUTPUT: out}, final=out.finished))
            if out.finished:
                return stream


class LLMBackendFactory:
    """Creates LLM backends; owns the per-device engine workers of this server process."""

    supports_gpu = True

    def __init__(self) -> None:
        self.pool = DevicePool()

    async def auto_complete(
        self, config: ModelConfig, model_dir: Path, version_dir: Path
    ) -> ModelConfig:
        return auto_complete_config(config)

    def create(self, context: BackendContext) -> LLMBackend:
        return LLMBackend(context, self.pool)
