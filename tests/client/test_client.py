"""`tritium client`: pure pieces, then the CLI against a real `tritium serve`."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from serving import RunningServer, free_port, tritium
from tritium.client.client import (
    DEFAULT_SAMPLING,
    read_results,
    report,
    request_ids,
    sampling_parameters,
    write_results,
)
from tritium.client.metrics import RequestRecord

PROMPTS = ["the quick brown fox", "jumps over", "the lazy dog today"]


def reversed_words(prompt: str) -> str:
    """fake_llm's answer: the prompt's words in reverse order."""
    return " ".join(prompt.split()[::-1])


# -- pure pieces -------------------------------------------------------------------------


def test_request_ids_unique_across_iterations_with_offset() -> None:
    assert request_ids(3, 2, 10) == ["10", "11", "12", "13", "14", "15"]


def test_sampling_parameters_default_json_and_overrides() -> None:
    def args(**kw: object) -> argparse.Namespace:
        base = {"sampling_parameters": None, "max_tokens": None, "temperature": None}
        return argparse.Namespace(**(base | kw))

    assert sampling_parameters(args()) == DEFAULT_SAMPLING
    assert sampling_parameters(args(max_tokens=7, temperature=0.0)) == {
        "temperature": 0.0,
        "top_p": 0.95,
        "max_tokens": 7,
    }
    assert sampling_parameters(args(sampling_parameters='{"top_k": 2}', max_tokens=3)) == {
        "top_k": 2,
        "max_tokens": 3,
    }
    with pytest.raises(ValueError):
        sampling_parameters(args(sampling_parameters="[1]"))


def test_results_file_in_request_order_with_errors_in_place(tmp_path: Path) -> None:
    records = [
        RequestRecord(request_id="0", text="first\nanswer", success=True),
        RequestRecord(request_id="1", error="boom"),
        RequestRecord(request_id="2", text="", success=True),
    ]
    path = tmp_path / "out.txt"
    write_results(path, records)
    assert read_results(path) == ["first\nanswer", "ERROR: boom", ""]


def test_report_names_the_count_unit() -> None:
    ok = RequestRecord(request_id="0", text="abc", success=True, ttft=0.01, latency=0.02)
    ok.num_chunks = 2
    out = io.StringIO()
    report([ok], duration=1.0, streaming=True, file=out)
    assert "request 0: time to first token 10.00 ms, total 20.00 ms, 2 responses" in out.getvalue()
    assert "streamed responses counted" in out.getvalue()
    ok.server_output_tokens = 5
    out = io.StringIO()
    report([ok, RequestRecord(request_id="1", error="nope")], 1.0, streaming=True, file=out)
    text = out.getvalue()
    assert "5 tokens" in text and "counted by the server" in text
    assert "request 1: FAILED: nope" in text and "1 failed" in text


# -- against a real server ---------------------------------------------------------------


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("model", ["fake_llm", "fake_llm_seed"])
@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "whole"])
def test_client_writes_every_answer_in_order(
    server: RunningServer,
    prompts_file: Path,
    tmp_path: Path,
    protocol: str,
    model: str,
    streaming: bool,
) -> None:
    results = tmp_path / "results.txt"
    url = server.grpc if protocol == "grpc" else server.http
    args = ["client", "--model-name", model, "--input-prompts", str(prompts_file)]
    args += ["--results-file", str(results), "-u", url, "--protocol", protocol]
    args += ["--iterations", "2", "--stream-timeout", "60", "--no-progress"]
    if streaming:
        args.append("--streaming-mode")
    done = tritium(*args)
    assert done.returncode == 0, done.stderr
    # Streamed answers are the new text only; whole answers echo the prompt, as returned.
    expected = [reversed_words(p) if streaming else f"{p} {reversed_words(p)}" for p in PROMPTS * 2]
    assert read_results(results) == expected
    lines = [line for line in done.stdout.splitlines() if line.startswith("request ")]
    assert [line.split(":")[0] for line in lines] == [f"request {i}" for i in range(6)]
    assert all("time to first token" in line for line in lines)
    assert "6 succeeded, 0 failed" in done.stdout
    if model == "fake_llm":
        # The vLLM convention returns num_output_tokens: one token per word here.
        assert f"output tokens:     {2 * sum(len(p.split()) for p in PROMPTS)} " in done.stdout
    else:
        assert ("responses" if streaming else "characters") in done.stdout


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_failed_request_fails_the_run_and_keeps_its_place(
    server: RunningServer, tmp_path: Path, protocol: str
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one two\n!error please\nthree four five\n", encoding="utf-8")
    results = tmp_path / "results.txt"
    url = server.grpc if protocol == "grpc" else server.http
    done = tritium(
        "client", "--model-name", "fake_llm", "--input-prompts", str(prompts),
        "--results-file", str(results), "-u", url, "--protocol", protocol,
        "--streaming-mode", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 1
    answers = read_results(results)
    assert answers[0] == "two one" and answers[2] == "five four three"
    assert answers[1].startswith("ERROR: ") and "!error" in answers[1]
    assert "request 1: FAILED" in done.stdout and "1 failed" in done.stdout
    assert "Traceback" not in done.stderr


def test_stream_timeout_fails_the_slow_request(server: RunningServer, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("slow answer\n", encoding="utf-8")
    done = tritium(
        "client", "--model-name", "fake_llm", "--input-prompts", str(prompts),
        "--results-file", str(tmp_path / "r.txt"), "-u", server.grpc, "--streaming-mode",
        "--sampling-parameters", '{"max_tokens": 400, "ignore_eos": true}',
        "--stream-timeout", "0.1", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 1
    assert "request 0: FAILED: timed out after 0.1 s" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_unknown_model_exits_with_a_clear_message(
    server: RunningServer, prompts_file: Path, tmp_path: Path, protocol: str
) -> None:
    url = server.grpc if protocol == "grpc" else server.http
    done = tritium(
        "client", "--model-name", "no_such_model", "--input-prompts", str(prompts_file),
        "--results-file", str(tmp_path / "r.txt"), "-u", url, "--protocol", protocol,
    )  # fmt: skip
    assert done.returncode == 2
    assert "error: model 'no_such_model' is not available" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_unreachable_server_exits_with_a_clear_message(
    prompts_file: Path, tmp_path: Path, protocol: str
) -> None:
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    done = tritium(
        "client", "--model-name", "fake_llm", "--input-prompts", str(prompts_file),
        "--results-file", str(tmp_path / "r.txt"), "-u", url, "--protocol", protocol,
    )  # fmt: skip
    assert done.returncode == 2
    assert "error: cannot reach" in done.stderr and url in done.stderr
    assert "Traceback" not in done.stderr
