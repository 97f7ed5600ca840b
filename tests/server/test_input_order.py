"""Triton's iteration order of a request's inputs (input_order.py), as Triton 2.51 printed
it in "Got input(s) [...]" (the names and orders below come from the real server)."""

from __future__ import annotations

from tritium.server.input_order import std_hash, triton_input_order


def test_two_and_three_inputs_as_triton_lists_them():
    assert triton_input_order(["INPUT0", "INPUT1"]) == ["INPUT1", "INPUT0"]
    assert triton_input_order(["INPUT0", "INPUT1", "BAD"]) == ["BAD", "INPUT1", "INPUT0"]


def test_collisions_and_rehash_as_triton_lists_them():
    names = [f"X{i}_{'y' * (i % 11)}" for i in range(15)]
    # 15 names: bucket collisions and a rehash (13 -> 29 buckets); duplicates ignored
    assert triton_input_order(names + names[:2]) == [
        "X14_yyy", "X13_yy", "X0_", "X5_yyyyy", "X8_yyyyyyyy", "X2_yy", "X1_y",
        "X9_yyyyyyyyy", "X10_yyyyyyyyyy", "X4_yyyy", "X6_yyyyyy", "X7_yyyyyyy", "X3_yyy",
        "X11_", "X12_y",
    ]  # fmt: skip


def test_std_hash_is_deterministic_64_bit():
    assert std_hash("INPUT0") == std_hash("INPUT0") != std_hash("INPUT1")
    assert 0 <= std_hash("a" * 100) < 2**64
