"""`inference.GRPCInferenceService` (grpc.aio) and `grpc.health.v1.Health` over InferenceServer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tritium.frontends.errors import as_triton_error, grpc_status
from tritium.frontends.grpc_codec import (
    parameter_value,
    parse_version,
    request_from_proto,
    response_to_proto,
)
from tritium.frontends.response_stream import ResponseStream
from tritium.frontends.shared_memory import manager_for
from tritium.server.core import InferenceServer
from tritium.server.errors import TritonError, unsupported
from tritium.server.types import InferenceRequest

log = logging.getLogger("tritium.frontends.grpc")

MAX_MESSAGE_BYTES = 1 << 30  # 1 GiB, far above any sane tensor
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 7_200_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 2),
    ("grpc.http2.min_ping_interval_without_data_ms", 300_000),
    ("grpc.so_reuseport", 0),
]
DECOUPLED_ON_INFER = "ModelInfer RPC doesn't support models with decoupled transaction policy"


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    err = as_triton_error(exc)
    await context.abort(grpc_status(err), err.message)


async def _consume(server: InferenceServer, ireq: InferenceRequest) -> list[Any]:
    """Every response of one request; a cancelled RPC cancels the request."""
    stream = ResponseStream(ireq, server.infer(ireq))
    try:
        return [r async for r in stream]
    finally:
        await stream.aclose()


class GRPCInferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Triton's gRPC API. Errors become gRPC status codes through frontends.errors."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server
        self.shm = manager_for(server)

    # -- health and metadata --------------------------------------------------------------
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=self.server.is_live())

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.server.is_ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            ready = self.server.model_ready(request.name, parse_version(request.version))
        except TritonError:
            ready = False
        return service_pb2.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        try:
            meta = self.server.metadata()
            return service_pb2.ServerMetadataResponse(
                name=meta["name"], version=meta["version"], extensions=meta.get("extensions", [])
            )
        except Exception as e:
            await _abort(context, e)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            meta = self.server.model_metadata(request.name, parse_version(request.version))
            return json_format.ParseDict(
                meta, service_pb2.ModelMetadataResponse(), ignore_unknown_fields=True
            )
        except Exception as e:
            await _abort(context, e)

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        try:
            config = self.server.model_config(request.name, parse_version(request.version))
            return service_pb2.ModelConfigResponse(config=config)
        except Exception as e:
            await _abort(context, e)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        try:
            stats = self.server.statistics(request.name, parse_version(request.version))
            return json_format.ParseDict(
                stats, service_pb2.ModelStatisticsResponse(), ignore_unknown_fields=True
            )
        except Exception as e:
            await _abort(context, e)

    # -- inference ------------------------------------------------------------------------
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        try:
            version = parse_version(request.model_version)
            handle = self.server.get_model(request.model_name, version)
            if handle.decoupled:
                raise unsupported(DECOUPLED_ON_INFER)
            ireq = request_from_proto(request, self.shm)
            responses = [r for r in await _consume(self.server, ireq) if r.outputs or r.error]
            if len(responses) != 1:
                raise TritonError(f"expected a single response, got {len(responses)}")
            if responses[0].error is not None:
                raise responses[0].error
            return response_to_proto(responses[0], ireq, handle.name, handle.version, self.shm)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await _abort(context, e)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        """Bidirectional: each request runs as its own task, so responses interleave."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()
        done = object()

        async def run(pb: Any) -> None:
            stream: ResponseStream | None = None
            try:
                empty_final = pb.parameters.get("triton_enable_empty_final_response")
                send_empty_final = bool(empty_final is not None and parameter_value(empty_final))
                handle = self.server.get_model(pb.model_name, parse_version(pb.model_version))
                ireq = request_from_proto(pb, self.shm)
                stream = ResponseStream(ireq, self.server.infer(ireq))
                async for r in stream:
                    if r.error is not None:
                        # A model's error response: id, model name and the final flag.
                        queue.put_nowait(self._model_error(pb, handle.name, r))
                        continue
                    if r.final and not r.outputs and not send_empty_final:
                        continue
                    if r.final and not r.outputs:
                        # Triton's flag-only final response has no model_version.
                        out = service_pb2.ModelInferResponse(model_name=handle.name, id=ireq.id)
                    else:
                        out = response_to_proto(r, ireq, handle.name, handle.version, self.shm)
                    out.parameters["triton_final_response"].bool_param = r.final
                    queue.put_nowait(service_pb2.ModelStreamInferResponse(infer_response=out))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                queue.put_nowait(self._stream_error(pb, as_triton_error(e)))
            finally:
                if stream is not None:
                    await stream.aclose()

        async def read() -> None:
            try:
                async for pb in request_iterator:
                    task = asyncio.ensure_future(run(pb))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*list(tasks), return_exceptions=True)
                # requests started while gathering are covered: the reader is done, so none
            finally:
                queue.put_nowait(done)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                item = await queue.get()
                if item is done:
                    return
                yield item
        finally:
            # The stream ended or the client cancelled: cancel whatever is still running.
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    @staticmethod
    def _stream_error(pb: Any, err: TritonError) -> Any:
        """A request refused before it reached a model: only its id, as Triton."""
        return service_pb2.ModelStreamInferResponse(
            error_message=err.message, infer_response=service_pb2.ModelInferResponse(id=pb.id)
        )

    @staticmethod
    def _model_error(pb: Any, model_name: str, response: Any) -> Any:
        out = service_pb2.ModelInferResponse(id=pb.id, model_name=model_name)
        out.parameters["triton_final_response"].bool_param = response.final
        return service_pb2.ModelStreamInferResponse(
            error_message=response.error.message, infer_response=out
        )

    # -- repository -----------------------------------------------------------------------
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        try:
            models = self.server.repository_index(ready_only=request.ready)
            return json_format.ParseDict(
                {"models": models},
                service_pb2.RepositoryIndexResponse(),
                ignore_unknown_fields=True,
            )
        except Exception as e:
            await _abort(context, e)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        try:
            config: str | None = None
            files: dict[str, bytes] = {}
            for key, param in request.parameters.items():
                value = parameter_value(param)
                if key == "config":
                    config = str(value)
                elif key.startswith("file:"):
                    files[key] = value if isinstance(value, bytes) else str(value).encode()
            await self.server.load_model(request.model_name, config, files or None)
            return service_pb2.RepositoryModelLoadResponse()
        except Exception as e:
            await _abort(context, e)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        try:
            param = request.parameters.get("unload_dependents")
            dependents = bool(param is not None and parameter_value(param))
            await self.server.unload_model(request.model_name, unload_dependents=dependents)
            return service_pb2.RepositoryModelUnloadResponse()
        except Exception as e:
            await _abort(context, e)

    # -- system shared memory -----------------------------------------------------------
    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        try:
            regions = self.shm.status(request.name)
        except TritonError as e:
            # An unknown region is INVALID_ARGUMENT over gRPC (404 over HTTP).
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, e.message)
        response = service_pb2.SystemSharedMemoryStatusResponse()
        for region in regions:
            response.regions[region["name"]].CopyFrom(
                service_pb2.SystemSharedMemoryStatusResponse.RegionStatus(**region)
            )
        return response

    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        try:
            self.shm.register(request.name, request.key, request.offset, request.byte_size)
        except Exception as e:
            await _abort(context, e)
        return service_pb2.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        self.shm.unregister(request.name)
        return service_pb2.SystemSharedMemoryUnregisterResponse()

    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        if request.name:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Unable to find cuda shared memory region: '{request.name}'",
            )
        return service_pb2.CudaSharedMemoryStatusResponse()

    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "CUDA shared memory is not supported by this server (no GPU tensor path); "
            "use system shared memory",
        )

    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        return service_pb2.CudaSharedMemoryUnregisterResponse()

    # -- settings -------------------------------------------------------------------------
    async def TraceSetting(self, request: Any, context: Any) -> Any:
        try:
            model = request.model_name
            if request.settings:
                update: dict[str, Any] = {}
                for key, setting in request.settings.items():
                    values = list(setting.value)
                    if key == "trace_level":
                        update[key] = values or None
                    else:
                        update[key] = values[0] if values else None
                current = self.server.update_trace_settings(update, model)
            else:
                current = self.server.trace_settings(model)
            response = service_pb2.TraceSettingResponse()
            for key, value in current.items():
                values = value if isinstance(value, list) else [value]
                response.settings[key].value.extend(str(v) for v in values)
            return response
        except Exception as e:
            await _abort(context, e)

    async def LogSettings(self, request: Any, context: Any) -> Any:
        try:
            if request.settings:
                update = {k: parameter_value(v) for k, v in request.settings.items()}
                current = self.server.update_log_settings(update)
            else:
                current = self.server.log_settings()
            response = service_pb2.LogSettingsResponse()
            for key, value in current.items():
                if isinstance(value, bool):
                    response.settings[key].bool_param = value
                elif isinstance(value, int):
                    response.settings[key].uint32_param = value
                else:
                    response.settings[key].string_param = str(value)
            return response
        except Exception as e:
            await _abort(context, e)


class HealthService(health_pb2_grpc.HealthServicer):
    """grpc.health.v1: SERVING only when the server is ready."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    async def Check(self, request: Any, context: Any) -> Any:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.server.is_ready()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return health_pb2.HealthCheckResponse(status=status)


def create_grpc_server(
    server: InferenceServer, address: str, port: int
) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server bound to address:port (port 0 picks one); returns (server, port)."""
    grpc_server = grpc.aio.server(options=SERVER_OPTIONS)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        GRPCInferenceService(server), grpc_server
    )
    health_pb2_grpc.add_HealthServicer_to_server(HealthService(server), grpc_server)
    host = f"[{address}]" if ":" in address else address
    bound = grpc_server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"Socket '{address}:{port}' already in use")
    return grpc_server, bound
