"""uvicorn's httptools protocol, writing each response in one piece.

An ASGI response arrives as two messages (`http.response.start`, then the body) and
uvicorn writes each to the socket at once: two send() calls, two TCP segments, and the
client woken twice per response. On a busy machine that second wake-up is a good part of
a small request's latency. Here writes made during one event-loop step are joined and
sent at the end of the step (or at once past 64 KiB), so a whole small response leaves
in one segment, as Triton's HTTP server sends it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_FLUSH_AT = 64 * 1024


class CoalescingTransport:
    """A transport proxy that joins the writes of one loop step into one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data))
        self._size += len(data)
        if self._size >= _FLUSH_AT:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol over a CoalescingTransport (pass as uvicorn.Config(http=...))."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses)
        proxy = CoalescingTransport(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(proxy)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        transport = self.transport
        if isinstance(transport, CoalescingTransport):
            transport._pending.clear()
        super().connection_lost(exc)
