"""Raw and JSON tensor encodings (the binary extension and gRPC raw contents)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from tritium.frontends.tensor_codec import (
    array_from_json,
    array_from_raw,
    array_to_json,
    array_to_raw,
    deserialize_bytes,
    serialize_bytes,
)
from tritium.server.errors import ErrorCode, TritonError
from tritium.server.types import TruncatedBytes


def test_bytes_round_trip_uses_little_endian_length_prefixes() -> None:
    arr = np.array([b"ab", b"", "é"], dtype=np.object_)
    raw = serialize_bytes(arr)
    assert (
        raw
        == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0) + struct.pack("<I", 2) + "é".encode()
    )
    back = deserialize_bytes(raw, "X", "m", 3)
    assert list(back) == [b"ab", b"", "é".encode()]


def test_bytes_last_element_cut_short_passes_as_truncated_bytes() -> None:
    # Triton's core counts elements only; the backend refuses the incomplete element.
    raw = struct.pack("<I", 1) + b"x" + struct.pack("<I", 10) + b"abc"
    arr = deserialize_bytes(raw, "X", "m", 2, "r1")
    assert arr[0] == b"x" and not isinstance(arr[0], TruncatedBytes)
    assert isinstance(arr[1], TruncatedBytes)
    assert arr[1] == b"abc" and arr[1].declared_length == 10


def test_bytes_too_many_elements_stop_at_the_first_extra_one() -> None:
    raw = serialize_bytes(np.array([b"a", b"b", b"c"], dtype=np.object_))
    with pytest.raises(TritonError) as e:
        deserialize_bytes(raw, "X", "m", 1, "r1")
    assert e.value.code is ErrorCode.INVALID_ARG
    assert e.value.message == (
        "[request id: r1] unexpected number of string elements 2 for inference input 'X' "
        "for model 'm', expecting 1"
    )


def test_bytes_truncated_length_prefix_is_invalid_arg() -> None:
    with pytest.raises(TritonError) as e:
        deserialize_bytes(b"\x01\x00", "X", "m", 1)
    assert "incomplete string length indicator" in e.value.message


def test_bytes_element_count_must_match_shape() -> None:
    raw = serialize_bytes(np.array([b"a", b"b"], dtype=np.object_))
    with pytest.raises(TritonError) as e:
        array_from_raw("X", "BYTES", [3], raw, "m")
    assert (
        "expected 3 string elements for inference input 'X' for model 'm', got 2" in e.value.message
    )


@pytest.mark.parametrize(
    "datatype,values",
    [
        ("FP32", [1.5, -2.0, 3.25, 0.0]),
        ("INT64", [1, -2, 3, 2**40]),
        ("UINT8", [0, 1, 255, 7]),
        ("FP16", [1.0, 0.5, -2.0, 8.0]),
        ("BOOL", [True, False, True, True]),
    ],
)
def test_raw_round_trip(datatype: str, values: list) -> None:
    from tritium.server.types import TRITON_TO_NUMPY

    arr = np.array(values, dtype=TRITON_TO_NUMPY[datatype]).reshape(2, 2)
    raw = array_to_raw(arr, datatype)
    assert len(raw) == arr.size * arr.dtype.itemsize
    back = array_from_raw("X", datatype, [2, 2], raw, "m")
    assert back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)


def test_bool_is_one_byte_per_element() -> None:
    assert array_to_raw(np.array([True, False]), "BOOL") == b"\x01\x00"
    np.testing.assert_array_equal(array_from_raw("B", "BOOL", [2], b"\x02\x00", "m"), [True, False])


def test_raw_size_mismatch_has_tritons_message() -> None:
    with pytest.raises(TritonError) as e:
        array_from_raw("INPUT0", "FP32", [1, 4], b"\x00" * 12, "add_sub")
    assert e.value.code is ErrorCode.INVALID_ARG
    assert e.value.message == (
        "[request id: <id_unknown>] input byte size mismatch for input 'INPUT0' for model "
        "'add_sub'. Expected 16, got 12"
    )


def test_json_nested_and_flat_data_give_the_same_tensor() -> None:
    flat = array_from_json("X", "INT32", [2, 2], [1, 2, 3, 4])
    nested = array_from_json("X", "INT32", [2, 2], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(flat, nested)
    assert flat.dtype == np.int32 and flat.shape == (2, 2)


def test_json_element_count_mismatch_is_internal() -> None:
    with pytest.raises(TritonError) as e:
        array_from_json("X", "FP32", [1, 4], [1.0, 2.0, 3.0])
    assert e.value.code is ErrorCode.INTERNAL
    assert (
        e.value.message == "Unable to parse 'data': Shape does not match true shape of 'data' field"
    )


@pytest.mark.parametrize(
    "datatype,data,message",
    [
        ("INT32", [1.5], "'data': attempt to access JSON non-signed-integer as signed-integer"),
        ("INT32", ["1"], "'data': attempt to access JSON non-signed-integer as signed-integer"),
        ("INT32", [True], "'data': attempt to access JSON non-signed-integer as signed-integer"),
        ("INT64", [2**63], "'data': attempt to access JSON non-signed-integer as signed-integer"),
        ("BOOL", [1], "'data': attempt to access JSON non-boolean as boolean"),
        ("BYTES", [1], "JSON bytes array: attempt to access JSON non-string as string"),
        ("UINT8", [-1], "'data': attempt to access JSON non-unsigned-integer as unsigned-integer"),
        ("FP32", [True], "'data': attempt to access JSON non-number as double"),
        ("FP32", ["a"], "'data': attempt to access JSON non-number as double"),
    ],
)
def test_json_wrong_element_types_are_rejected(datatype: str, data: list, message: str) -> None:
    with pytest.raises(TritonError) as e:
        array_from_json("X", datatype, [1], data)
    assert e.value.code is ErrorCode.INTERNAL
    assert e.value.message == f"Unable to parse {message}"


def test_json_integers_wrap_to_the_tensor_type_as_in_triton() -> None:
    # Triton reads a 64-bit integer and casts it: 2**40 in an INT32 tensor is 0.
    assert array_from_json("X", "INT32", [2], [2**40, 2**31]).tolist() == [0, -(2**31)]
    assert array_from_json("X", "UINT8", [1], [257]).tolist() == [1]
    assert array_from_json("X", "FP32", [2], [1, 2.5]).tolist() == [1.0, 2.5]


def test_json_fp16_input_is_refused() -> None:
    with pytest.raises(TritonError) as e:
        array_from_json("X", "FP16", [1], [1.0])
    assert e.value.code is ErrorCode.INVALID_ARG
    assert "receiving FP16 data via JSON is not supported" in e.value.message


def test_json_output_bytes_are_strings_and_fp16_is_refused() -> None:
    assert array_to_json("Y", "BYTES", np.array([b"hi", b"there"], dtype=np.object_)) == [
        "hi",
        "there",
    ]
    assert array_to_json("Y", "FP32", np.array([[0.5, 1.0]], dtype=np.float32)) == [0.5, 1.0]
    with pytest.raises(TritonError):
        array_to_json("Y", "FP16", np.zeros(2, dtype=np.float16))
