"""The LLM backend inside a real InferenceServer (real engine worker process, SmolLM2):
admission control, unsupported engine arguments, KV budgets, queue/compute timings."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from tritium.server.core import InferenceServer
from tritium.server.errors import ErrorCode, TritonError
from tritium.server.options import ServerOptions
from tritium.server.types import InferenceRequest, Tensor

CONFIG = """backend: "vllm"
instance_group [{ count: 1 kind: KIND_CPU }]
parameters { key: "max_waiting_requests" value: { string_value: "0" } }
"""


def write_model(repo: Path, name: str, engine_args: dict, config: str = CONFIG) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(config)
    (repo / name / "1" / "model.json").write_text(json.dumps(engine_args))


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InferenceServer]:
    tmp_path = tmp_path_factory.mktemp("llm_repo")
    write_model(tmp_path, "tiny", {"model": "smollm2", "max_num_seqs": 1, "max_model_len": 256,
                                   "kv_cache_memory_bytes": 64 << 20})  # fmt: skip
    write_model(
        tmp_path, "bad_args", {"model": "smollm2", "tensor_parallel_size": 2, "swap_space": 4}
    )
    options = ServerOptions(
        model_repository=[str(tmp_path)], model_control_mode="explicit", load_model=["tiny", "bad_args"],
        exit_on_error=False, allow_grpc=False, allow_http=False, allow_metrics=False,
    )  # fmt: skip
    s = InferenceServer(options)
    await s.start()
    yield s
    await s.stop(timeout_s=5)


def request(prompt: str, max_tokens: int, stream: bool = True) -> InferenceRequest:
    inputs = {
        "text_input": Tensor("text_input", "BYTES", np.array([prompt.encode()], dtype=np.object_)),
        "stream": Tensor("stream", "BOOL", np.array([stream], dtype=np.bool_)),
        "sampling_parameters": Tensor(
            "sampling_parameters", "BYTES",
            np.array([json.dumps({"max_tokens": max_tokens, "ignore_eos": True}).encode()], dtype=np.object_),
        ),
    }  # fmt: skip
    return InferenceRequest("tiny", inputs=inputs)


async def test_load_failure_names_unsupported_args_and_admission_limit(
    server: InferenceServer,
) -> None:
    assert "tensor_parallel_size=2" in server.startup_failures["bad_args"]
    assert "swap_space" not in server.startup_failures["bad_args"]  # harmless: accepted
    assert server.model_ready("tiny")

    # max_num_seqs 1 + max_waiting_requests 0: a second request is refused at once.
    first = server.infer(request("Tell me a story.", 200))
    got_first = await anext(first)
    assert got_first.error is None
    started = time.monotonic()
    responses = [r async for r in server.infer(request("Hello", 4))]
    assert time.monotonic() - started < 5
    assert responses[-1].error is not None and responses[-1].error.code == ErrorCode.UNAVAILABLE
    assert "Exceeds maximum queue size" in responses[-1].error.message
    await first.aclose()  # cancels the first request: the engine aborts it

    # Once it is gone, the model serves again; its timings split queue / compute.
    await asyncio.sleep(0.5)
    texts = [
        r.outputs[0].data[0]
        for r in [x async for x in server.infer(request("Hi", 4, stream=False))]
        if r.outputs
    ]
    assert len(texts) == 1 and texts[0].startswith(b"Hi")
    await server.wait_idle()
    stats = server.statistics("tiny")["model_stats"][0]["inference_stats"]
    assert stats["success"]["count"] >= 1 and stats["compute_infer"]["ns"] > 0
    assert stats["fail"]["count"] >= 1  # the refused request


async def test_over_long_prompt_is_invalid_arg(server: InferenceServer) -> None:
    responses = [r async for r in server.infer(request("word " * 400, 4))]
    err = responses[-1].error
    assert isinstance(err, TritonError) and err.code == ErrorCode.INVALID_ARG
    assert "max_model_len is 256" in err.message
