"""Request JSON as Triton reads it: RapidJSON's grammar and its error messages.

Triton parses request bodies with RapidJSON (`kParseNanAndInfFlag`) and reports a parse
error as `failed to parse the request JSON buffer: <GetParseError_En> at <offset>`.
msgspec parses the well-formed bodies (the fast path); when it refuses one, a small
recursive-descent parser that follows RapidJSON's reader (reader.h) step by step finds
the same error at the same byte offset, or accepts what RapidJSON accepts and msgspec
does not (NaN, Inf, Infinity, unvalidated UTF-8, numbers beyond 64 bits).
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from tritium.server.errors import TritonError, internal

_decode = msgspec.json.decode

# GetParseError_En (rapidjson/error/en.h)
DOCUMENT_EMPTY = "The document is empty."
ROOT_NOT_SINGULAR = "The document root must not be followed by other values."
VALUE_INVALID = "Invalid value."
OBJECT_MISS_NAME = "Missing a name for object member."
OBJECT_MISS_COLON = "Missing a colon after a name of object member."
OBJECT_MISS_COMMA = "Missing a comma or '}' after an object member."
ARRAY_MISS_COMMA = "Missing a comma or ']' after an array element."
BAD_HEX = "Incorrect hex digit after \\u escape in string."
BAD_SURROGATE = "The surrogate pair in string is invalid."
BAD_ESCAPE = "Invalid escape character in string."
MISS_QUOTE = "Missing a closing quotation mark in string."
BAD_ENCODING = "Invalid encoding in string."
NUMBER_TOO_BIG = "Number too big to be stored in double."
MISS_FRACTION = "Miss fraction part in number."
MISS_EXPONENT = "Miss exponent in number."

_WS = b" \n\r\t"
_DIGITS = b"0123456789"
_HEX = b"0123456789abcdefABCDEF"
_ESCAPES = {
    ord('"'): '"',
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}


class ParseError(Exception):
    """A RapidJSON parse error: its English message and byte offset."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at {offset}")
        self.message = message
        self.offset = offset


def parse_error(data: bytes | memoryview) -> TritonError:
    """The INTERNAL error Triton answers for a body RapidJSON cannot parse."""
    try:
        _Reader(bytes(data)).document()
    except ParseError as e:
        return internal(f"failed to parse the request JSON buffer: {e}")
    return internal("failed to parse the request JSON buffer")


def loads(data: bytes | memoryview) -> Any:
    """Parse a request body; raise Triton's INTERNAL error for what RapidJSON refuses."""
    try:
        return _decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        pass
    try:
        return _Reader(bytes(data)).document()
    except ParseError as e:
        raise internal(f"failed to parse the request JSON buffer: {e}") from None
    except RecursionError:
        raise internal("failed to parse the request JSON buffer: nesting too deep") from None


class _Reader:
    """RapidJSON's GenericReader over a byte string (a NUL byte reads as the end)."""

    def __init__(self, data: bytes) -> None:
        self.s = data
        self.i = 0

    def peek(self) -> int:
        return self.s[self.i] if self.i < len(self.s) else 0

    def consume(self, ch: str) -> bool:
        if self.peek() == ord(ch):
            self.i += 1
            return True
        return False

    def skip_ws(self) -> None:
        s, i, n = self.s, self.i, len(self.s)
        while i < n and s[i] in _WS:
            i += 1
        self.i = i

    def document(self) -> Any:
        self.skip_ws()
        if self.peek() == 0:
            raise ParseError(DOCUMENT_EMPTY, self.i)
        value = self.value()
        self.skip_ws()
        if self.peek() != 0:
            raise ParseError(ROOT_NOT_SINGULAR, self.i)
        return value

    def value(self) -> Any:
        c = self.peek()
        if c == ord("n"):
            return self.literal("null", None)
        if c == ord("t"):
            return self.literal("true", True)
        if c == ord("f"):
            return self.literal("false", False)
        if c == ord('"'):
            return self.string()
        if c == ord("{"):
            return self.object()
        if c == ord("["):
            return self.array()
        return self.number()

    def literal(self, word: str, value: Any) -> Any:
        self.i += 1
        for ch in word[1:]:
            if not self.consume(ch):
                raise ParseError(VALUE_INVALID, self.i)
        return value

    def object(self) -> dict[str, Any]:
        self.i += 1
        out: dict[str, Any] = {}
        self.skip_ws()
        if self.consume("}"):
            return out
        while True:
            if self.peek() != ord('"'):
                raise ParseError(OBJECT_MISS_NAME, self.i)
            key = self.string()
            self.skip_ws()
            if not self.consume(":"):
                raise ParseError(OBJECT_MISS_COLON, self.i)
            self.skip_ws()
            out[key] = self.value()
            self.skip_ws()
            if self.consume(","):
                self.skip_ws()
            elif self.consume("}"):
                return out
            else:
                raise ParseError(OBJECT_MISS_COMMA, self.i)

    def array(self) -> list[Any]:
        self.i += 1
        out: list[Any] = []
        self.skip_ws()
        if self.consume("]"):
            return out
        while True:
            out.append(self.value())
            self.skip_ws()
            if self.consume(","):
                self.skip_ws()
            elif self.consume("]"):
                return out
            else:
                raise ParseError(ARRAY_MISS_COMMA, self.i)

    def hex4(self, escape_offset: int) -> int:
        value = 0
        for _ in range(4):
            c = self.peek()
            if c not in _HEX or c == 0:
                raise ParseError(BAD_HEX, escape_offset)
            value = value * 16 + int(chr(c), 16)
            self.i += 1
        return value

    def string(self) -> str:
        self.i += 1
        out = bytearray()
        while True:
            c = self.peek()
            if c == ord("\\"):
                escape_offset = self.i
                self.i += 1
                e = self.peek()
                if e in _ESCAPES:
                    self.i += 1
                    out += _ESCAPES[e].encode()
                elif e == ord("u"):
                    self.i += 1
                    code = self.hex4(escape_offset)
                    if 0xD800 <= code <= 0xDBFF:
                        if not (self.consume("\\") and self.consume("u")):
                            raise ParseError(BAD_SURROGATE, escape_offset)
                        low = self.hex4(escape_offset)
                        if not 0xDC00 <= low <= 0xDFFF:
                            raise ParseError(BAD_SURROGATE, escape_offset)
                        code = (((code - 0xD800) << 10) | (low - 0xDC00)) + 0x10000
                    out += chr(code).encode("utf-8", "surrogatepass")
                else:
                    raise ParseError(BAD_ESCAPE, escape_offset)
            elif c == ord('"'):
                self.i += 1
                return out.decode("utf-8", "replace")
            elif c < 0x20:
                raise ParseError(MISS_QUOTE if c == 0 else BAD_ENCODING, self.i)
            else:
                out.append(c)
                self.i += 1

    def digits(self) -> None:
        s, i, n = self.s, self.i, len(self.s)
        while i < n and s[i] in _DIGITS:
            i += 1
        self.i = i

    def number(self) -> Any:
        start = self.i
        minus = self.consume("-")
        c = self.peek()
        if c in (ord("N"), ord("I")):  # kParseNanAndInfFlag
            if self.consume("N"):
                if self.consume("a") and self.consume("N"):
                    return math.nan
            elif self.consume("I") and self.consume("n") and self.consume("f"):
                if self.peek() == ord("i") and not all(self.consume(ch) for ch in "inity"):
                    raise ParseError(VALUE_INVALID, self.i)
                return -math.inf if minus else math.inf
            raise ParseError(VALUE_INVALID, self.i)
        if self.consume("0"):
            pass
        elif c != 0 and c in b"123456789":
            self.digits()
        else:
            raise ParseError(VALUE_INVALID, self.i)
        is_float = False
        if self.consume("."):
            is_float = True
            if self.peek() == 0 or self.peek() not in _DIGITS:
                raise ParseError(MISS_FRACTION, self.i)
            self.digits()
        if self.consume("e") or self.consume("E"):
            is_float = True
            if not self.consume("+"):
                self.consume("-")
            if self.peek() == 0 or self.peek() not in _DIGITS:
                raise ParseError(MISS_EXPONENT, self.i)
            self.digits()
        text = self.s[start : self.i].decode()
        if not is_float:
            value = int(text)
            if -(2**63) <= value < 2**64:
                return value
        number = float(text)
        if math.isinf(number):
            raise ParseError(NUMBER_TOO_BIG, start)
        return number
