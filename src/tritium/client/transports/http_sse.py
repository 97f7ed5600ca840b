"""What the two HTTP transports (Triton generate_stream, OpenAI) share: the connection
pool, the error messages, and reading a POST's server-sent events (httpx-sse) as Chunks."""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator, Callable

import httpx
from httpx_sse import aconnect_sse

from tritium.client.transports import Chunk, TransportError


def base_url(url: str) -> str:
    """`host:port` or a full URL -> `http://host:port` (no trailing slash)."""
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def connect_error_message(error: httpx.HTTPError, url: str) -> str:
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return f"cannot reach a server at {url}: {error}"
    if isinstance(error, httpx.TimeoutException):
        return f"no answer from {url} in time: {type(error).__name__}"
    return f"HTTP error talking to {url}: {type(error).__name__}: {error}"


def new_client(url: str, connect_timeout: float) -> httpx.AsyncClient:
    """A connection pool for one server, with no limit on connections in flight."""
    # No read timeout on streams: a long generation is not an error (the caller bounds
    # each request with its own timeout).
    return httpx.AsyncClient(
        base_url=url,
        timeout=httpx.Timeout(None, connect=connect_timeout),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
    )


async def stream_events(
    client: httpx.AsyncClient,
    url: str,
    path: str,
    body: dict[str, object],
    *,
    decode: Callable[[str], Chunk | None],
    error_message: Callable[[httpx.Response, bytes], str],
    headers: dict[str, str] | None = None,
    verbose_tag: str | None = None,
    request_id: str | None = None,
) -> AsyncGenerator[Chunk, None]:
    """POST `body` as JSON to `path` of the server at `url`; yield the Chunk each event's
    data decodes to, until the response ends or `decode` returns None (an end marker such
    as OpenAI's `[DONE]`).

    A refused request (not 200) is a TransportError with `error_message`'s reading of the
    body; so is a lost connection, and a ValueError from decoding (a bad event). With a
    `verbose_tag`, every event is printed to stderr.
    """
    try:
        async with aconnect_sse(
            client, "POST", path, json=body, headers=dict(headers or {})
        ) as source:
            response = source.response
            if response.status_code != 200:
                raise TransportError(error_message(response, await response.aread()))
            async for event in source.aiter_sse():
                if verbose_tag is not None:
                    print(f"[{verbose_tag}] id={request_id!r} {event.data}", file=sys.stderr)
                if not event.data:
                    continue
                chunk = decode(event.data)
                if chunk is None:
                    return
                yield chunk
    except httpx.HTTPError as error:
        raise TransportError(connect_error_message(error, url)) from None
    except ValueError as error:  # json or SSE framing (httpx_sse.SSEError is one)
        raise TransportError(f"bad event from {url}: {error}") from None
