"""AsyncLLM: the streaming engine the server uses.

The frontend half of vLLM V1's split: tokenization, incremental detokenization and one
output stream per request live here, in the caller's event loop; the EngineCore runs in
its own process (or a thread) behind a CoreClient.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from tritium.engine.config import EngineArgs
from tritium.engine.core_client import CoreClient, EngineDeadError, InprocCoreClient, MPCoreClient
from tritium.engine.engine_core import load_engine_checkpoint, validate_prompt
from tritium.engine.messages import SchedulerStats
from tritium.engine.output_processor import OutputProcessor
from tritium.engine.outputs import RequestOutput
from tritium.engine.sampling_params import SamplingParams


class RequestStream:
    """An async iterator over one request's RequestOutputs; ends after the finished one."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self._queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        self.finished = False

    def put(self, item: RequestOutput | BaseException) -> None:
        self._queue.put_nowait(item)

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self.finished:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self.finished = True
            raise item
        if item.finished:
            self.finished = True
        return item


class AsyncLLM:
    """Create with `await AsyncLLM.create(EngineArgs(...))`; close with `shutdown()`."""

    def __init__(self, args: EngineArgs, tokenizer, client: CoreClient) -> None:
        self.engine_args = args
        self.tokenizer = tokenizer
        self.client = client
        self.processor = OutputProcessor(tokenizer)
        self.streams: dict[str, RequestStream] = {}
        self.stats = SchedulerStats(num_blocks=client.info.num_blocks)
        self.errored: BaseException | None = None
        self._output_task = asyncio.get_running_loop().create_task(self._output_loop())

    @classmethod
    async def create(cls, args: EngineArgs | dict[str, Any], multiprocess: bool = True) -> AsyncLLM:
        """Load the tokenizer here and the model in the engine core (a child process when
        `multiprocess`, else a thread sharing this process's checkpoint)."""
        if isinstance(args, dict):
            args = EngineArgs.from_dict(args)
        ckpt = await asyncio.to_thread(load_engine_checkpoint, args, False)
        client: CoreClient
        if multiprocess:
            mp_client = MPCoreClient(args)
            await mp_client.wait_ready()
            client = mp_client
        else:
            from tritium.engine.engine_core import EngineCore

            core = await asyncio.to_thread(EngineCore, args, ckpt)
            client = InprocCoreClient(args, core)
        return cls(args, ckpt.tokenizer, client)

    @property
    def max_model_len(self) -> int:
        return self.client.info.max_model_len

    async def add_request(
        self,
        request_id: str,
        prompt: str | list[int] | dict[str, Any],
        sampling_params: SamplingParams,
        priority: int = 0,
    ) -> RequestStream:
        """Start a request; returns the stream of its outputs (ValueError if invalid)."""
        if self.errored is not None:
            raise EngineDeadError(str(self.errored))
        text, token_ids = self._tokenize(prompt)
        validate_prompt(token_ids, self.client.info)
        if request_id in self.streams:
            raise ValueError(f"request id {request_id!r} is already in use")
        core_reqs = self.processor.add_request(
            request_id, text, token_ids, sampling_params, priority
        )
        stream = RequestStream(request_id)
        self.streams[request_id] = stream
        for req in core_reqs:
            await self.client.add_request_async(req)
        return stream

    async def generate(
        self,
        prompt: str | list[int] | dict[str, Any],
        sampling_params: SamplingParams,
        request_id: str,
        priority: int = 0,
    ) -> AsyncIterator[RequestOutput]:
        """vLLM's shape: iterate the outputs; leaving the loop early aborts the request."""
        stream = await self.add_request(request_id, prompt, sampling_params, priority)
        try:
            async for out in stream:
                yield out
        finally:
            if not stream.finished:
                await self.abort(request_id)

    async def abort(self, request_id: str) -> None:
        """Stop a request, free its blocks; its stream ends with finish_reason "abort"."""
        core_ids = self.processor.core_ids(request_id)
        final = self.processor.abort_request(request_id)
        stream = self.streams.pop(request_id, None)
        if core_ids:
            await self.client.abort_requests_async(core_ids)
        if stream is not None and final is not None:
            stream.put(final)

    def get_stats(self) -> SchedulerStats:
        """Running/waiting requests, KV usage, prefix cache and token counters (after the
        core's latest step)."""
        return self.stats

    def _tokenize(self, prompt: str | list[int] | dict[str, Any]) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            return prompt, self.tokenizer.encode(prompt)
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                return prompt.get("prompt"), list(prompt["prompt_token_ids"])
            return prompt["prompt"], self.tokenizer.encode(prompt["prompt"])
        return None, list(prompt)

    async def _output_loop(self) -> None:
        try:
            while True:
                outs = await self.client.get_output_async()
                if outs.stats is not None:
                    self.stats = outs.stats
                results, to_abort = self.processor.process_outputs(outs.outputs)
                for res in results:
                    stream = self.streams.get(res.request_id)
                    if stream is not None:
                        stream.put(res)
                        if res.finished:
                            del self.streams[res.request_id]
                if to_abort:
                    await self.client.abort_requests_async(to_abort)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the core died: fail every stream, refuse new requests
            self.errored = exc
            for stream in self.streams.values():
                stream.put(exc if isinstance(exc, EngineDeadError) else EngineDeadError(repr(exc)))
            self.streams.clear()

    async def shutdown(self) -> None:
        self._output_task.cancel()
        try:
            await self._output_task
        except (asyncio.CancelledError, Exception):
            pass
        await self.client.shutdown_async()
