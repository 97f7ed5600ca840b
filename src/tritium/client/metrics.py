"""Measuring one streamed request, and summarising many.

All times come from `time.perf_counter()` (monotonic): TTFT is from just before the request
is handed to the transport to the first response carrying text; end-to-end latency is to
the last response; ITL is the gap between successive responses carrying text; TPOT is
(latency - TTFT) / (output tokens - 1).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tritium.client.transports import Transport, TransportError


@dataclass
class RequestRecord:
    """What one request produced and how long it took (seconds)."""

    request_id: str | None = None
    text: str = ""
    success: bool = False
    error: str = ""
    start: float = 0.0  # perf_counter at send
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)
    num_chunks: int = 0  # responses that carried text
    # Token counts as the server reported them (None: the server did not say).
    server_output_tokens: int | None = None
    server_input_tokens: int | None = None

    @property
    def output_tokens(self) -> int:
        """Server-counted output tokens, else the number of text-carrying responses."""
        if self.server_output_tokens is not None:
            return self.server_output_tokens
        return self.num_chunks

    @property
    def tpot(self) -> float | None:
        n = self.output_tokens
        return (self.latency - self.ttft) / (n - 1) if self.success and n > 1 else None


async def measure(
    transport: Transport,
    prompt: str,
    max_tokens: int | None = None,
    request_id: str | None = None,
    timeout: float | None = None,
) -> RequestRecord:
    """Send one prompt through the transport and time its responses. Never raises for a
    failed request: the record says success=False and why."""
    record = RequestRecord(request_id=request_id)
    parts: list[str] = []
    record.start = last = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in transport.stream(prompt, max_tokens, request_id):
                now = time.perf_counter()
                if chunk.text:
                    if not parts:
                        record.ttft = now - record.start
                    else:
                        record.itl.append(now - last)
                    last = now
                    parts.append(chunk.text)
                if chunk.num_output_tokens is not None:
                    record.server_output_tokens = (
                        record.server_output_tokens or 0
                    ) + chunk.num_output_tokens
                if chunk.num_input_tokens is not None:
                    record.server_input_tokens = chunk.num_input_tokens
        record.latency = time.perf_counter() - record.start
        record.success = True
    except TransportError as error:
        record.error = str(error)
    except TimeoutError:
        record.error = f"timed out after {timeout:g} s"
    record.text = "".join(parts)
    record.num_chunks = len(parts)
    if record.success and not parts:
        # An answer with no text: its first (and last) response is the end.
        record.ttft = record.latency
    return record


PERCENTILES = (90, 99)


def summarize(
    values_s: list[float], percentiles: tuple[int, ...] = PERCENTILES
) -> dict[str, float]:
    """Mean, median, std and percentiles of seconds, in milliseconds (0 when empty)."""
    if not values_s:
        return {"mean": 0.0, "median": 0.0, "std": 0.0} | {f"p{p}": 0.0 for p in percentiles}
    ms = np.asarray(values_s, dtype=np.float64) * 1000.0
    out = {"mean": float(ms.mean()), "median": float(np.median(ms)), "std": float(ms.std())}
    for p in percentiles:
        out[f"p{p}"] = float(np.percentile(ms, p))
    return out


def flat_metrics(name: str, values_s: list[float]) -> dict[str, Any]:
    """summarize() under vLLM's result keys: mean_ttft_ms, median_ttft_ms, p99_ttft_ms..."""
    return {f"{stat}_{name}_ms": value for stat, value in summarize(values_s).items()}
