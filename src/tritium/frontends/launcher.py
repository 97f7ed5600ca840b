"""`tritium serve`: one asyncio loop (uvloop) running the core, HTTP, gRPC and metrics.

SIGTERM / SIGINT start a graceful shutdown: stop accepting, let in-flight requests finish
(up to --exit-timeout-secs), then stop the core (which unloads every model).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Generator, Sequence
from typing import Any

import uvicorn

from tritium.frontends.grpc_server import create_grpc_server
from tritium.frontends.http import create_app
from tritium.frontends.http.protocol import CoalescingHttpToolsProtocol
from tritium.frontends.metrics import create_metrics_app
from tritium.server.core import InferenceServer
from tritium.server.options import ServerOptions

log = logging.getLogger("tritium.server")


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the launcher owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_socket(address: str, port: int) -> socket.socket:
    """A listening TCP socket on address:port (port 0: the OS picks)."""
    infos = socket.getaddrinfo(
        address or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit TCP_NODELAY (Linux): without it the response body waits for
    # the client's delayed ACK of the headers (Nagle), ~10-40 ms per request.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(sockaddr)
    except OSError as e:
        sock.close()
        raise OSError(f"Socket '{address}:{port}' already in use ({e.strerror})") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _display(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _uvicorn_server(app: Any, options: ServerOptions) -> _Uvicorn:
    config = uvicorn.Config(
        app,
        http=CoalescingHttpToolsProtocol,  # httptools, one write per response
        ws="none",
        lifespan="off",
        access_log=False,
        # Triton sends neither Server nor Date headers and ignores X-Forwarded-*: less
        # work per request.
        proxy_headers=False,
        server_header=False,
        date_header=False,
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=max(1, int(options.exit_timeout_secs)),
        timeout_keep_alive=60,
    )
    return _Uvicorn(config)


def configure_logging(options: ServerOptions) -> None:
    """Triton-like one-line records: <level><date> <time> <pid> <logger>] <message>."""
    level = logging.WARNING
    if options.log_info:
        level = logging.INFO
    if options.log_verbose > 0:
        level = logging.DEBUG
    handler: logging.Handler = (
        logging.FileHandler(options.log_file)
        if options.log_file
        else logging.StreamHandler(sys.stderr)
    )
    datefmt = "%Y-%m-%dT%H:%M:%S" if options.log_format == "ISO8601" else "%m%d %H:%M:%S"
    handler.setFormatter(
        logging.Formatter("%(levelname).1s%(asctime)s %(process)d %(name)s] %(message)s", datefmt)
    )
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler)
    root.setLevel(level)


async def run_server(
    options: ServerOptions, extra_routes: Sequence[Any] = (), stop: asyncio.Event | None = None
) -> int:
    """Start everything, serve until `stop` is set (or a signal arrives), shut down."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)

    server = InferenceServer(options)
    try:
        await server.start()
    except Exception as e:
        log.error("failed to start the inference server: %s", e)
        if options.exit_on_error:
            with contextlib.suppress(Exception):
                await server.stop(timeout_s=0)
            return 1

    tasks: list[asyncio.Task[Any]] = []
    http_server = metrics_server = grpc_server = None
    try:
        if options.allow_grpc:
            grpc_server, port = create_grpc_server(server, options.grpc_address, options.grpc_port)
            await grpc_server.start()
            log.info("Started GRPCInferenceService at %s", _display(options.grpc_address, port))
        if options.allow_http:
            sock = bind_socket(options.http_address, options.http_port)
            http_server = _uvicorn_server(create_app(server, options, extra_routes), options)
            tasks.append(asyncio.ensure_future(http_server.serve(sockets=[sock])))
            port = sock.getsockname()[1]
            log.info("Started HTTPService at %s", _display(options.http_address, port))
        if options.allow_metrics:
            sock = bind_socket(options.metrics_address, options.metrics_port)
            app = create_metrics_app(
                server, cpu=options.allow_cpu_metrics, gpu=options.allow_gpu_metrics
            )
            metrics_server = _uvicorn_server(app, options)
            tasks.append(asyncio.ensure_future(metrics_server.serve(sockets=[sock])))
            port = sock.getsockname()[1]
            log.info("Started Metrics Service at %s", _display(options.metrics_address, port))
    except OSError as e:
        log.error("failed to start the endpoints: %s", e)
        stop.set()
        code = 1
    else:
        code = 0

    # Serve until asked to stop, or until an endpoint dies on its own.
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    log.info("Stopping: draining in-flight requests (up to %ss)", options.exit_timeout_secs)

    for s in (http_server, metrics_server):
        if s is not None:
            s.should_exit = True
    drains: list[Any] = [*tasks]
    if grpc_server is not None:
        drains.append(grpc_server.stop(options.exit_timeout_secs))
    results = await asyncio.gather(*drains, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
            log.error("endpoint stopped with an error: %s", r)
    try:
        await server.stop(timeout_s=options.exit_timeout_secs)
    except Exception as e:
        log.error("error while stopping the inference server: %s", e)
    log.info("Stopped")
    return code


def serve(options: ServerOptions) -> int:
    """Entry point of `tritium serve`; returns the process exit code."""
    configure_logging(options)
    from tritium.frontends.openai import openai_routes  # the OpenAI API on the HTTP port

    routes = openai_routes()
    try:
        import uvloop
    except ImportError:  # uvloop is optional (e.g. Windows)
        return asyncio.run(run_server(options, routes))
    return uvloop.run(run_server(options, routes))
