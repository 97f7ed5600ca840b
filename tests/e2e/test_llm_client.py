"""`tritium client` and `tritium bench` against `tritium serve` of the example repository,
as the seed deployment runs them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving import RunningServer, tritium

from .llm_server import PROMPTS, start_llm_server

SEPARATOR = "\n\n=========\n\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    s = start_llm_server(tmp_path_factory.mktemp("llm_client"))
    yield s
    s.stop()


def test_client_streams_twenty_prompts_over_grpc(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    r = tritium(
        "client", "--model-name", "smollm2-chat", "--input-prompts", str(PROMPTS),
        "--results-file", str(out), "--streaming-mode", "-u", server.grpc,
        "--max-tokens", "16", "--no-progress", timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    answers = out.read_text().split(SEPARATOR)
    assert answers[-1] == ""  # every answer is followed by the separator
    assert len(answers[:-1]) == 20
    assert not any(a.startswith("ERROR") for a in answers)


def test_bench_openai_chat_writes_json(server: RunningServer, tmp_path: Path) -> None:
    result = tmp_path / "bench.json"
    r = tritium(
        "bench", "--backend", "openai-chat", "--model", "smollm2", "--url", f"127.0.0.1:{server.http_port}",
        "--dataset-path", str(PROMPTS), "--num-prompts", "6", "--max-tokens", "8",
        "--max-concurrency", "3", "--result-json", str(result), "--no-progress", timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(result.read_text())
    assert doc["completed"] == 6
    assert doc.get("output_token_source") == "server"
