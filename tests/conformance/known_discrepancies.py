"""Where Tritium still answers differently from Triton 2.51, by owner. Each entry is a
strict xfail in the conformance tests: fix the behaviour, watch the test XPASS (fail),
delete the entry. Values say who owns the fix and what Triton does.
"""

from __future__ import annotations

from typing import Any

import pytest
from triton_compare import fixture

HTTP = "frontends/http"
GRPC = "frontends/grpc"
METRICS = "frontends/metrics"
PYBACKEND = "backends/python"
EXAMPLES = "examples/python_models"
RAPIDJSON = (
    f"{HTTP}: Triton's JSON errors are RapidJSON's: 'failed to parse the request JSON "
    "buffer: Missing a name for object member. at 1' (GetParseError_En + ' at ' + offset)"
)

# The gRPC cases run after the HTTP cases killed crasher's stub on the same server.
CRASHED_UNAVAILABLE = (
    "deliberate (issue 2): crasher's stub died during the HTTP cases, so it is UNAVAILABLE "
    "(and the server not ready under strict readiness); Triton 2.51 keeps it READY"
)

KNOWN: dict[str, str] = {
    # -- HTTP frontend: JSON parsing and its messages ---------------------------------------
    "http/infer_bad_json": RAPIDJSON,
    "http/generate_bad_json": RAPIDJSON,
    "http/repository_index_bad_json": RAPIDJSON,
    "http_explicit/x_load_bad_json": RAPIDJSON,
    "http/binary_header_length_too_small": f"{RAPIDJSON} (here 'Invalid value. at 10')",
    "http/infer_id_not_string": (
        f"{HTTP}: Triton says \"Unable to parse 'id': attempt to access JSON non-string as "
        "string\"; ours stops after 'id'"
    ),
    "http/infer_input_no_name": (
        f"{HTTP}: Triton says \"Unable to parse 'name': attempt to access non-existing object "
        "member 'name'\""
    ),
    "http/infer_json_array": (
        f"{HTTP}: a JSON array body: Triton says \"Unable to parse 'inputs': attempt to access "
        "non-existing object member 'inputs'\""
    ),
    "http/infer_no_inputs_key": (
        f"{HTTP}: Triton says \"Unable to parse 'inputs': attempt to access non-existing "
        "object member 'inputs'\""
    ),
    "http/infer_shape_not_list": (
        f"{HTTP}: Triton says \"Unable to parse 'shape': attempt to access JSON non-array as "
        'array"'
    ),
    "http/infer_bool_for_int": (
        f"{HTTP}: Triton says \"Unable to parse 'data': attempt to access JSON "
        'non-signed-integer as signed-integer" (ours: non-int as int)'
    ),
    "http/infer_data_wrong_type": (
        f"{HTTP}: Triton says \"Unable to parse 'data': attempt to access JSON non-number as "
        'double" (ours: non-double as double)'
    ),
    "http/infer_bytes_as_numbers": (
        f'{HTTP}: Triton says "Unable to parse JSON bytes array: attempt to access JSON '
        "non-string as string\" (ours: Unable to parse 'data': ...)"
    ),
    "http/infer_int_overflow": (
        f"{HTTP}: INT32 data 2**40 is accepted by Triton (truncated to 0, the model then "
        "answers 'zero is not allowed'); ours refuses it with 500"
    ),
    "http/infer_float_parameter": (
        f"{HTTP}: Triton 2.51 accepts a float request parameter ({{'f': 1.5}}) on /infer "
        "(200); ours answers 400 'parameter 'f' has invalid type'"
    ),
    "http/repository_index_ready_not_bool": (
        f"{HTTP}: Triton says 'attempt to access JSON non-boolean as boolean' (500), no prefix"
    ),
    "http_explicit/x_load_config_not_string": (
        f"{HTTP}: Triton says 'attempt to access JSON non-string as string' (500), no prefix"
    ),
    "http/infer_empty_body": (
        f"{HTTP}: an empty body with no Inference-Header-Content-Length is a raw binary "
        'request in Triton: "[request id: <id_unknown>] Raw request must only have 1 input '
        "(found 1) to be deduced but got 2 inputs in 'add_sub' model configuration\" (400)"
    ),
    "http/binary_header_length_not_number": (
        f"{HTTP}: Inference-Header-Content-Length 'abc' is ignored by Triton (raw binary "
        'request): "[request id: <id_unknown>] Raw request must only have 1 input (found 1) '
        "to be deduced but got 2 inputs in 'add_sub' model configuration\""
    ),
    "http/infer_duplicate_input": (
        f"{HTTP}: Triton prefixes the request id: \"[request id: <id_unknown>] input 'INPUT0' "
        'already exists in request"'
    ),
    "http/binary_size_mismatch_shape": (
        f"{HTTP} (tensor_codec): Triton checks byte sizes in its core, newest input first: "
        "\"[request id: <id_unknown>] input byte size mismatch for input 'INPUT1' for model "
        "'add_sub'. Expected 16, got 20\"; ours reports INPUT0 first"
    ),
    "http/binary_bytes_bad_length_prefix": (
        f'{HTTP} (tensor_codec): Triton: "incomplete string data for inference input '
        "'INPUT0', expecting string of length 30 but only 3 bytes available\" (no request id, "
        "no model, no final period)"
    ),
    "http/binary_bytes_too_many_elements": (
        f'{HTTP} (tensor_codec): Triton: "[request id: <id_unknown>] unexpected number of '
        "string elements 2 for inference input 'INPUT0' for model 'string_identity', "
        'expecting 1"'
    ),
    "http/shm_status_unknown_region": (
        f"{HTTP}: unknown shared-memory region is 404 in Triton (ours 400), same message"
    ),
    # -- gRPC frontend ------------------------------------------------------------------------
    "grpc/ModelInfer_bytes_bad_prefix": (
        f'{GRPC} (tensor_codec): Triton: "incomplete string data for inference input '
        "'INPUT0', expecting string of length 40 but only 1 bytes available\""
    ),
    "grpc/ModelInfer_raw_extra": (
        f"{GRPC}: Triton ignores raw_input_contents beyond the inputs (answers OK); ours "
        "refuses 'expected 2 raw_input_contents entries'"
    ),
    "grpc/ModelInfer_triton_parameter": (
        f"{GRPC}: Triton's gRPC message differs from HTTP's: \"parameter keys starting with "
        "'triton_' are reserved for Triton usage. Only the following keys starting with "
        "'triton_' are allowed: triton_enable_empty_final_response\""
    ),
    "grpc/ModelMetadata_version_text": f"{GRPC}: Triton says '(details: stol)', ours 'stoll'",
    "grpc/Stream_decoupled_empty_final": (
        f"{GRPC}: Triton's flag-only final response has no model_version "
        "(id, model_name, triton_final_response=true only)"
    ),
    "grpc/Stream_errors_keep_stream": (
        f"{GRPC}/{PYBACKEND}: on a stream, a request refused before reaching a model has only "
        "`id` in infer_response (no model_name); a model's error response carries "
        "model_name and triton_final_response=true (ours lacks the parameter)"
    ),
    # -- Python backend ---------------------------------------------------------------------
    "http/infer_raises_exception": (
        f"{PYBACKEND}: an exception in execute() is INTERNAL in Triton (HTTP 500, gRPC "
        "INTERNAL); ours is INVALID_ARG (400)"
    ),
    "grpc/ModelInfer_raises_exception": (
        f"{PYBACKEND}: an exception in execute() is INTERNAL in Triton; ours INVALID_ARGUMENT"
    ),
    "http/infer_crasher_dies": (
        f"{PYBACKEND}: when the stub dies Triton answers 500 \"Stub process 'crasher_0_0' is "
        "not healthy.\" (ours: 'Failed to process the request(s) for model 'crasher_0_0', "
        "message: Stub process 'crasher_0_0' is not healthy (exit code 3).')"
    ),
    "http/infer_crasher_after": (
        f"{PYBACKEND}: later requests get the same 500 \"Stub process 'crasher_0_0' is not "
        'healthy." in Triton (the model stays READY, the stub is not restarted)'
    ),
    # -- deliberate: the issue asks a crashed model to go UNAVAILABLE with its reason -----
    "http/model_ready_crasher_after": (
        "deliberate (issue 2): a model whose stub died is UNAVAILABLE with the reason, so "
        "/ready is 400; Triton 2.51 keeps it READY and fails every request"
    ),
    "http/ready_after_crash": (
        "deliberate (issue 2): strict readiness counts the crashed model, so the server is "
        "not ready; Triton 2.51 stays ready"
    ),
    "grpc/ServerReady": CRASHED_UNAVAILABLE,
    "grpc/Health": CRASHED_UNAVAILABLE,
    "grpc/ModelMetadata_crasher": CRASHED_UNAVAILABLE,
    "grpc/ModelConfig_crasher": CRASHED_UNAVAILABLE,
    "grpc/ModelReady_crasher": CRASHED_UNAVAILABLE,
    "grpc/RepositoryIndex": CRASHED_UNAVAILABLE,
    "grpc/RepositoryIndex_ready": CRASHED_UNAVAILABLE,
    # -- the example model ------------------------------------------------------------------
    "http/infer_async_model": (
        f"{EXAMPLES}: async_model keeps only the Metric, not its MetricFamily; in Triton the "
        "family is garbage-collected and every request fails (500 'Failed to increment "
        "metric value: Invalid metric operation as the corresponding 'MetricFamily' has been "
        "deleted...'). Keep the families on self; Tritium could also raise like Triton"
    ),
    "http/generate_async_model": f"{EXAMPLES}: same as http/infer_async_model (400 there)",
    # -- statistics (counts compared; they follow the behaviour differences above) -----------
    "http/stats_add_sub_after": (
        f"{HTTP}: one add_sub success fewer (http/infer_float_parameter is refused)"
    ),
    "grpc/ModelStatistics_add_sub": f"{HTTP}: as http/stats_add_sub_after",
    "http/stats_all": (
        f"{PYBACKEND}: a model's pb_utils.TritonError response is a success in Triton's "
        "statistics and an exception in execute() a failure (raises: success 4, fail 2, "
        "inference_count 4, execution_count 6); the core counts it so when the backend sets "
        "RequestTimings.success=True for requests whose execute() returned. Also "
        f"{HTTP}: add_sub (infer_float_parameter), raises (infer_int_overflow), "
        "string_identity (Triton counts binary_bytes_bad_length_prefix as a failed request "
        f"of the model: it checks BYTES framing after queueing); {EXAMPLES}: async_model"
    ),
    # -- metrics ----------------------------------------------------------------------------
    "metrics_start/nv_pinned_memory_pool_total_bytes": (
        f"{METRICS}: Triton exports gauges nv_pinned_memory_pool_total_bytes and "
        "nv_pinned_memory_pool_used_bytes (no labels; 0 without CUDA)"
    ),
    "metrics_start/nv_pinned_memory_pool_used_bytes": f"{METRICS}: see total_bytes",
    "metrics/nv_pinned_memory_pool_total_bytes": f"{METRICS}: see metrics_start",
    "metrics/nv_pinned_memory_pool_used_bytes": f"{METRICS}: see metrics_start",
}


def params(group: str, names: list[str]) -> list[Any]:
    """pytest params for the recorded cases of a group, known differences as strict xfails."""
    recorded = fixture(group)
    out = []
    for name in names:
        if name not in recorded:
            continue  # a case added since the fixtures were recorded: re-record them
        key = f"{group}/{name}"
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN[key])] if key in KNOWN else []
        out.append(pytest.param(name, id=name, marks=marks))
    return out
