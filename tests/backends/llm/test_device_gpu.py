"""Two LLMs in one CUDA engine worker process (the per-device process model): both load,
both serve at once, unloading one leaves the other serving, the last unload ends the
worker. Skipped without CUDA."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import torch

from tritium.backends.llm.device import DevicePool
from tritium.backends.llm.engine_client import LLMEngine
from tritium.backends.llm.metrics import VllmMetrics
from tritium.engine.config import EngineArgs
from tritium.engine.engine_core import load_engine_checkpoint
from tritium.engine.messages import EngineCoreInfo
from tritium.engine.sampling_params import RequestOutputKind, SamplingParams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


async def _load(pool: DevicePool, name: str, utilization: float) -> LLMEngine:
    args = EngineArgs(
        model="smollm2", device="cuda:0", gpu_memory_utilization=utilization, max_model_len=1024
    )
    ckpt = await asyncio.to_thread(load_engine_checkpoint, args, False)
    worker, _ = await pool.acquire("cuda:0", name, None)
    engine = LLMEngine(
        name,
        name,
        worker,
        ckpt.tokenizer,
        EngineCoreInfo(0, 0, 16, 0, []),
        VllmMetrics.for_registry(None),
    )
    engine.info = await worker.load_model(name, args, engine)
    return engine


async def _generate(engine: LLMEngine, n: int) -> list[int]:
    async def one(i: int) -> int:
        params = SamplingParams(
            temperature=0, max_tokens=16, ignore_eos=True, output_kind=RequestOutputKind.FINAL_ONLY
        )
        stream = engine.add_request(uuid.uuid4().hex, None, engine.encode(f"Count to {i}:"), params)
        return len((await stream.get(300)).outputs[0].token_ids)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def test_two_models_share_one_gpu_worker() -> None:
    pool = DevicePool()
    a = await _load(pool, "a", 0.2)
    b = await _load(pool, "b", 0.4)
    assert a.worker is b.worker and len(pool.workers) == 1
    counts = await asyncio.gather(_generate(a, 8), _generate(b, 8))
    assert counts == [[16] * 8, [16] * 8]
    worker = a.worker
    await worker.unload_model("a")
    await pool.release_if_empty(worker)
    assert worker.alive and await _generate(b, 2) == [16, 16]
    await worker.unload_model("b")
    await pool.release_if_empty(worker)
    assert not pool.workers and worker.proc is not None and worker.proc.returncode == 0
