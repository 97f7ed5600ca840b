"""OpenAI-compatible transport: streaming `/v1/chat/completions` or `/v1/completions`.

Asks for `stream_options: {"include_usage": true}` so the last chunk carries the server's
token counts; `ignore_eos` (a vLLM extension many servers accept) is sent when asked for.
The stream ends with `data: [DONE]`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx

from tritium.client.transports import Chunk, Transport, TransportError, TransportOptions
from tritium.client.transports.http_sse import (
    base_url,
    connect_error_message,
    new_client,
    stream_events,
)


def openai_error_message(response: httpx.Response, body: bytes) -> str:
    """`{"error": {"message": ...}}` or `{"error": "..."}` or `{"detail": ...}`, else the body."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return f"HTTP {response.status_code}: {text or response.reason_phrase}"
    error = data.get("error", data.get("detail", data)) if isinstance(data, dict) else data
    if isinstance(error, dict):
        error = error.get("message", error)
    return f"HTTP {response.status_code}: {error}"


def decode_chunk(data: dict[str, Any], chat: bool) -> Chunk:
    """A chat.completion.chunk / text_completion chunk -> Chunk (usage chunk: counts only)."""
    chunk = Chunk()
    choices = data.get("choices") or []
    if choices:
        choice = choices[0]
        text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
        chunk.text = text or ""
    usage = data.get("usage")
    if usage:
        chunk.num_output_tokens = usage.get("completion_tokens")
        chunk.num_input_tokens = usage.get("prompt_tokens")
    return chunk


class OpenAITransport(Transport):
    """Streams prompts to an OpenAI-compatible server (chat or completions)."""

    def __init__(self, options: TransportOptions, chat: bool = True) -> None:
        self.options = options
        self.chat = chat
        url = base_url(options.url)
        # Accept `host:port`, `http://host:port` or `http://host:port/v1`.
        self._url = url.removesuffix("/v1")
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = new_client(self._url, self.options.connect_timeout)
        try:
            response = await self._client.get("/v1/models", timeout=self.options.connect_timeout)
        except httpx.HTTPError as error:
            raise TransportError(connect_error_message(error, self._url)) from None
        if response.status_code == 200:
            served = [m.get("id") for m in response.json().get("data", [])]
            if served and self.options.model not in served:
                raise TransportError(
                    f"model '{self.options.model}' is not served at {self._url}; "
                    f"it serves {', '.join(map(str, served))}"
                )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _body(self, prompt: str, max_tokens: int | None) -> dict[str, Any]:
        body: dict[str, Any] = dict(self.options.sampling_parameters)
        body.update(model=self.options.model, stream=True)
        body["stream_options"] = {"include_usage": True}
        if self.chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if self.options.ignore_eos:
            body["ignore_eos"] = True
        return body

    async def stream(
        self, prompt: str, max_tokens: int | None = None, request_id: str | None = None
    ) -> AsyncIterator[Chunk]:
        if self._client is None:
            raise TransportError("transport not started")
        path = "/v1/chat/completions" if self.chat else "/v1/completions"
        headers = {"X-Request-Id": request_id} if request_id is not None else {}

        def decode(data_text: str) -> Chunk | None:
            if data_text.strip() == "[DONE]":
                return None
            data = json.loads(data_text)
            if "error" in data:
                error = data["error"]
                raise TransportError(
                    str(error.get("message", error) if isinstance(error, dict) else error)
                )
            return decode_chunk(data, self.chat)

        # aclosing: a consumer that stops early closes the HTTP stream now, not at GC.
        events = stream_events(
            self._client,
            self._url,
            path,
            self._body(prompt, max_tokens),
            decode=decode,
            error_message=openai_error_message,
            headers=headers,
            verbose_tag="openai" if self.options.verbose else None,
            request_id=request_id,
        )
        async with aclosing(events):
            async for chunk in events:
                yield chunk
