"""Triton HTTP transport: `POST /v2/models/{model}/generate_stream`, read as server-sent events.

The generate extension maps top-level JSON keys that name model inputs to tensors, so a
request is the convention's inputs as keys (`{"text_input": ..., "stream": true, ...}`) and
each event is `data: {"model_name", "model_version", "text_output": ...}`. There is no
`[DONE]`: the stream ends when the response does. An error event is `data: {"error": ...}`
(status 400 when it is the first event).
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from typing import Any, Self

import httpx
from httpx_sse import aconnect_sse

from tritium.client.conventions import Convention, ConventionError, build_request, detect_convention
from tritium.client.transports import (
    Chunk,
    TransportError,
    TransportOptions,
    sampling_parameters_for,
)


def base_url(url: str) -> str:
    """`host:port` or a full URL -> `http://host:port` (no trailing slash)."""
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def error_message(response: httpx.Response, body: bytes) -> str:
    """The server's `{"error": ...}` (also inside an SSE `data:` line), else the raw body."""
    text = body.decode("utf-8", errors="replace").strip()
    if text.startswith("data:"):
        text = text[len("data:") :].strip()
    try:
        return str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {text or response.reason_phrase}"


def connect_error_message(error: httpx.HTTPError, url: str) -> str:
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return f"cannot reach a server at {url}: {error}"
    if isinstance(error, httpx.TimeoutException):
        return f"no answer from {url} in time: {type(error).__name__}"
    return f"HTTP error talking to {url}: {type(error).__name__}: {error}"


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


class TritonHttpTransport:
    """Streams prompts to a Triton(-compatible) server's generate_stream endpoint."""

    def __init__(self, options: TransportOptions) -> None:
        self.options = options
        self.convention: Convention | None = None
        self._url = base_url(options.url)
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        # No read timeout on streams: a long generation is not an error (the caller
        # bounds each request with its own timeout).
        self._client = httpx.AsyncClient(
            base_url=self._url,
            timeout=httpx.Timeout(None, connect=self.options.connect_timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
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
        request = build_request(
            self.convention,
            prompt,
            stream=self.options.streaming,
            sampling_parameters=sampling_parameters_for(self.options, max_tokens),
            exclude_input_in_output=self.options.exclude_input_in_output,
        )
        body: dict[str, Any] = {v.name: v.value for v in request.inputs}
        if request_id is not None:
            body["id"] = request_id
        if request.parameters:
            body["parameters"] = request.parameters
        path = f"/v2/models/{self.options.model}/generate_stream"
        try:
            async with aconnect_sse(self._client, "POST", path, json=body) as source:
                response = source.response
                if response.status_code != 200:
                    raise TransportError(error_message(response, await response.aread()))
                async for event in source.aiter_sse():
                    if self.options.verbose:
                        print(f"[http] id={request_id!r} {event.data}", file=sys.stderr)
                    if not event.data:
                        continue
                    data = json.loads(event.data)
                    if "error" in data:
                        raise TransportError(str(data["error"]))
                    yield decode_event(data, self.convention)
        except httpx.HTTPError as error:
            raise TransportError(connect_error_message(error, self._url)) from None
        except ValueError as error:  # json or SSE framing (httpx_sse.SSEError is one)
            raise TransportError(f"bad event from {self._url}: {error}") from None
