"""The server-side half of one LLM (vLLM's AsyncLLM shape): tokenization, the engine's
OutputProcessor (n>1 fan-out, incremental detokenization, stop strings), one output stream
per request, and the vllm:* per-request metrics. Its EngineCore lives in the device worker.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from tritium.backends.llm.device import DeviceWorker
from tritium.backends.llm.metrics import VllmMetrics
from tritium.backends.llm.worker_protocol import StepOutputs
from tritium.engine.engine_core import validate_prompt
from tritium.engine.messages import EngineCoreInfo, SchedulerStats
from tritium.engine.output_processor import OutputProcessor
from tritium.engine.outputs import RequestOutput
from tritium.engine.sampling_params import SamplingParams
from tritium.server.errors import TritonError, invalid_arg, unavailable


@dataclass(eq=False)
class RequestStream:
    """The outputs of one request, as the engine produces them."""

    request_id: str
    arrival_ns: int = field(default_factory=time.monotonic_ns)
    queue: asyncio.Queue[RequestOutput | TritonError] = field(default_factory=asyncio.Queue)
    scheduled_ns: int = 0  # when the engine first computed it: the end of its queueing
    first_token_ns: int = 0
    last_token_ns: int = 0
    finished: bool = False

    async def get(self, timeout: float | None = None) -> RequestOutput:
        """The next output; raises the request's TritonError, or TimeoutError."""
        item = await asyncio.wait_for(self.queue.get(), timeout)
        if isinstance(item, TritonError):
            raise item
        return item


class LLMEngine:
    """One model's frontend over its EngineCore in a device worker."""

    def __init__(
        self,
        model_name: str,
        model_id: str,
        worker: DeviceWorker,
        tokenizer: Any,
        info: EngineCoreInfo,
        metrics: VllmMetrics,
    ) -> None:
        self.model_name = model_name
        self.model_id = model_id
        self.worker = worker
        self.tokenizer = tokenizer
        self.info = info
        self.metrics = metrics
        self.processor = OutputProcessor(tokenizer)
        self.streams: dict[str, RequestStream] = {}
        self._core_to_request: dict[str, str] = {}
        self.stats: SchedulerStats | None = SchedulerStats(num_blocks=info.num_blocks)
        self.dead_reason = ""
        self._ttft = metrics.ttft.labels(model_name)
        self._itl = metrics.itl.labels(model_name)
        self._e2e = metrics.e2e.labels(model_name)

    @property
    def num_unfinished(self) -> int:
        return len(self.streams)

    # -- requests ------------------------------------------------------------------------
    def encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer.encode(prompt))

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> list[int]:
        """Token ids of a conversation rendered with the model's chat template."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise invalid_arg(f"model '{self.model_name}' has no chat template")
        try:
            ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False, **kwargs
            )
        except Exception as exc:  # jinja errors, bad message shapes
            raise invalid_arg(f"cannot apply the chat template: {exc}") from exc
        if isinstance(ids, dict):  # some tokenizers return a BatchEncoding regardless
            ids = ids["input_ids"]
        return list(ids)

    def add_request(
        self,
        request_id: str,
        prompt: str | None,
        prompt_token_ids: list[int],
        params: SamplingParams,
        priority: int = 0,
    ) -> RequestStream:
        """Send a request to the engine; raises INVALID_ARG for a prompt it cannot serve."""
        if self.dead_reason:
            raise unavailable(self.dead_reason)
        try:
            validate_prompt(prompt_token_ids, self.info)
        except ValueError as exc:
            raise invalid_arg(str(exc)) from exc
        if (
            params.max_tokens is not None
            and len(prompt_token_ids) + params.max_tokens > self.info.max_model_len
        ):
            # vLLM's rule: the output would not fit the context; cap it rather than fail.
            params.max_tokens = self.info.max_model_len - len(prompt_token_ids)
            params.min_tokens = min(params.min_tokens, params.max_tokens)
        try:
            core_requests = self.processor.add_request(
                request_id, prompt, prompt_token_ids, params, priority
            )
        except ValueError as exc:
            raise invalid_arg(str(exc)) from exc
        stream = RequestStream(request_id)
        self.streams[request_id] = stream
        try:
            for req in core_requests:
                self._core_to_request[req.request_id] = request_id
                self.worker.add_request(self.model_id, req)
        except TritonError:
            self._drop(request_id)
            self.processor.abort_request(request_id)
            raise
        return stream

    def abort(self, request_id: str) -> None:
        """Stop a request: the engine frees its blocks; its stream ends with an abort."""
        stream = self.streams.get(request_id)
        if stream is None:
            return
        core_ids = self.processor.core_ids(request_id)
        out = self.processor.abort_request(request_id)
        self.worker.abort(self.model_id, core_ids)
        self._drop(request_id)
        if out is not None:
            stream.queue.put_nowait(out)
        self.metrics.success.labels(self.model_name, "abort").inc()

    def _drop(self, request_id: str) -> None:
        stream = self.streams.pop(request_id, None)
        if stream is not None:
            stream.finished = True
        for core_id in [c for c, r in self._core_to_request.items() if r == request_id]:
            del self._core_to_request[core_id]

    # -- worker callbacks (ModelSink) ----------------------------------------------------
    def on_step(self, msg: StepOutputs) -> None:
        if msg.outputs.stats is not None:
            self.stats = msg.outputs.stats
        for core_id in msg.scheduled:
            stream = self.streams.get(self._core_to_request.get(core_id, ""))
            if stream is not None and not stream.scheduled_ns:
                stream.scheduled_ns = msg.step_start_ns
        if not msg.outputs.outputs:
            return
        now = time.monotonic_ns()
        stepped: set[str] = set()  # token timings once per request per step (n>1)
        for o in msg.outputs.outputs:
            rid = self._core_to_request.get(o.request_id, "")
            stream = self.streams.get(rid)
            if stream is None or rid in stepped:
                continue
            stepped.add(rid)
            if not stream.first_token_ns:
                stream.first_token_ns = now
                self._ttft.observe((now - stream.arrival_ns) / 1e9)
            else:
                self._itl.observe((now - stream.last_token_ns) / 1e9)
            stream.last_token_ns = now
        results, to_abort = self.processor.process_outputs(msg.outputs.outputs)
        if to_abort:
            self.worker.abort(self.model_id, to_abort)
        for out in results:
            stream = self.streams.get(out.request_id)
            if stream is None:
                continue
            stream.queue.put_nowait(out)
            if out.finished:
                self._e2e.observe((now - stream.arrival_ns) / 1e9)
                reason = next((c.finish_reason for c in out.outputs if c.finish_reason), "stop")
                self.metrics.success.labels(self.model_name, reason).inc()
                self._drop(out.request_id)

    def on_rejected(self, request_id: str, error: str) -> None:
        rid = self._core_to_request.get(request_id, request_id)
        stream = self.streams.get(rid)
        if stream is None:
            return
        core_ids = self.processor.core_ids(rid)
        self.processor.abort_request(rid)
        self.worker.abort(self.model_id, [c for c in core_ids if c != request_id])
        self._drop(rid)
        stream.queue.put_nowait(invalid_arg(error))

    def on_worker_died(self, reason: str) -> None:
        self.dead_reason = reason
        self.stats = None
        for rid, stream in list(self.streams.items()):
            self.processor.abort_request(rid)
            self._drop(rid)
            stream.queue.put_nowait(unavailable(reason))

    def fail_all(self, error: TritonError) -> None:
        """End every live request with `error` (unloading)."""
        for rid in list(self.streams):
            stream = self.streams[rid]
            self.abort(rid)
            stream.queue.put_nowait(error)
