"""Transports: one module per protocol, one async interface.

Every transport streams one prompt's answer as `Chunk`s:

    async with make_transport("triton-grpc", options) as transport:
        async for chunk in transport.stream(prompt, max_tokens=64):
            ...

A transport knows the wire format only; timing and counting live in `tritium.client.metrics`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from tritium.client.conventions import Convention, LLMRequest, build_request


class TransportError(Exception):
    """A request or the connection failed; the message is meant for the user."""


@dataclass(slots=True)
class Chunk:
    """One response of a streamed answer.

    num_output_tokens is the number of tokens this response adds, as the server counted
    them (vLLM's `num_output_tokens` is per response when streaming; an OpenAI `usage`
    chunk carries the total with no text). None when the server did not say.
    """

    text: str = ""
    num_output_tokens: int | None = None
    num_input_tokens: int | None = None


@dataclass
class TransportOptions:
    """What every transport needs to know, whatever its protocol."""

    url: str
    model: str
    streaming: bool = True
    sampling_parameters: dict[str, Any] = field(default_factory=dict)
    ignore_eos: bool = False
    # vLLM convention only: ask the model not to echo the prompt (non-streaming answers).
    exclude_input_in_output: bool = False
    # Seconds to wait for the server's metadata when connecting.
    connect_timeout: float = 10.0
    verbose: bool = False


class Transport(Protocol):
    """The one interface the client and the benchmark measure through."""

    options: TransportOptions

    async def start(self) -> None:
        """Connect and learn what the endpoint serves; raise TransportError if unusable."""

    def stream(
        self, prompt: str, max_tokens: int | None = None, request_id: str | None = None
    ) -> AsyncIterator[Chunk]:
        """Send one prompt; yield its responses until the last. Raises TransportError."""
        ...

    async def close(self) -> None: ...

    # Defaults for the transports, which subclass this protocol to inherit them.
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


BACKENDS = ("triton-grpc", "triton-http", "openai-chat", "openai-completions")


def make_transport(backend: str, options: TransportOptions) -> Transport:
    """The transport for a backend name (one of BACKENDS)."""
    if backend == "triton-grpc":
        from tritium.client.transports.triton_grpc import TritonGrpcTransport

        return TritonGrpcTransport(options)
    if backend == "triton-http":
        from tritium.client.transports.triton_http import TritonHttpTransport

        return TritonHttpTransport(options)
    if backend in ("openai-chat", "openai-completions"):
        from tritium.client.transports.openai_http import OpenAITransport

        return OpenAITransport(options, chat=backend == "openai-chat")
    raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def sampling_parameters_for(options: TransportOptions, max_tokens: int | None) -> dict[str, Any]:
    """The request's sampling parameters: the options' base, max_tokens and ignore_eos."""
    params = dict(options.sampling_parameters)
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if options.ignore_eos:
        params["ignore_eos"] = True
    return params


def triton_request(
    convention: Convention, options: TransportOptions, prompt: str, max_tokens: int | None
) -> LLMRequest:
    """One prompt's inputs in the model's convention, as the options ask (the Triton
    transports, gRPC and HTTP)."""
    return build_request(
        convention,
        prompt,
        stream=options.streaming,
        sampling_parameters=sampling_parameters_for(options, max_tokens),
        exclude_input_in_output=options.exclude_input_in_output,
    )
