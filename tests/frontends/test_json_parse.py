"""Request JSON read as Triton reads it: RapidJSON's error messages and byte offsets."""

from __future__ import annotations

import math

import pytest

from tritium.frontends.http.json_parse import loads
from tritium.server.errors import ErrorCode, TritonError


@pytest.mark.parametrize(
    "body,message",
    [
        # recorded from Triton 2.51 (tests/conformance/fixtures)
        (b"{not json", "Missing a name for object member. at 1"),
        (b"{", "Missing a name for object member. at 1"),
        (b'{"inputs":', "Invalid value. at 10"),
        # RapidJSON's reader, case by case
        (b"", "The document is empty. at 0"),
        (b"  \n", "The document is empty. at 3"),
        (b"{} {}", "The document root must not be followed by other values. at 3"),
        (b'{"a" 1}', "Missing a colon after a name of object member. at 5"),
        (b'{"a": 1 "b": 2}', "Missing a comma or '}' after an object member. at 8"),
        (b'{"a": 1,}', "Missing a name for object member. at 8"),
        (b"[1 2]", "Missing a comma or ']' after an array element. at 3"),
        (b"[1,]", "Invalid value. at 3"),
        (b'{"a": "x', "Missing a closing quotation mark in string. at 8"),
        (b'"\\u12G4"', "Incorrect hex digit after \\u escape in string. at 1"),
        (b'"\\x"', "Invalid escape character in string. at 1"),
        (b'"\\ud800x"', "The surrogate pair in string is invalid. at 1"),
        (b'"a\x01"', "Invalid encoding in string. at 2"),
        (b"nul", "Invalid value. at 3"),
        (b"tru e", "Invalid value. at 3"),
        (b"-", "Invalid value. at 1"),
        (b"1.", "Miss fraction part in number. at 2"),
        (b"1e+", "Miss exponent in number. at 3"),
        (b"[1e400]", "Number too big to be stored in double. at 1"),
        (b"01", "The document root must not be followed by other values. at 1"),
        (b"'a'", "Invalid value. at 0"),
    ],
)
def test_parse_errors_are_rapidjsons(body: bytes, message: str) -> None:
    with pytest.raises(TritonError) as e:
        loads(body)
    assert e.value.code is ErrorCode.INTERNAL
    assert e.value.message == f"failed to parse the request JSON buffer: {message}"


def test_what_rapidjson_accepts_and_msgspec_does_not() -> None:
    doc = loads(b'{"a": [NaN, Inf, -Infinity, 1e2], "b": "\xff", "c": "\\ud83d\\ude00"}')
    assert math.isnan(doc["a"][0]) and doc["a"][1:] == [math.inf, -math.inf, 100.0]
    assert doc["b"] == "\ufffd" and doc["c"] == "\U0001f600"


def test_well_formed_documents() -> None:
    assert loads(b' {"id": "x", "n": [1, -2, 3.5, true, null]} ') == {
        "id": "x",
        "n": [1, -2, 3.5, True, None],
    }
