"""Request validation against the model config, with Triton's own error messages
(core/src/infer_request.cc), and the reshape the backend expects."""

from __future__ import annotations

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


def _dims_match(expected: list[int], got: list[int]) -> bool:
    return len(expected) == len(got) and all(
        e == -1 or e == g for e, g in zip(expected, got, strict=True)
    )


def _wire(dtype: int) -> str:
    return config_to_wire_dtype(model_config_pb2.DataType.Name(dtype))


def validate_request(config: ModelConfig, request: InferenceRequest) -> int:
    """Check inputs and requested outputs; reshape inputs that have `reshape`; return the
    request's batch size (1 for models without a batch dimension)."""
    model = config.name
    prefix = f"[request id: {request.log_id}] "
    required = [i for i in config.input if not i.optional]
    # Walk the inputs in the order Triton's std::unordered_map does, so that messages name
    # the same input and list them the same way.
    given = triton_input_order(list(request.inputs))
    if len(given) > len(config.input) or len(given) < len(required):
        missing = "[" + "".join(f"'{i.name}'," for i in required if i.name not in request.inputs)
        missing = missing[:-1] + "]"  # Triton drops the last character, '[' when none
        got = "[" + ",".join(f"'{n}'" for n in given) + "]"
        if len(required) == len(config.input):
            head = f"expected {len(config.input)} inputs but got {len(given)} inputs"
        else:
            head = (
                f"expected number of inputs between {len(required)} and "
                f"{len(config.input)} but got {len(given)} inputs"
            )
        raise invalid_arg(
            f"{prefix}{head} for model '{model}'. Got input(s) {got}, but missing required "
            f"input(s) {missing}. Please provide all required input(s)."
        )
    by_name = {i.name: i for i in config.input}
    for name in given:
        if name not in by_name:
            raise invalid_arg(f"unexpected inference input '{name}' for model '{model}'")
    missing_required = [i.name for i in required if i.name not in request.inputs]
    if missing_required:
        raise invalid_arg(f"{prefix}input '{missing_required[0]}' is required for model '{model}'")
    if request.requested_outputs is not None:
        outputs = {o.name for o in config.output}
        for out in request.requested_outputs:
            if out.name not in outputs:
                raise invalid_arg(f"unexpected inference output '{out.name}' for model '{model}'")

    batch_size = 1
    batching = config.max_batch_size > 0
    if batching:
        batch_size = 0
        for name in given:
            tensor = request.inputs[name]
            if not tensor.shape:
                raise invalid_arg(
                    f"{prefix}input '{name}' has no shape but model requires batch dimension "
                    f"for '{model}'"
                )
            if batch_size == 0:
                batch_size = tensor.shape[0]
            elif tensor.shape[0] != batch_size:
                raise invalid_arg(
                    f"{prefix}input '{name}' batch size does not match other inputs for '{model}'"
                )
        if batch_size > config.max_batch_size:
            raise invalid_arg(
                f"{prefix}inference request batch-size must be <= {config.max_batch_size} "
                f"for '{model}'"
            )
    for name in given:
        tensor = request.inputs[name]
        spec = by_name[name]
        want = _wire(spec.data_type)
        if tensor.datatype != want:
            raise invalid_arg(
                f"{prefix}inference input '{name}' data-type is '{tensor.datatype}', but model "
                f"'{model}' expects '{want}'"
            )
        shape = tensor.shape
        dims = list(spec.dims)
        expected = [-1, *dims] if batching else dims
        if not _dims_match(expected, shape):
            note = _IMPLICIT_BATCH_NOTE if batching else ""
            raise invalid_arg(
                f"{prefix}unexpected shape for input '{name}' for model '{model}'. "
                f"Expected {_dims(expected)}, got {_dims(shape)}. {note}"
            )
        if spec.HasField("reshape"):
            new_shape = ([shape[0]] if batching else []) + list(spec.reshape.shape)
            request.inputs[name] = Tensor(
                tensor.name, tensor.datatype, tensor.data.reshape(new_shape), tensor.parameters
            )
    return batch_size


def batch_key(config: ModelConfig, request: InferenceRequest) -> tuple:
    """Requests batch together only when everything but the batch dimension matches."""
    skip = 1 if config.max_batch_size > 0 else 0
    return tuple(sorted((n, t.datatype, tuple(t.shape[skip:])) for n, t in request.inputs.items()))
