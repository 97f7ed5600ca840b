"""pb_utils' data classes: Tensor, InferenceRequest, InferenceResponse and the response sender.

Names, signatures and behaviour follow Triton's python_backend (pb_stub.cc bindings and
triton_python_backend_utils.py), so existing model.py files run unchanged.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np

from tritium.backends.python import runtime
from tritium.backends.python.pb_errors import TritonError, TritonModelException

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1

# TRITONSERVER_DataType values, as pb_utils reports them from Tensor.triton_dtype().
TRITON_DTYPE_CODES: dict[str, int] = {
    "BOOL": 1,
    "UINT8": 2,
    "UINT16": 3,
    "UINT32": 4,
    "UINT64": 5,
    "INT8": 6,
    "INT16": 7,
    "INT32": 8,
    "INT64": 9,
    "FP16": 10,
    "FP32": 11,
    "FP64": 12,
    "BYTES": 13,
    "BF16": 14,
}

_NUMPY_TO_WIRE: dict[np.dtype, str] = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.object_): "BYTES",
}


def _params_json(parameters: Any) -> str:
    if parameters is None:
        return "{}"
    if isinstance(parameters, str):
        json.loads(parameters)  # reject malformed JSON early, where the model can see it
        return parameters
    if isinstance(parameters, dict):
        for key, value in parameters.items():
            if not isinstance(key, str) or not isinstance(value, bool | int | str):
                raise TritonModelException(
                    "Expect parameters keys to have type str and values to have type bool, "
                    "int or str"
                )
        return json.dumps(parameters)
    raise TritonModelException("Expect parameters to be a dict or a JSON string")


class Tensor:
    """A named tensor: `Tensor(name, numpy_array)`."""

    def __init__(self, name: str, numpy_array: np.ndarray, triton_dtype: str | None = None) -> None:
        if not isinstance(numpy_array, np.ndarray):
            numpy_array = np.asarray(numpy_array)
        if triton_dtype is None:
            numpy_array, triton_dtype = self._normalize(numpy_array)
        self._name = name
        self._array = numpy_array
        self._datatype = triton_dtype

    @staticmethod
    def _normalize(array: np.ndarray) -> tuple[np.ndarray, str]:
        kind = array.dtype.kind
        if kind in ("S", "U"):
            # Fixed-width strings become BYTES; numpy strips trailing NULs of 'S', as Triton warns.
            items = [
                x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in array.reshape(-1)
            ]
            converted = np.empty(len(items), dtype=np.object_)
            converted[:] = items
            return converted.reshape(array.shape), "BYTES"
        dtype = array.dtype.newbyteorder("=") if not array.dtype.isnative else array.dtype
        wire = _NUMPY_TO_WIRE.get(dtype)
        if wire is None:
            raise TritonModelException(
                f"Tensor dtype used for numpy_array ({array.dtype}) is not supported by the "
                "Python backend. Please use np.object_ for strings."
            )
        if dtype is not array.dtype:
            array = array.astype(dtype)
        return array, wire

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        if self._datatype == "BF16":
            raise TritonModelException(
                "tensor dtype is bf16 and cannot be converted to numpy. Use Tensor.to_dlpack() "
                "and/or Tensor.from_dlpack() instead."
            )
        return self._array

    def triton_dtype(self) -> int:
        return TRITON_DTYPE_CODES[self._datatype]

    def shape(self) -> list[int]:
        return [int(d) for d in self._array.shape]

    def is_cpu(self) -> bool:
        return True

    @property
    def datatype(self) -> str:
        """The wire datatype name ("FP32", "BYTES", "BF16" ...)."""
        return self._datatype

    def raw_array(self) -> np.ndarray:
        """The backing numpy array, BF16 as its uint16 bit pattern."""
        return self._array

    # -- DLPack ---------------------------------------------------------------------------
    def _dlpack_source(self) -> Any:
        if self._datatype == "BYTES":
            raise TritonModelException("DLPack does not support BYTES tensors")
        if self._datatype == "BF16":
            import torch  # only models that use BF16 pay for torch

            return torch.from_numpy(self._array.view(np.int16)).view(torch.bfloat16)
        return self._array

    def to_dlpack(self) -> Any:
        """A DLPack capsule of this tensor (shares memory)."""
        return self._dlpack_source().__dlpack__()

    def __dlpack__(self, stream: Any = None) -> Any:
        return self._dlpack_source().__dlpack__()

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU

    @staticmethod
    def from_dlpack(name: str, dlpack_tensor: Any) -> Tensor:
        """A Tensor from a DLPack capsule or any object with __dlpack__ (torch, numpy, jax)."""
        source = dlpack_tensor
        if not hasattr(source, "__dlpack__"):  # a bare capsule: only torch reads those here
            import torch as _torch

            source = _torch.utils.dlpack.from_dlpack(source)
        torch: Any = sys.modules.get("torch")
        if torch is not None and isinstance(source, torch.Tensor):
            tensor = source.detach()
            if tensor.device.type != "cpu":
                tensor = tensor.cpu()
            if tensor.dtype == torch.bfloat16:
                bits = tensor.contiguous().view(torch.int16).numpy().view(np.uint16)
                return Tensor(name, bits, triton_dtype="BF16")
            return Tensor(name, tensor.numpy())
        return Tensor(name, np.from_dlpack(source))

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, {self._datatype}, shape={self.shape()})"


class InferenceResponse:
    """`InferenceResponse(output_tensors, error=None, parameters=None)`."""

    def __init__(
        self,
        output_tensors: list[Tensor] | None = None,
        error: TritonError | None = None,
        parameters: dict[str, Any] | str | None = None,
    ) -> None:
        if output_tensors is None:
            output_tensors = []
        if not isinstance(output_tensors, list | tuple):
            raise TritonModelException('"output_tensors" must be a list.')
        self._output_tensors = list(output_tensors)
        self._error = error
        self._parameters = _params_json(parameters)

    def output_tensors(self) -> list[Tensor]:
        return self._output_tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        return self._parameters


class InferenceResponseSender:
    """What `request.get_response_sender()` returns: send(response=None, flags=0)."""

    def __init__(self, request: InferenceRequest) -> None:
        self._request = request
        self._closed = False

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        if self._closed:
            raise TritonModelException("Unable to send response. Response sender has been closed.")
        final = bool(flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        if response is None and not final:
            raise TritonModelException(
                "Inference Response object must be provided when the response flags is set to zero."
            )
        if response is not None and not isinstance(response, InferenceResponse):
            raise TritonModelException("send() expects a pb_utils.InferenceResponse")
        if final:
            self._closed = True
        runtime.current().send_response(self._request, response, final)

    def is_cancelled(self) -> bool:
        return self._request.is_cancelled()

    def is_closed(self) -> bool:
        return self._closed


class ResponseIterator:
    """The responses of a decoupled BLS call, in order; the last one may be flag-only (empty)."""

    def __init__(self, responses: Iterator[InferenceResponse]) -> None:
        self._responses = responses

    def __iter__(self) -> Iterator[InferenceResponse]:
        return self

    def __next__(self) -> InferenceResponse:
        return next(self._responses)

    def __aiter__(self) -> AsyncIterator[InferenceResponse]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[InferenceResponse]:
        done = object()
        while True:
            item = await asyncio.to_thread(next, self._responses, done)
            if item is done:
                return
            yield item  # type: ignore[misc]

    def cancel(self) -> None:
        """Triton cancels the BLS request; here the remaining responses are just drained."""


class InferenceRequest:
    """A request the model receives in execute(), or one it builds for BLS.

    BLS: `InferenceRequest(model_name=..., inputs=[...], requested_output_names=[...])`,
    then `exec(decoupled=False)` or `await async_exec(decoupled=False)`."""

    def __init__(
        self,
        request_id: str = "",
        correlation_id: int | str = 0,
        inputs: list[Tensor] | None = None,
        requested_output_names: list[str] | None = None,
        model_name: str = "",
        model_version: int = -1,
        flags: int = 0,
        timeout: int = 0,
        preferred_memory: Any = None,
        trace: Any = None,
        parameters: dict[str, Any] | str | None = None,
    ) -> None:
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._inputs = list(inputs or [])
        self._requested_output_names = list(requested_output_names or [])
        self._model_name = model_name
        self._model_version = int(model_version)
        self._flags = int(flags)
        self._timeout = int(timeout)
        self._parameters = _params_json(parameters)
        self._release_flags = 1  # TRITONSERVER_REQUEST_RELEASE_ALL
        # Set by the stub for requests the server handed over.
        self._key: int | None = None
        self._cancelled = False
        self._sender: InferenceResponseSender | None = None

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def request_id(self) -> str:
        return self._request_id

    def correlation_id(self) -> int | str:
        return self._correlation_id

    def flags(self) -> int:
        return self._flags

    def timeout(self) -> int:
        return self._timeout

    def parameters(self) -> str:
        return self._parameters

    def requested_output_names(self) -> list[str]:
        return self._requested_output_names

    def model_name(self) -> str:
        return self._model_name

    def model_version(self) -> int:
        return self._model_version

    def get_response_sender(self) -> InferenceResponseSender:
        if self._key is None:
            raise TritonModelException("only requests passed to execute() have a response sender")
        if self._sender is None:
            self._sender = InferenceResponseSender(self)
        return self._sender

    def is_cancelled(self) -> bool:
        return self._cancelled

    def set_release_flags(self, flags: int) -> None:
        self._release_flags = int(flags)

    def release_flags(self) -> int:
        return self._release_flags

    # -- BLS ------------------------------------------------------------------------------
    def exec(self, decoupled: bool = False) -> Any:
        """Run this request on `model_name` through the server; one InferenceResponse, or a
        ResponseIterator when `decoupled`."""
        if not self._model_name:
            raise TritonModelException("BLS requests need a model_name")
        responses = runtime.current().bls(self)
        if decoupled:
            return ResponseIterator(responses)
        first: InferenceResponse | None = None
        for response in responses:
            # A non-decoupled model answers once; a flag-only final response carries nothing.
            if first is None and (response.output_tensors() or response.has_error()):
                first = response
        return first if first is not None else InferenceResponse([])

    async def async_exec(self, decoupled: bool = False) -> Any:
        """exec() without blocking the stub's event loop."""
        return await asyncio.to_thread(self.exec, decoupled)

    def __repr__(self) -> str:
        return f"InferenceRequest(id={self._request_id!r}, inputs={self._inputs!r})"
