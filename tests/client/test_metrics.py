"""Percentile summaries and per-request derived metrics."""

from __future__ import annotations

import pytest

from tritium.client.metrics import RequestRecord, flat_metrics, summarize


def test_summarize_in_milliseconds() -> None:
    stats = summarize([0.001 * v for v in range(1, 101)])  # 1..100 ms
    assert stats["mean"] == pytest.approx(50.5)
    assert stats["median"] == pytest.approx(50.5)
    assert stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01)
    assert stats["median"] <= stats["p90"] <= stats["p99"]


def test_summarize_empty_is_zeros() -> None:
    assert set(summarize([]).values()) == {0.0}


def test_flat_metrics_uses_vllm_key_names() -> None:
    keys = set(flat_metrics("ttft", [0.1, 0.2]))
    assert keys == {"mean_ttft_ms", "median_ttft_ms", "std_ttft_ms", "p90_ttft_ms", "p99_ttft_ms"}


def test_output_tokens_prefer_the_server_count() -> None:
    record = RequestRecord(success=True, ttft=0.1, latency=0.5, num_chunks=3)
    assert record.output_tokens == 3
    record.server_output_tokens = 5
    assert record.output_tokens == 5
    assert record.tpot == pytest.approx((0.5 - 0.1) / 4)


def test_tpot_undefined_for_one_token_or_failure() -> None:
    assert RequestRecord(success=True, latency=0.2, ttft=0.2, num_chunks=1).tpot is None
    assert RequestRecord(success=False, latency=0.2, num_chunks=4).tpot is None
