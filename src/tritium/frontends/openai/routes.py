"""The OpenAI-compatible API on the HTTP port, as Starlette routes.

Requests go through `InferenceServer.infer` like any Triton request -- so the model's
queue, statistics (nv_inference_*), admission limits and cancellation apply -- carrying an
`LLMCall` (the prompt or chat messages and the SamplingParams) that the LLM backend reads
instead of tensors and answers with engine RequestOutputs. The direction stays
frontends -> server -> backends: the frontend never holds a backend or an engine.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import numpy as np
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from tritonclient.grpc import model_config_pb2

from tritium.backends.llm.api import LLM_CALL, LLM_OUTPUT, LLMCall
from tritium.frontends.errors import as_triton_error, http_status
from tritium.frontends.http.app import ClientDisconnected, collect_responses
from tritium.frontends.openai import protocol
from tritium.frontends.response_stream import ResponseStream
from tritium.server.errors import ErrorCode, TritonError, invalid_arg, not_found
from tritium.server.types import InferenceRequest, InferenceResponse, Tensor

log = logging.getLogger("tritium.frontends.openai")

LLM_BACKENDS = ("vllm",)
JSON = "application/json"


def _json(doc: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(doc), status_code=status, media_type=JSON)


def _error(err: TritonError) -> Response:
    return _json(protocol.error_object(err), http_status(err))


def _sse(doc: Any) -> bytes:
    return b"data: " + msgspec.json.encode(doc) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def _server(request: Request) -> Any:
    return request.app.state.frontend.server


def _llm_models(server: Any) -> list[tuple[str, Any]]:
    """(name, config) of every READY model served by the LLM backend."""
    found = []
    for entry in server.repository_index(ready_only=True):
        name = entry["name"]
        try:
            config = server.model_config(name)
        except TritonError:
            continue
        if (config.backend or config.platform) in LLM_BACKENDS and (name, config) not in found:
            found.append((name, config))
    return found


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": protocol.now_s(), "owned_by": "tritium"}


async def list_models(request: Request) -> Response:
    models = _llm_models(_server(request))
    return _json({"object": "list", "data": [_model_card(n) for n, _ in models]})


async def get_model(request: Request) -> Response:
    name = request.path_params["model"]
    if name not in {n for n, _ in _llm_models(_server(request))}:
        return _error(not_found(f"The model '{name}' does not exist"))
    return _json(_model_card(name))


async def _body(request: Request) -> dict[str, Any]:
    try:
        doc = msgspec.json.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise invalid_arg(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise invalid_arg("the request body must be a JSON object")
    return doc


def _inference_request(server: Any, body: dict[str, Any], call: LLMCall) -> InferenceRequest:
    """A request for the model named in the body, its required tensors filled so the core
    validates it; the real work is the LLMCall."""
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise invalid_arg("'model' is required")
    try:
        config = server.model_config(name)
    except TritonError as exc:
        if exc.code in (ErrorCode.NOT_FOUND, ErrorCode.UNAVAILABLE):
            raise not_found(f"The model '{name}' does not exist") from exc
        raise
    if (config.backend or config.platform) not in LLM_BACKENDS:
        raise invalid_arg(f"model '{name}' is not a language model (backend '{config.backend}')")
    inputs: dict[str, Tensor] = {}
    for spec in config.input:
        if spec.optional:
            continue
        if spec.data_type == model_config_pb2.TYPE_BOOL:  # STREAM
            inputs[spec.name] = Tensor(spec.name, "BOOL", np.array([call.stream], dtype=np.bool_))
        else:
            inputs[spec.name] = Tensor(
                spec.name, "BYTES", np.array([(call.prompt or "").encode()], dtype=np.object_)
            )
    return InferenceRequest(model_name=name, inputs=inputs, parameters={LLM_CALL: call})


def _output(r: InferenceResponse) -> Any:
    if r.error is not None:
        raise r.error
    return r.parameters.get(LLM_OUTPUT)


async def _complete(request: Request, ireq: InferenceRequest, server: Any) -> Any:
    """Non-streaming: the single final RequestOutput (None when the client went away)."""
    try:
        responses = await collect_responses(request, ireq, server.infer(ireq))
    except ClientDisconnected:
        return None
    final = None
    for r in responses:
        out = _output(r)
        if out is not None:
            final = out
    if final is None:
        raise TritonError("the model sent no output")
    return final


async def _stream(
    ireq: InferenceRequest, server: Any, chunks: Any, include_usage: bool
) -> Response:
    """Streaming: errors before the first output become a status code; after, an event."""
    responses = ResponseStream(ireq, server.infer(ireq))
    try:
        first = await anext(responses, None)
        if first is not None:
            _output(first)
    except BaseException:
        await responses.aclose()
        raise

    async def events() -> AsyncIterator[bytes]:
        prompt_tokens = completion_tokens = 0
        try:
            r = first
            while r is not None:
                out = _output(r)
                if out is not None:
                    out = chunks.view(out)
                    prompt_tokens = len(out.prompt_token_ids)
                    completion_tokens += sum(len(c.token_ids) for c in out.outputs)
                    for doc in chunks(out):
                        yield _sse(doc)
                r = await anext(responses, None)
            if include_usage:
                yield _sse(chunks.usage_chunk(protocol.usage(prompt_tokens, completion_tokens)))
        except Exception as exc:
            yield _sse(protocol.error_object(as_triton_error(exc)))
        finally:
            await responses.aclose()
        yield DONE

    return StreamingResponse(events(), media_type="text/event-stream")


class _Chunks:
    """Builds the stream chunks of one request (one id, created time and model)."""

    def __init__(
        self, model: str, chat: bool, params: Any, echo: str | None, prompt_only: bool = False
    ) -> None:
        self.id = protocol.new_id("chatcmpl" if chat else "cmpl")
        self.created = protocol.now_s()
        self.model = model
        self.chat = chat
        self.object = "chat.completion.chunk" if chat else "text_completion"
        self.top = params.logprobs or 0
        self.echo = echo
        self.prompt_logprobs: dict[str, Any] | None = None  # the echo's, once they come
        self.prompt_only = prompt_only  # echo with max_tokens 0: nothing generated shown
        self.started: set[int] = set()
        self.offsets: dict[int, int] = {}

    def _doc(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def view(self, out: Any) -> Any:
        """The output as the client asked for it (protocol.prompt_only)."""
        return protocol.prompt_only(out) if self.prompt_only else out

    def __call__(self, out: Any) -> list[dict[str, Any]]:
        docs = []
        if not self.chat and self.echo is not None and out.prompt_logprobs:
            self.prompt_logprobs = protocol.echo_logprobs(out, self.top, self.echo)
        for c in out.outputs:
            reason = protocol.finish_reason(c)
            if self.chat:
                if c.index not in self.started:
                    self.started.add(c.index)
                    docs.append(self._doc([{"index": c.index, "delta": {"role": "assistant", "content": ""},
                                            "logprobs": None, "finish_reason": None}]))  # fmt: skip
                delta = {"content": c.text} if c.text or not reason else {}
                docs.append(self._doc([{"index": c.index, "delta": delta,
                                        "logprobs": protocol.chat_logprobs(c, self.top),
                                        "finish_reason": reason}]))  # fmt: skip
            else:
                text, prompt = c.text, None
                if c.index not in self.started:
                    self.started.add(c.index)
                    text, prompt = (self.echo or "") + text, self.prompt_logprobs
                offset = self.offsets.get(c.index, 0)
                self.offsets[c.index] = offset + len(text)
                lps = protocol.completion_logprobs(c, self.top, offset + len(text) - len(c.text))
                docs.append(self._doc([{"index": c.index, "text": text,
                                        "logprobs": protocol.join_logprobs(prompt, lps),
                                        "finish_reason": reason}]))  # fmt: skip
        return docs

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        return {**self._doc([]), "usage": usage}


def _include_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


async def _answer(
    request: Request, server: Any, body: dict[str, Any], call: LLMCall, chat: bool, echo: str | None
) -> Response:
    """Run a completions or chat call: its chunks as a stream, or its one response (499
    when the client went away first)."""
    ireq = _inference_request(server, body, call)
    prompt_only = not chat and protocol.scores_prompt_only(body)
    if call.stream:
        chunks = _Chunks(ireq.model_name, chat, call.params, echo, prompt_only)
        return await _stream(ireq, server, chunks, _include_usage(body))
    out = await _complete(request, ireq, server)
    if out is None:
        return Response(status_code=499)
    if chat:
        return _json(protocol.chat_response(out, ireq.model_name, call.params))
    if prompt_only:
        out = protocol.prompt_only(out)
    return _json(protocol.completion_response(out, ireq.model_name, call.params, echo))


async def completions(request: Request) -> Response:
    try:
        server = _server(request)
        body = await _body(request)
        params = protocol.sampling_params(body, chat=False)
        text, token_ids = protocol.completion_prompt(body)
        stream = bool(body.get("stream"))
        echo = (text or "") if body.get("echo") else None
        call = LLMCall(params=params, prompt=text, prompt_token_ids=token_ids, stream=stream)
        return await _answer(request, server, body, call, chat=False, echo=echo)
    except Exception as exc:
        return _error(as_triton_error(exc))


async def chat_completions(request: Request) -> Response:
    try:
        server = _server(request)
        body = await _body(request)
        params = protocol.sampling_params(body, chat=True)
        messages = protocol.chat_messages(body)
        stream = bool(body.get("stream"))
        kwargs = body.get("chat_template_kwargs")
        call = LLMCall(
            params=params,
            messages=messages,
            chat_template_kwargs=kwargs if isinstance(kwargs, dict) else None,
            stream=stream,
        )
        return await _answer(request, server, body, call, chat=True, echo=None)
    except Exception as exc:
        return _error(as_triton_error(exc))


def openai_routes() -> list[BaseRoute]:
    """The /v1 routes; they find the InferenceServer through the HTTP app's state."""
    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]
