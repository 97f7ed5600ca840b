"""A real `tritium serve` of the example LLM repository on free ports, for the LLM e2e tests."""

from __future__ import annotations

import os
from pathlib import Path

from serving import ROOT, RunningServer, start_server

EXAMPLES = ROOT / "examples" / "model_repository"
PROMPTS = ROOT.parent / "shared" / "data" / "prompts.txt"
READY_TIMEOUT_S = 300


def prompts() -> list[str]:
    return [line.strip() for line in PROMPTS.read_text().splitlines() if line.strip()]


def start_llm_server(tmp: Path, *extra: str) -> RunningServer:
    """Start the server (one engine thread: the tests share two cores) and wait for ready."""
    env = {**os.environ, "TRITIUM_LLM_THREADS": os.environ.get("TRITIUM_LLM_THREADS", "1")}
    return start_server(
        EXAMPLES, tmp, "--exit-timeout-secs", "5", *extra, env=env, ready_timeout=READY_TIMEOUT_S
    )
