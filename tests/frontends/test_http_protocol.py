"""The HTTP protocol's coalescing transport: the writes of one loop step leave as one."""

from __future__ import annotations

import asyncio

from tritium.frontends.http.protocol import CoalescingTransport


class RecordingTransport(asyncio.Transport):
    """A transport that records what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1) if name == "peername" else default


async def test_writes_of_one_step_are_joined() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"")
    transport.write(b"body")
    assert real.writes == []
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    # everything else is the real transport's
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1)


async def test_large_writes_and_close_flush_at_once() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    big = b"x" * (64 * 1024)
    transport.write(big)
    assert real.writes == [big]
    transport.write(b"tail")
    transport.close()
    assert real.writes == [big, b"tail"] and real.closed
