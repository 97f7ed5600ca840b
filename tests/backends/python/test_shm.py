"""Tensor transport through shared-memory files."""

from __future__ import annotations

import os

import numpy as np

from tritium.backends.python.shm import (
    INLINE_LIMIT,
    ShmWriter,
    decode,
    default_shm_dir,
    deserialize_bytes,
    serialize_bytes,
    sweep,
)


def test_small_tensors_travel_inline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    writer = ShmWriter(str(tmp_path), "t_")
    wire = writer.encode("X", "INT32", np.arange(6, dtype=np.int32).reshape(2, 3))
    assert wire.shm is None and wire.data is not None
    out = decode(wire)
    np.testing.assert_array_equal(out, np.arange(6).reshape(2, 3))
    assert out.flags.writeable
    assert os.listdir(tmp_path) == []


def test_large_tensors_use_one_file_consumed_on_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    writer = ShmWriter(str(tmp_path), "t_")
    array = np.random.default_rng(1).random((300, 100))  # 240 kB > INLINE_LIMIT
    wire = writer.encode("X", "FP64", array)
    assert wire.data is None and wire.nbytes == array.nbytes > INLINE_LIMIT
    assert os.listdir(tmp_path) == [os.path.basename(wire.shm or "")]
    out = decode(wire)
    assert os.listdir(tmp_path) == []  # unlinked on read; the mapping keeps the data
    np.testing.assert_array_equal(out, array)
    out[0, 0] = -1.0  # a private mapping: writable
    assert out[0, 0] == -1.0


def test_non_contiguous_and_empty_arrays(tmp_path) -> None:  # type: ignore[no-untyped-def]
    writer = ShmWriter(str(tmp_path), "t_")
    strided = np.arange(200_000, dtype=np.int64).reshape(1000, 200)[:, ::2]
    np.testing.assert_array_equal(decode(writer.encode("S", "INT64", strided)), strided)
    empty = decode(writer.encode("E", "FP32", np.zeros((0, 4), np.float32)))
    assert empty.shape == (0, 4) and empty.dtype == np.float32


def test_bytes_and_bf16(tmp_path) -> None:  # type: ignore[no-untyped-def]
    writer = ShmWriter(str(tmp_path), "t_")
    strings = np.array([[b"a", b""], [b"\x00z", "é".encode()]], dtype=np.object_)
    out = decode(writer.encode("B", "BYTES", strings))
    assert out.shape == (2, 2) and out.tolist() == strings.tolist()
    big = np.array([b"y" * 70_000, b"tail"], dtype=np.object_)
    wire = writer.encode("B", "BYTES", big)
    assert wire.shm is not None
    assert decode(wire).tolist() == big.tolist()
    bits = np.array([0x3F80, 0x4000], np.uint16)  # 1.0, 2.0 in bfloat16
    out = decode(writer.encode("H", "BF16", bits))
    assert out.dtype == np.uint16 and out.tolist() == [0x3F80, 0x4000]


def test_serialize_layout_matches_triton() -> None:
    data = serialize_bytes(np.array([b"ab", "c"], dtype=np.object_))
    assert data == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"
    assert deserialize_bytes(data).tolist() == [b"ab", b"c"]


def test_sweep_removes_leftovers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    writer = ShmWriter(str(tmp_path), "dead_7_")
    for _ in range(3):
        writer.encode("X", "UINT8", np.zeros(INLINE_LIMIT + 1, np.uint8))
    ShmWriter(str(tmp_path), "other_").encode("X", "UINT8", np.zeros(INLINE_LIMIT + 1, np.uint8))
    assert sweep(str(tmp_path), "dead_7_") == 3
    assert [f.startswith("other_") for f in os.listdir(tmp_path)] == [True]
    assert os.path.isdir(default_shm_dir())
