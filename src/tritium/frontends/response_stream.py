"""Consuming `InferenceServer.infer()` so that a client going away cancels the request.

The iterator is pumped by its own task. When the consumer is cancelled (HTTP disconnect,
gRPC cancellation, stream end) `aclose()` marks the request cancelled *before* the
iterator is closed, so the model sees `is_cancelled()` while it is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from tritium.server.types import InferenceRequest, InferenceResponse

_END = object()


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class ResponseStream:
    """Async iterator over the responses of one request; always `aclose()` it."""

    def __init__(
        self, request: InferenceRequest, responses: AsyncIterator[InferenceResponse]
    ) -> None:
        self.request = request
        self._responses = responses
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._finished = False
        self._task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            async for r in self._responses:
                self._queue.put_nowait(r)
            self._queue.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._queue.put_nowait(_Raised(e))
        finally:
            aclose = getattr(self._responses, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> InferenceResponse:
        if self._finished:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END:
            self._finished = True
            raise StopAsyncIteration
        if isinstance(item, _Raised):
            self._finished = True
            raise item.exc
        return item

    async def aclose(self) -> None:
        """Cancel the request if it has not finished, then stop the pump."""
        if not self._finished:
            self.request.cancel()
            self._finished = True
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
