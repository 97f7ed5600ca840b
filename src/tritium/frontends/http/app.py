"""The KServe v2 / Triton HTTP API as a Starlette app (served by uvicorn).

`create_app(server, options, extra_routes=...)` is the factory; the OpenAI API and other
frontends mount their routes through `extra_routes`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import gzip
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, Router

from tritium.frontends.errors import as_triton_error, http_status
from tritium.frontends.http.body import read_body
from tritium.frontends.http.generate import (
    EXACTLY_ONE_RESPONSE,
    build_generate_request,
    generate_response_json,
    sse_error,
    sse_event,
)
from tritium.frontends.http.infer_codec import (
    decode_json,
    encode_infer_response,
    error_body,
    parse_header_length,
    parse_infer_request,
    parse_raw_request,
)
from tritium.frontends.response_stream import ResponseStream
from tritium.frontends.shared_memory import manager_for
from tritium.repository.model_config import config_to_dict
from tritium.server.core import InferenceServer
from tritium.server.errors import TritonError, internal, invalid_arg, not_found, unsupported
from tritium.server.options import ServerOptions
from tritium.server.types import InferenceRequest, InferenceResponse

log = logging.getLogger("tritium.frontends.http")

CUDA_SHM_UNSUPPORTED = (
    "CUDA shared memory is not supported by this server (no GPU tensor path); "
    "use system shared memory"
)
DECOUPLED_ON_INFER = "HTTP end point doesn't support models with decoupled transaction policy"
JSON = "application/json"
Handler = Callable[[Request], Awaitable[Response]]


def json_response(doc: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(doc), status_code=status, media_type=JSON)


def error_response(err: TritonError, status: int | None = None) -> Response:
    return Response(error_body(err), status_code=status or http_status(err), media_type=JSON)


def triton_errors(handler: Handler) -> Handler:
    """Turn TritonError (and anything unexpected) into Triton's {"error": ...} response."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as e:  # the one place errors become responses
            return error_response(as_triton_error(e))

    return wrapped


class ClientDisconnected(Exception):
    """The HTTP client went away before its response was ready."""


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def collect_responses(
    request: Request, ireq: InferenceRequest, responses: AsyncIterator[InferenceResponse]
) -> list[InferenceResponse]:
    """Every response of `ireq`, consumed in the handler's own task (no extra task per
    request on the hot path). A watcher waits for the client to go away; if it does first,
    the request is cancelled (the model sees is_cancelled()), the handler's wait is
    interrupted, and ClientDisconnected is raised."""
    task = asyncio.current_task()
    assert task is not None
    state = {"done": False, "gone": False}

    async def watch() -> None:
        await _wait_disconnect(request)
        if not state["done"]:
            state["gone"] = True
            ireq.cancel()
            task.cancel()

    watcher = asyncio.ensure_future(watch())
    out: list[InferenceResponse] = []
    try:
        async for r in responses:
            out.append(r)
        state["done"] = True
        return out
    except asyncio.CancelledError:
        if not state["gone"]:
            raise
        # The core's iterator has cancelled the request on its way out.
        task.uncancel()
        raise ClientDisconnected from None
    finally:
        state["done"] = True
        watcher.cancel()


def _data_responses(responses: list[InferenceResponse]) -> list[InferenceResponse]:
    """Drop flag-only final responses (no outputs, no error)."""
    return [r for r in responses if r.outputs or r.error is not None]


class HTTPFrontend:
    """Route handlers over one InferenceServer."""

    def __init__(self, server: InferenceServer, options: ServerOptions) -> None:
        self.server = server
        self.options = options
        self.shm = manager_for(server)

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _model(request: Request) -> tuple[str, int]:
        params = request.path_params
        return params["model"], int(params.get("version", -1))

    async def _json_body(self, request: Request) -> Any:
        body = await read_body(request, self.options.http_max_input_size)
        return decode_json(body) if body else None

    # -- health and metadata --------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return Response(status_code=200 if self.server.is_live() else 400)

    async def ready(self, request: Request) -> Response:
        return Response(status_code=200 if self.server.is_ready() else 400)

    async def server_metadata(self, request: Request) -> Response:
        return json_response(self.server.metadata())

    async def model_metadata(self, request: Request) -> Response:
        name, version = self._model(request)
        return json_response(self.server.model_metadata(name, version))

    async def model_ready(self, request: Request) -> Response:
        name, version = self._model(request)
        if not self.server.model_ready(name, version):
            return error_response(invalid_arg("Model version not ready"), 400)
        return Response(status_code=200)

    async def model_config(self, request: Request) -> Response:
        name, version = self._model(request)
        return json_response(config_to_dict(self.server.model_config(name, version)))

    async def model_stats(self, request: Request) -> Response:
        params = request.path_params
        name = params.get("model", "")
        version = int(params.get("version", -1))
        return json_response(self.server.statistics(name, version))

    # -- inference ------------------------------------------------------------------------
    async def infer(self, request: Request) -> Response:
        name, version = self._model(request)
        handle = self.server.get_model(name, version)
        if handle.decoupled:
            raise unsupported(DECOUPLED_ON_INFER)
        body = await read_body(request, self.options.http_max_input_size)
        header_length = parse_header_length(
            request.headers.get("inference-header-content-length"), len(body)
        )
        if header_length == 0:
            config = self.server.model_config(name, version)
            ireq, fmt = parse_raw_request(body, name, version, config)
        else:
            ireq, fmt = parse_infer_request(body, header_length, name, version, self.shm)
        try:
            responses = await collect_responses(request, ireq, self.server.infer(ireq))
        except ClientDisconnected:
            return Response(status_code=499)
        data = _data_responses(responses)
        if len(data) != 1:
            raise internal(f"expected a single response, got {len(data)}")
        out, json_length = encode_infer_response(data[0], ireq, name, handle.version, fmt, self.shm)
        if json_length is None:
            return Response(out, media_type=JSON)
        return Response(
            out,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(json_length)},
        )

    async def _generate_request(self, request: Request) -> tuple[InferenceRequest, int]:
        name, version = self._model(request)
        handle = self.server.get_model(name, version)
        metadata = self.server.model_metadata(name, version)
        if request.headers.get("content-encoding", "identity").lower() not in ("", "identity"):
            raise invalid_arg("Unsupported content-encoding, only 'identity' is supported.")
        doc = await self._json_body(request)
        ireq = build_generate_request(doc, name, version, metadata.get("inputs", []))
        return ireq, handle.version

    async def generate(self, request: Request) -> Response:
        ireq, version = await self._generate_request(request)
        try:
            responses = await collect_responses(request, ireq, self.server.infer(ireq))
        except ClientDisconnected:
            return Response(status_code=499)
        data = _data_responses(responses)
        if len(data) != 1:
            return json_response({"error": EXACTLY_ONE_RESPONSE})
        if data[0].error is not None:
            # Triton's generate answers a model's error with 400, whatever its kind.
            return error_response(data[0].error, 400)
        return json_response(generate_response_json(data[0], ireq, ireq.model_name, version))

    async def generate_stream(self, request: Request) -> Response:
        ireq, version = await self._generate_request(request)
        responses = ResponseStream(ireq, self.server.infer(ireq))

        async def next_data() -> InferenceResponse | None:
            async for r in responses:
                if r.outputs or r.error is not None:
                    return r
            return None

        try:
            first = await next_data()  # validation errors raise here -> JSON error
        except BaseException:
            await responses.aclose()
            raise
        if first is not None and first.error is not None:
            await responses.aclose()
            return Response(sse_error(first.error), status_code=400, media_type="text/event-stream")

        async def events() -> AsyncIterator[bytes]:
            # Starlette cancels this generator when the client disconnects; aclose() then
            # cancels the request before its iterator is closed.
            try:
                r = first
                while r is not None:
                    if r.error is not None:
                        yield sse_error(r.error)
                    else:
                        yield sse_event(generate_response_json(r, ireq, ireq.model_name, version))
                    try:
                        r = await next_data()
                    except Exception as e:  # a late error is an event, not a status
                        yield sse_error(as_triton_error(e))
                        break
            finally:
                await responses.aclose()

        return StreamingResponse(events(), media_type="text/event-stream")

    # -- repository -----------------------------------------------------------------------
    async def repository_index(self, request: Request) -> Response:
        doc = await self._json_body(request)
        ready = False
        if isinstance(doc, dict) and "ready" in doc:
            if not isinstance(doc["ready"], bool):
                raise internal("attempt to access JSON non-boolean as boolean")
            ready = doc["ready"]
        return json_response(self.server.repository_index(ready_only=ready))

    async def repository_load(self, request: Request) -> Response:
        name = request.path_params["model"]
        doc = await self._json_body(request)
        config: str | None = None
        files: dict[str, bytes] = {}
        params = doc.get("parameters", {}) if isinstance(doc, dict) else {}
        if not isinstance(params, dict):
            raise internal("Unable to parse 'parameters'")
        for key, value in params.items():
            if not isinstance(value, str):
                raise internal("attempt to access JSON non-string as string")
            if key == "config":
                config = value
            elif key.startswith("file:"):
                try:
                    files[key] = base64.b64decode(value)
                except (binascii.Error, ValueError):
                    raise invalid_arg(f"failed to decode base64 content of '{key}'") from None
        await self.server.load_model(name, config, files or None)
        return Response(status_code=200, media_type=JSON)

    async def repository_unload(self, request: Request) -> Response:
        name = request.path_params["model"]
        doc = await self._json_body(request)
        dependents = False
        if isinstance(doc, dict) and isinstance(doc.get("parameters"), dict):
            value = doc["parameters"].get("unload_dependents", False)
            if not isinstance(value, bool):
                raise internal("Unable to parse 'unload_dependents'")
            dependents = value
        await self.server.unload_model(name, unload_dependents=dependents)
        return Response(status_code=200, media_type=JSON)

    # -- settings -------------------------------------------------------------------------
    async def logging(self, request: Request) -> Response:
        if request.method == "POST":
            doc = await self._json_body(request)
            if not isinstance(doc, dict):
                raise internal("failed to parse the request JSON buffer")
            return json_response(self.server.update_log_settings(doc))
        return json_response(self.server.log_settings())

    async def trace_setting(self, request: Request) -> Response:
        model = request.path_params.get("model", "")
        if model and not self.server.model_ready(model):
            raise invalid_arg(f"Request for unknown model : {model}")
        if request.method == "POST":
            doc = await self._json_body(request)
            if not isinstance(doc, dict):
                raise internal("failed to parse the request JSON buffer")
            return json_response(self.server.update_trace_settings(doc, model))
        return json_response(self.server.trace_settings(model))

    # -- system shared memory -----------------------------------------------------------
    async def shm_status(self, request: Request) -> Response:
        return json_response(self.shm.status(request.path_params.get("region")))

    async def shm_register(self, request: Request) -> Response:
        name = request.path_params.get("region")
        if not name:
            raise invalid_arg("a shared memory region name is required to register")
        doc = await self._json_body(request)
        if not isinstance(doc, dict):
            raise internal("failed to parse the request JSON buffer")
        key = doc.get("key")
        if not isinstance(key, str):
            raise internal("Unable to parse 'key': attempt to access JSON non-string as string")
        sizes = []
        for field in ("offset", "byte_size"):
            value = doc.get(field, 0) if field == "offset" else doc.get(field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise internal(
                    f"Unable to parse '{field}': attempt to access JSON non-unsigned-integer "
                    "as unsigned-integer"
                )
            sizes.append(value)
        self.shm.register(name, key, sizes[0], sizes[1])
        return Response(status_code=200, media_type=JSON)

    async def shm_unregister(self, request: Request) -> Response:
        self.shm.unregister(request.path_params.get("region"))
        return Response(status_code=200, media_type=JSON)

    # -- CUDA shared memory (no GPU path: status is empty, register is refused) -------------
    async def cuda_shm_status(self, request: Request) -> Response:
        region = request.path_params.get("region")
        if region:
            raise not_found(f"Unable to find cuda shared memory region: '{region}'")
        return json_response([])

    async def cuda_shm_register(self, request: Request) -> Response:
        raise unsupported(CUDA_SHM_UNSUPPORTED)

    async def cuda_shm_unregister(self, request: Request) -> Response:
        return Response(status_code=200, media_type=JSON)

    # -- routes ---------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        def r(path: str, handler: Handler, methods: Sequence[str]) -> Route:
            return Route(path, triton_errors(handler), methods=list(methods))

        get, post, both = ("GET",), ("POST",), ("GET", "POST")
        model = "/v2/models/{model}"
        versioned = "/v2/models/{model}/versions/{version:int}"
        routes: list[BaseRoute] = [
            r("/v2/health/live", self.live, get),
            r("/v2/health/ready", self.ready, get),
            r("/v2", self.server_metadata, get),
            r("/v2/models/stats", self.model_stats, get),
            r("/v2/repository/index", self.repository_index, post),
            r("/v2/repository/models/{model}/load", self.repository_load, post),
            r("/v2/repository/models/{model}/unload", self.repository_unload, post),
            r("/v2/logging", self.logging, both),
            r("/v2/trace/setting", self.trace_setting, both),
        ]
        for base in (model, versioned):
            routes += [
                r(base, self.model_metadata, get),
                r(base + "/ready", self.model_ready, get),
                r(base + "/config", self.model_config, get),
                r(base + "/stats", self.model_stats, get),
                r(base + "/infer", self.infer, post),
                r(base + "/generate", self.generate, post),
                r(base + "/generate_stream", self.generate_stream, post),
                r(base + "/trace/setting", self.trace_setting, both),
            ]
        shm_handlers = {
            "systemsharedmemory": (self.shm_status, self.shm_register, self.shm_unregister),
            "cudasharedmemory": (
                self.cuda_shm_status,
                self.cuda_shm_register,
                self.cuda_shm_unregister,
            ),
        }
        for kind, (status, register, unregister) in shm_handlers.items():
            for prefix in (f"/v2/{kind}", f"/v2/{kind}/region/{{region}}"):
                routes += [
                    r(prefix + "/status", status, get),
                    r(prefix + "/register", register, post),
                    r(prefix + "/unregister", unregister, post),
                ]
        return routes


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, exc.detail)
    return Response(
        msgspec.json.encode({"error": message}),
        status_code=exc.status_code,
        media_type=JSON,
        headers=exc.headers,
    )


_INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([0-9]+))?/infer")


class TritonHTTPApp(Starlette):
    """The Starlette app, with a direct path for `POST .../infer`, the hot endpoint: it
    goes straight to the handler, past the middleware stack and the route table (about a
    third of a small request's time in the server). Responses are the same: errors
    through the same handler, gzip when the client accepts it, as GZipMiddleware does."""

    def __init__(self, *args: Any, frontend: HTTPFrontend, gzip_minimum_size: int, **kw: Any):
        super().__init__(*args, **kw)
        self._frontend = frontend
        self._infer = triton_errors(frontend.infer)
        self._gzip_minimum_size = gzip_minimum_size

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            m = _INFER_PATH.fullmatch(scope["path"])
            if m is not None:
                scope["app"] = self
                scope["path_params"] = (
                    {"model": m.group(1), "version": int(m.group(2))}
                    if m.group(2) is not None
                    else {"model": m.group(1)}
                )
                request = Request(scope, receive)
                response = await self._infer(request)
                if len(response.body) >= self._gzip_minimum_size and _accepts_gzip(scope):
                    response = _gzipped(response)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _accepts_gzip(scope: Any) -> bool:
    for name, value in scope["headers"]:
        if name == b"accept-encoding":
            return b"gzip" in value
    return False


def _gzipped(response: Response) -> Response:
    body = gzip.compress(response.body, compresslevel=9)
    headers = {
        k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")
    }
    headers["Content-Encoding"] = "gzip"
    headers["Vary"] = "Accept-Encoding"
    return Response(
        body, status_code=response.status_code, headers=headers, media_type=response.media_type
    )


def create_app(
    server: InferenceServer,
    options: ServerOptions,
    extra_routes: Sequence[BaseRoute] = (),
    gzip_minimum_size: int = 500,
) -> Starlette:
    """The HTTP app. `extra_routes` (e.g. the OpenAI API) are matched before the v2 routes."""
    frontend = HTTPFrontend(server, options)
    extensions = getattr(server, "extensions", None)
    if extensions is not None and "binary_tensor_data" not in extensions:
        extensions.append("binary_tensor_data")  # the core lists what frontends add
    app = TritonHTTPApp(
        routes=[*extra_routes, *frontend.routes()],
        middleware=[Middleware(GZipMiddleware, minimum_size=gzip_minimum_size)],
        exception_handlers={HTTPException: _http_exception},
        frontend=frontend,
        gzip_minimum_size=gzip_minimum_size,
    )
    # "/v2/" is Not Found, as in Triton: no redirect to the path without the slash.
    router: Router = app.router
    router.redirect_slashes = False
    app.state.frontend = frontend
    return app
