"""Triton gRPC transport: every prompt multiplexed over ONE ModelStreamInfer stream.

This is the RPC `tritonclient.grpc.aio.InferenceServerClient.stream_infer` drives, built
from the protos that ship in tritonclient and parsed with its `InferResult`. We drive the
stub ourselves for one reason: tritonclient's response iterator drops the request id of an
error response, so with many requests in flight a failed request could not be told from
the others (it would wait for its timeout). Here every response, error or not, is routed
to its request by `infer_response.id`.

Each request sets `triton_enable_empty_final_response` so a decoupled model's end of
stream is seen as a response with `triton_final_response: true`.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from itertools import count

import grpc
import numpy as np
from tritonclient.grpc import InferResult, service_pb2, service_pb2_grpc
from tritonclient.utils import serialize_byte_tensor

from tritium.client.conventions import (
    Convention,
    ConventionError,
    LLMRequest,
    detect_convention,
)
from tritium.client.transports import (
    Chunk,
    Transport,
    TransportError,
    TransportOptions,
    triton_request,
)

_END = object()  # queued after a request's final response

_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]


def describe_rpc_error(error: grpc.aio.AioRpcError, url: str, model: str) -> str:
    """A one-line message for a failed metadata or stream call."""
    code = error.code()
    details = error.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach a Triton gRPC server at {url}: {details}"
    if code == grpc.StatusCode.NOT_FOUND:
        return f"model '{model}' is not available at {url}: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer from {url} in time: {details}"
    return f"{code.name}: {details}"


def encode_request(
    model: str, request_id: str, request: LLMRequest
) -> service_pb2.ModelInferRequest:
    """A ModelInferRequest with raw tensor contents (BYTES length-prefixed, BOOL one byte)."""
    proto = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    for value in request.inputs:
        tensor = proto.inputs.add()
        tensor.name = value.name
        tensor.datatype = value.datatype
        tensor.shape.append(1)
        if value.datatype == "BYTES":
            array = np.array([str(value.value).encode("utf-8")], dtype=np.object_)
            proto.raw_input_contents.append(serialize_byte_tensor(array).item())
        else:
            proto.raw_input_contents.append(np.array([value.value], dtype=bool).tobytes())
    for key, param in request.parameters.items():
        # bool before int: bool is an int in Python.
        if isinstance(param, bool):
            proto.parameters[key].bool_param = param
        elif isinstance(param, int):
            proto.parameters[key].int64_param = param
        else:
            proto.parameters[key].string_param = str(param)
    proto.parameters["triton_enable_empty_final_response"].bool_param = True
    return proto


def decode_response(
    response: service_pb2.ModelInferResponse, convention: Convention
) -> tuple[Chunk, bool]:
    """The chunk a response carries, and whether it is the request's final response."""
    result = InferResult(response)
    text = ""
    texts = result.as_numpy(convention.text_output)
    if texts is not None:
        text = "".join(
            t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t)
            for t in texts.reshape(-1)
        )
    chunk = Chunk(text=text)
    out_tokens = result.as_numpy("num_output_tokens")
    if out_tokens is not None and out_tokens.size:
        chunk.num_output_tokens = int(out_tokens.sum())
    in_tokens = result.as_numpy("num_input_tokens")
    if in_tokens is not None and in_tokens.size:
        chunk.num_input_tokens = int(in_tokens.reshape(-1)[0])
    final_param = response.parameters.get("triton_final_response")
    # Triton always sets the flag on stream responses; without it, one response is all.
    final = final_param.bool_param if final_param is not None else True
    return chunk, final


class TritonGrpcTransport(Transport):
    """Streams prompts to a Triton(-compatible) server over one gRPC bidirectional stream."""

    def __init__(self, options: TransportOptions) -> None:
        self.options = options
        self.convention: Convention | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: service_pb2_grpc.GRPCInferenceServiceStub | None = None
        self._call: grpc.aio.StreamStreamCall | None = None
        self._reader: asyncio.Task[None] | None = None
        self._outbox: asyncio.Queue[service_pb2.ModelInferRequest | None] = asyncio.Queue()
        self._pending: dict[str, asyncio.Queue[object]] = {}
        self._failure: TransportError | None = None
        self._closing = False
        # A request we stopped waiting for (timeout) still runs on the server; closing
        # then cancels the stream rather than wait for it.
        self._abandoned = False
        self._ids = count()

    async def start(self) -> None:
        opts = self.options
        self._channel = grpc.aio.insecure_channel(opts.url, options=_CHANNEL_OPTIONS)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        try:
            metadata = await self._stub.ModelMetadata(
                service_pb2.ModelMetadataRequest(name=opts.model), timeout=opts.connect_timeout
            )
        except grpc.aio.AioRpcError as error:
            raise TransportError(describe_rpc_error(error, opts.url, opts.model)) from None
        try:
            self.convention = detect_convention(
                {"name": metadata.name, "inputs": [{"name": i.name} for i in metadata.inputs]}
            )
        except ConventionError as error:
            raise TransportError(str(error)) from None
        self._call = self._stub.ModelStreamInfer(self._requests())
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        self._closing = True
        if self._call is not None:
            self._outbox.put_nowait(None)  # half-close: no more requests
            if self._pending or self._abandoned:
                self._call.cancel()
        if self._reader is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), timeout=5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._reader.cancel()
        if self._channel is not None:
            await self._channel.close()

    async def stream(
        self, prompt: str, max_tokens: int | None = None, request_id: str | None = None
    ) -> AsyncIterator[Chunk]:
        if self.convention is None:
            raise TransportError("transport not started")
        if self._failure is not None:
            raise self._failure
        rid = request_id if request_id is not None else f"tritium-{next(self._ids)}"
        if rid in self._pending:
            raise TransportError(f"request id '{rid}' is already in flight on this stream")
        request = triton_request(self.convention, self.options, prompt, max_tokens)
        inbox: asyncio.Queue[object] = asyncio.Queue()
        self._pending[rid] = inbox
        finished = False
        try:
            self._outbox.put_nowait(encode_request(self.options.model, rid, request))
            while True:
                item = await inbox.get()
                if item is _END:
                    finished = True
                    return
                if isinstance(item, TransportError):
                    finished = True
                    raise item
                assert isinstance(item, Chunk)
                yield item
        finally:
            self._pending.pop(rid, None)
            if not finished:
                self._abandoned = True

    async def _requests(self) -> AsyncIterator[service_pb2.ModelInferRequest]:
        while (request := await self._outbox.get()) is not None:
            yield request

    async def _read(self) -> None:
        assert self._call is not None
        try:
            async for response in self._call:
                self._dispatch(response)
        except grpc.aio.AioRpcError as error:
            if not (self._closing and error.code() == grpc.StatusCode.CANCELLED):
                details = error.details() or ""
                message = f"the gRPC stream to {self.options.url} failed: {error.code().name}"
                self._fail_all(TransportError(f"{message}: {details}" if details else message))
            return
        if self._pending:
            self._fail_all(TransportError("the server closed the stream"))

    def _dispatch(self, response: service_pb2.ModelStreamInferResponse) -> None:
        rid = response.infer_response.id
        if self.options.verbose:
            print(f"[grpc] id={rid!r} {response}", file=sys.stderr)
        inbox = self._pending.get(rid)
        if response.error_message:
            error = TransportError(response.error_message)
            if inbox is None and len(self._pending) == 1:
                inbox = next(iter(self._pending.values()))
            if inbox is None:
                # An error no request can claim: fail them all rather than let them hang.
                self._fail_all(error)
                return
            inbox.put_nowait(error)
            return
        if inbox is None:
            return  # a request we stopped waiting for (timed out)
        assert self.convention is not None
        chunk, final = decode_response(response.infer_response, self.convention)
        if chunk.text or chunk.num_output_tokens or chunk.num_input_tokens:
            inbox.put_nowait(chunk)
        if final:
            inbox.put_nowait(_END)

    def _fail_all(self, error: TransportError) -> None:
        self._failure = error
        for inbox in self._pending.values():
            inbox.put_nowait(error)
