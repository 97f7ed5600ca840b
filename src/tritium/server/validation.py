"""Request validation against the model config, with Triton's own error messages
(core/src/infer_request.cc), and the reshape the backend expects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2

from tritium.server.backend import ModelConfig
from tritium.server.errors import invalid_arg
from tritium.server.input_order import triton_input_order
from tritium.server.types import InferenceRequest, Tensor, config_to_wire_dtype

_IMPLICIT_BATCH_NOTE = (
    "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension "
    "to be prepended to each input shape. If you want to specify the full shape including "
    "the batch dim in your input dims config, try setting max_batch_size to zero. See the "
    "model configuration docs for more info on max_batch_size."
)


def _dims(dims: list[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _dims_match(expected: Sequence[int], got: Sequence[int]) -> bool:
    return len(expected) == len(got) and all(
        e == -1 or e == g for e, g in zip(expected, got, strict=True)
    )


def _wire(dtype: int) -> str:
    return config_to_wire_dtype(model_config_pb2.DataType.Name(dtype))


@dataclass(frozen=True)
class _InputSpec:
    name: str
    wire: str
    dims: tuple[int, ...]  # with the batch dimension (-1) when the model batches
    reshape: tuple[int, ...] | None


@dataclass(frozen=True)
class _Plan:
    """What validation needs of a model config, read once (protobuf access is slow)."""

    inputs: dict[str, _InputSpec]
    required: tuple[str, ...]
    outputs: frozenset[str]
    batching: bool
    max_batch_size: int


_plans: dict[int, tuple[ModelConfig, _Plan]] = {}


def _plan(config: ModelConfig) -> _Plan:
    hit = _plans.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    batching = config.max_batch_size > 0
    inputs = {
        i.name: _InputSpec(
            i.name,
            _wire(i.data_type),
            tuple([-1, *i.dims] if batching else i.dims),
            tuple(i.reshape.shape) if i.HasField("reshape") else None,
        )
        for i in config.input
    }
    plan = _Plan(
        inputs,
        tuple(i.name for i in config.input if not i.optional),
        frozenset(o.name for o in config.output),
        batching,
        config.max_batch_size,
    )
    if len(_plans) > 1024:  # configs of unloaded models
        _plans.clear()
    _plans[id(config)] = (config, plan)  # the config is kept: its id stays unique
    return plan


def validate_request(config: ModelConfig, request: InferenceRequest) -> int:
    """Check inputs and requested outputs; reshape inputs that have `reshape`; return the
    request's batch size (1 for models without a batch dimension)."""
    plan = _plan(config)
    model = config.name
    required = plan.required
    # Walk the inputs in the order Triton's std::unordered_map does, so that messages name
    # the same input and list them the same way.
    given = triton_input_order(list(request.inputs))
    if len(given) > len(plan.inputs) or len(given) < len(required):
        prefix = f"[request id: {request.log_id}] "
        missing = "[" + "".join(f"'{n}'," for n in required if n not in request.inputs)
        missing = missing[:-1] + "]"  # Triton drops the last character, '[' when none
        got = "[" + ",".join(f"'{n}'" for n in given) + "]"
        if len(required) == len(plan.inputs):
            head = f"expected {len(plan.inputs)} inputs but got {len(given)} inputs"
        else:
            head = (
                f"expected number of inputs between {len(required)} and "
                f"{len(plan.inputs)} but got {len(given)} inputs"
            )
        raise invalid_arg(
            f"{prefix}{head} for model '{model}'. Got input(s) {got}, but missing required "
            f"input(s) {missing}. Please provide all required input(s)."
        )
    by_name = plan.inputs
    for name in given:
        if name not in by_name:
            raise invalid_arg(f"unexpected inference input '{name}' for model '{model}'")
    missing_required = [n for n in required if n not in request.inputs]
    if missing_required:
        raise invalid_arg(
            f"[request id: {request.log_id}] input '{missing_required[0]}' is required for "
            f"model '{model}'"
        )
    if request.requested_outputs is not None:
        for out in request.requested_outputs:
            if out.name not in plan.outputs:
                raise invalid_arg(f"unexpected inference output '{out.name}' for model '{model}'")

    batch_size = 1
    batching = plan.batching
    if batching:
        prefix = f"[request id: {request.log_id}] "
        batch_size = 0
        for name in given:
            tensor = request.inputs[name]
            if not tensor.data.ndim:
                raise invalid_arg(
                    f"{prefix}input '{name}' has no shape but model requires batch dimension "
                    f"for '{model}'"
                )
            first = tensor.data.shape[0]
            if batch_size == 0:
                batch_size = first
            elif first != batch_size:
                raise invalid_arg(
                    f"{prefix}input '{name}' batch size does not match other inputs for '{model}'"
                )
        if batch_size > plan.max_batch_size:
            raise invalid_arg(
                f"{prefix}inference request batch-size must be <= {plan.max_batch_size} "
                f"for '{model}'"
            )
    for name in given:
        tensor = request.inputs[name]
        spec = by_name[name]
        if tensor.datatype != spec.wire:
            raise invalid_arg(
                f"[request id: {request.log_id}] inference input '{name}' data-type is "
                f"'{tensor.datatype}', but model '{model}' expects '{spec.wire}'"
            )
        shape = tensor.data.shape
        if not _dims_match(spec.dims, shape):
            note = _IMPLICIT_BATCH_NOTE if batching else ""
            raise invalid_arg(
                f"[request id: {request.log_id}] unexpected shape for input '{name}' for model "
                f"'{model}'. Expected {_dims(list(spec.dims))}, got {_dims(list(shape))}. {note}"
            )
        if spec.reshape is not None:
            new_shape = ([shape[0]] if batching else []) + list(spec.reshape)
            request.inputs[name] = Tensor(
                tensor.name, tensor.datatype, tensor.data.reshape(new_shape), tensor.parameters
            )
    return batch_size


def batch_key(config: ModelConfig, request: InferenceRequest) -> tuple:
    """Requests batch together only when everything but the batch dimension matches."""
    skip = 1 if config.max_batch_size > 0 else 0
    return tuple(sorted((n, t.datatype, tuple(t.shape[skip:])) for n, t in request.inputs.items()))
