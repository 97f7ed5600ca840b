"""Triton HTTP transport: `POST /v2/models/{model}/generate_stream`, read as server-sent events.

The generate extension maps top-level JSON keys that name model inputs to tensors, so a
request is the convention's inputs as keys (`{"text_input": ..., "stream": true, ...}`) and
each event is `data: {"model_name", "model_version", "text_output": ...}`. There is no
`[DONE]`: the stream ends when the response does. An error event is `data: {"error": ...}`
(status 400 when it is the first event).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx

from tritium.client.conventions import Convention, ConventionError, detect_convention
from tritium.client.transports import (
    Chunk,
    Transport,
    TransportError,
    TransportOptions,
    triton_request,
)
from tritium.client.transports.http_sse import (
    base_url,
    connect_error_message,
    new_client,
    stream_events,
)


def error_message(response: httpx.Response, body: bytes) -> str:
    """The server's `{"error": ...}` (also inside an SSE `data:` line), else the raw body."""
    text = body.decode("utf-8", errors="replace").strip()
    if text.startswith("data:"):
        text = text[len("data:") :].strip()
    try:
        return str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {text or response.reason_phrase}"


def decode_event(data: dict[str, Any], convention: Convention) -> Chunk:
    """One generate_stream event -> Chunk (one-element outputs arrive as scalars)."""
    text = data.get(convention.text_output, "")
    if isinstance(text, list):
        text = "".join(str(t) for t in text)
    chunk = Chunk(text=str(text))
    out_tokens = data.get("num_output_tokens")
    if out_tokens is not None:
        chunk.num_output_tokens = int(
            sum(out_tokens) if isinstance(out_tokens, list) else out_tokens
        )
    in_tokens = data.get("num_input_tokens")
    if in_tokens is not None:
        chunk.num_input_tokens = int(in_tokens[0] if isinstance(in_tokens, list) else in_tokens)
    return chunk


class TritonHttpTransport(Transport):
    """Streams prompts to a Triton(-compatible) server's generate_stream endpoint."""

    def __init__(self, options: TransportOptions) -> None:
        self.options = options
        self.convention: Convention | None = None
        self._url = base_url(options.url)
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = new_client(self._url, self.options.connect_timeout)
        model = self.options.model
        try:
            response = await self._client.get(
                f"/v2/models/{model}", timeout=self.options.connect_timeout
            )
        except httpx.HTTPError as error:
            raise TransportError(connect_error_message(error, self._url)) from None
        if response.status_code != 200:
            reason = error_message(response, response.content)
            raise TransportError(f"model '{model}' is not available at {self._url}: {reason}")
        try:
            self.convention = detect_convention(response.json())
        except ConventionError as error:
            raise TransportError(str(error)) from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def stream(
        self, prompt: str, max_tokens: int | None = None, request_id: str | None = None
    ) -> AsyncIterator[Chunk]:
        if self._client is None or self.convention is None:
            raise TransportError("transport not started")
        request = triton_request(self.convention, self.options, prompt, max_tokens)
        body: dict[str, Any] = {v.name: v.value for v in request.inputs}
        if request_id is not None:
            body["id"] = request_id
        if request.parameters:
            body["parameters"] = request.parameters
        path = f"/v2/models/{self.options.model}/generate_stream"
        convention = self.convention

        def decode(data_text: str) -> Chunk:
            data = json.loads(data_text)
            if "error" in data:
                raise TransportError(str(data["error"]))
            return decode_event(data, convention)

        # aclosing: a consumer that stops early closes the HTTP stream now, not at GC.
        events = stream_events(
            self._client,
            self._url,
            path,
            body,
            decode=decode,
            error_message=error_message,
            verbose_tag="http" if self.options.verbose else None,
            request_id=request_id,
        )
        async with aclosing(events):
            async for chunk in events:
                yield chunk
