"""Wire encoding of the transports (pure pieces; the e2e tests drive them for real)."""

from __future__ import annotations

import struct

import numpy as np
from tritonclient.grpc import service_pb2
from tritonclient.utils import serialize_byte_tensor

from tritium.client.conventions import SEED, VLLM, build_request, detect_convention
from tritium.client.transports import TransportOptions, make_transport, sampling_parameters_for
from tritium.client.transports.http_sse import base_url
from tritium.client.transports.openai_http import OpenAITransport, decode_chunk
from tritium.client.transports.triton_grpc import decode_response, encode_request
from tritium.client.transports.triton_http import decode_event


def test_grpc_request_is_raw_tensors_with_empty_final_response() -> None:
    convention = detect_convention(
        {"inputs": [{"name": "text_input"}, {"name": "stream"}, {"name": "sampling_parameters"}]}
    )
    request = build_request(convention, "héllo", stream=True, sampling_parameters={"max_tokens": 3})
    proto = encode_request("m", "7", request)
    assert (proto.model_name, proto.id) == ("m", "7")
    assert [(t.name, t.datatype, list(t.shape)) for t in proto.inputs] == [
        ("text_input", "BYTES", [1]),
        ("stream", "BOOL", [1]),
        ("sampling_parameters", "BYTES", [1]),
    ]
    prompt = "héllo".encode()
    assert proto.raw_input_contents[0] == struct.pack("<I", len(prompt)) + prompt
    assert proto.raw_input_contents[1] == b"\x01"
    assert proto.parameters["triton_enable_empty_final_response"].bool_param is True


def test_grpc_request_parameters_keep_their_types() -> None:
    request = build_request(
        SEED, "x", stream=False, sampling_parameters={"max_tokens": 3, "ignore_eos": True, "t": "a"}
    )
    params = encode_request("m", "1", request).parameters
    assert params["max_tokens"].int64_param == 3
    assert params["ignore_eos"].bool_param is True
    assert params["t"].string_param == "a"


def _response(
    text: str | None, final: bool, tokens: int | None = None
) -> service_pb2.ModelInferResponse:
    response = service_pb2.ModelInferResponse(model_name="m", id="3")
    if text is not None:
        response.outputs.add(name="text_output", datatype="BYTES", shape=[1])
        array = np.array([text.encode()], dtype=np.object_)
        response.raw_output_contents.append(serialize_byte_tensor(array).item())
    if tokens is not None:
        response.outputs.add(name="num_output_tokens", datatype="UINT32", shape=[1])
        response.raw_output_contents.append(np.array([tokens], dtype=np.uint32).tobytes())
    response.parameters["triton_final_response"].bool_param = final
    return response


def test_grpc_response_decoding() -> None:
    chunk, final = decode_response(_response(" world", False, tokens=2), VLLM)
    assert (chunk.text, chunk.num_output_tokens, final) == (" world", 2, False)
    chunk, final = decode_response(_response(None, True), VLLM)
    assert (chunk.text, chunk.num_output_tokens, final) == ("", None, True)


def test_http_event_decoding_accepts_scalars_and_lists() -> None:
    chunk = decode_event({"model_name": "m", "text_output": "hi", "num_output_tokens": 1}, VLLM)
    assert (chunk.text, chunk.num_output_tokens) == ("hi", 1)
    chunk = decode_event({"TEXT": ["a", "b"], "num_input_tokens": [4]}, SEED)
    assert (chunk.text, chunk.num_input_tokens) == ("ab", 4)


def test_openai_chunk_decoding() -> None:
    chat = {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}
    assert decode_chunk(chat, chat=True).text == "Hel"
    completion = {"choices": [{"index": 0, "text": "lo"}]}
    assert decode_chunk(completion, chat=False).text == "lo"
    usage = {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 9}}
    chunk = decode_chunk(usage, chat=True)
    assert (chunk.text, chunk.num_output_tokens, chunk.num_input_tokens) == ("", 9, 4)


def test_openai_body_asks_for_usage_and_ignore_eos() -> None:
    options = TransportOptions("localhost:9000/v1", "m", sampling_parameters={"temperature": 0})
    options.ignore_eos = True
    transport = make_transport("openai-chat", options)
    assert isinstance(transport, OpenAITransport)
    body = transport._body("hi", 5)
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["ignore_eos"], body["temperature"]) == (5, True, 0)
    assert transport._url == "http://localhost:9000"


def test_sampling_parameters_for_adds_max_tokens_and_ignore_eos() -> None:
    options = TransportOptions("u", "m", sampling_parameters={"top_p": 0.9}, ignore_eos=True)
    assert sampling_parameters_for(options, 4) == {
        "top_p": 0.9,
        "max_tokens": 4,
        "ignore_eos": True,
    }
    assert options.sampling_parameters == {"top_p": 0.9}  # not mutated


def test_base_url() -> None:
    assert base_url("localhost:8000") == "http://localhost:8000"
    assert base_url("https://h:1/") == "https://h:1"
