"""Reading request bodies: the size limit (--http-max-input-size) and Content-Encoding."""

from __future__ import annotations

import zlib

from starlette.requests import ClientDisconnect, Request

from tritium.server.errors import invalid_arg, unsupported


def too_large(size: int, limit: int) -> Exception:
    return invalid_arg(
        f"Request JSON size of {size} bytes exceeds the maximum allowed value of {limit} bytes. "
        "Use --http-max-input-size to increase the limit."
    )


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """gzip / deflate / identity; the decompressed size is held to `limit` too."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        d = zlib.decompressobj()
    else:
        raise unsupported("Unsupported compression type")
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise invalid_arg(f"failed to decompress the request body: {e}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise too_large(len(out) + len(d.unconsumed_tail), limit)
    return out


async def read_body(request: Request, limit: int) -> bytes:
    """The whole (decompressed) body, refusing more than `limit` bytes. Reads the ASGI
    messages directly (no stream generator on the hot path)."""
    headers = request.headers
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit)
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await request.receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > limit:
                raise too_large(total, limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = headers.get("content-encoding")
    return decompress(body, encoding, limit) if encoding else body
