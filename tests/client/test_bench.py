"""`tritium bench`: metrics and table, then the CLI against a real `tritium serve`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from serving import RunningServer, free_port, tritium
from tritium.client.bench import compute_metrics, format_table
from tritium.client.datasets import BenchRequest, random_dataset
from tritium.client.metrics import RequestRecord

LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")


def test_compute_metrics_counts_throughput_and_token_sources() -> None:
    requests = [BenchRequest("a b c", 4, 3), BenchRequest("d e", 4, 2), BenchRequest("f", 4, 1)]
    records = [
        RequestRecord(success=True, ttft=0.1, latency=0.4, itl=[0.1, 0.1, 0.1], num_chunks=4),
        RequestRecord(success=True, ttft=0.2, latency=0.3, itl=[0.1], num_chunks=2),
        RequestRecord(error="boom"),
    ]
    result = compute_metrics(requests, records, duration=2.0)
    assert (result["completed"], result["failed"], result["errors"]) == (2, 1, ["boom"])
    assert (result["total_input_tokens"], result["total_output_tokens"]) == (5, 6)
    assert result["input_token_source"] == "prompt words (estimate)"
    assert result["output_token_source"] == "streamed responses"
    assert result["request_throughput"] == pytest.approx(1.0)
    assert result["output_throughput"] == pytest.approx(3.0)
    assert result["total_token_throughput"] == pytest.approx(5.5)
    assert result["mean_ttft_ms"] == pytest.approx(150.0)
    assert result["mean_tpot_ms"] == pytest.approx((100.0 + 100.0) / 2)
    assert result["median_itl_ms"] == pytest.approx(100.0)
    assert result["mean_e2el_ms"] == pytest.approx(350.0)

    # With the server's counts for every request, they win.
    for record, n in zip(records[:2], (7, 3), strict=True):
        record.server_output_tokens, record.server_input_tokens = n, 10
    result = compute_metrics(requests, records, duration=2.0)
    assert (result["total_output_tokens"], result["total_input_tokens"]) == (10, 20)
    assert result["output_token_source"] == result["input_token_source"] == "server"


def test_table_has_vllm_sections() -> None:
    records = [RequestRecord(success=True, ttft=0.1, latency=0.2, itl=[0.1], num_chunks=2)]
    result = compute_metrics([BenchRequest("x", 2, 1)], records, 1.0)
    table = format_table(result)
    assert "Serving Benchmark Result" in table
    for line in ("Successful requests:", "Mean TTFT (ms):", "P99 ITL (ms):", "Median E2EL (ms):"):
        assert line in table
    assert "Time per Output Token (excl. 1st token)" in table


# -- against a real server ---------------------------------------------------------------


def bench_json(tmp_path: Path, *args: str) -> dict[str, Any]:
    """Run `tritium bench ARGS --result-json ...`, assert it succeeded, return the JSON.

    For the OpenAI API: bench_json(tmp_path, "--backend", "openai-chat", "--model",
    "smollm2", "--url", server.http, ...) then check_result(result, n).
    """
    out = tmp_path / "result.json"
    done = tritium("bench", *args, "--result-json", str(out), "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Serving Benchmark Result" in done.stdout
    return dict(json.loads(out.read_text()))


def check_result(result: dict[str, Any], num_prompts: int) -> None:
    """What any successful run's JSON must satisfy."""
    assert result["completed"] == num_prompts and result["failed"] == 0
    assert len(result["ttfts"]) == len(result["output_lens"]) == num_prompts
    assert result["duration"] > 0 and result["request_throughput"] > 0
    assert result["output_throughput"] > 0
    assert result["total_token_throughput"] > result["output_throughput"]
    for name in LATENCY_METRICS:
        mean, median = result[f"mean_{name}_ms"], result[f"median_{name}_ms"]
        p90, p99 = result[f"p90_{name}_ms"], result[f"p99_{name}_ms"]
        assert 0 < median <= p90 <= p99, name
        assert mean > 0
    assert result["mean_ttft_ms"] <= result["mean_e2el_ms"]


def test_bench_grpc_random_dataset(server: RunningServer, tmp_path: Path) -> None:
    result = bench_json(
        tmp_path, "--backend", "triton-grpc", "--model", "fake_llm", "--url", server.grpc,
        "--dataset", "random", "--num-prompts", "8", "--random-input-len", "6",
        "--random-output-len", "5", "--random-range-ratio", "0.5", "--ignore-eos",
        "--max-concurrency", "4", "--num-warmups", "2", "--seed", "1",
    )  # fmt: skip
    check_result(result, 8)
    # fake_llm returns num_output_tokens and, with ignore_eos, exactly max_tokens tokens.
    assert result["output_token_source"] == result["input_token_source"] == "server"
    expected = random_dataset(8, input_len=6, output_len=5, range_ratio=0.5, seed=1)
    assert result["output_lens"] == [r.max_tokens for r in expected]
    assert result["input_lens"] == [r.prompt_words for r in expected]
    assert result["max_concurrency"] == 4 and result["num_warmups"] == 2


def test_bench_http_prompts_file_at_a_request_rate(server: RunningServer, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one two three\nfour five\n", encoding="utf-8")
    result = bench_json(
        tmp_path, "--backend", "triton-http", "--model", "fake_llm_seed", "--url", server.http,
        "--dataset-path", str(prompts), "--num-prompts", "6", "--max-tokens", "3",
        "--request-rate", "50", "--seed", "2",
    )  # fmt: skip
    check_result(result, 6)
    # The seed convention has no token counts: streamed responses (one word each) are counted.
    assert result["output_token_source"] == "streamed responses"
    assert result["output_lens"] == [3, 2, 3, 2, 3, 2]
    assert result["request_rate"] == 50


def test_bench_unknown_model_or_unreachable_server(server: RunningServer, tmp_path: Path) -> None:
    done = tritium("bench", "--model", "nope", "--url", server.grpc, "--num-prompts", "1")
    assert done.returncode == 2 and "model 'nope' is not available" in done.stderr
    url = f"127.0.0.1:{free_port()}"
    done = tritium("bench", "--backend", "openai-chat", "--model", "m", "--url", url)
    assert done.returncode == 2 and "cannot reach" in done.stderr
    assert "Traceback" not in done.stderr


def test_bench_counts_failed_requests(server: RunningServer, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one two\n!error now\n", encoding="utf-8")
    out = tmp_path / "result.json"
    done = tritium(
        "bench", "--model", "fake_llm", "--url", server.grpc, "--dataset-path", str(prompts),
        "--num-prompts", "4", "--max-tokens", "2", "--result-json", str(out), "--no-progress",
    )  # fmt: skip
    assert done.returncode == 1
    result = json.loads(out.read_text())
    assert (result["completed"], result["failed"]) == (2, 2)
    assert len(result["errors"]) == 2 and all("!error" in e for e in result["errors"])
    assert result["output_lens"] == [2, 2]
