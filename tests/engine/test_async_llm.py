"""AsyncLLM streams, abort and stats, with the engine core in a thread and in its own
process (ZeroMQ)."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from tritium.engine import AsyncLLM, EngineArgs, RequestOutputKind, SamplingParams

PROMPT = "The quick brown fox jumps over the lazy dog, and then"

# One engine per mode for the whole module (starting an engine process takes seconds).
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(
    scope="module", loop_scope="module", params=[False, True], ids=["inproc", "multiprocess"]
)
async def shared_engine(request, tiny_model_dirs):
    args = EngineArgs(model=str(tiny_model_dirs["llama"]), dtype="float32", block_size=4)
    llm = await AsyncLLM.create(args, multiprocess=request.param)
    yield llm
    await llm.shutdown()


@pytest_asyncio.fixture(loop_scope="module")
async def engine(shared_engine):
    """The shared engine; every test must leave it idle with every block free."""
    yield shared_engine
    stats = shared_engine.get_stats()
    assert stats.num_running_reqs == 0 and stats.num_waiting_reqs == 0
    assert stats.kv_cache_usage == 0.0


async def test_stream_deltas_add_up(engine):
    params = SamplingParams(
        temperature=0, max_tokens=8, ignore_eos=True, output_kind=RequestOutputKind.DELTA
    )
    stream = await engine.add_request("r1", PROMPT, params)
    text, ids, finals = "", [], []
    async for out in stream:
        text += out.outputs[0].text
        ids += out.outputs[0].token_ids
        finals.append(out.finished)
    assert finals[-1] and not any(finals[:-1])
    assert len(ids) == 8
    cumulative = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    last = [o async for o in engine.generate(PROMPT, cumulative, "r2")][-1]
    assert last.outputs[0].token_ids == ids and last.outputs[0].text == text
    assert last.outputs[0].finish_reason == "length"
    await asyncio.sleep(0.2)  # let the core report its idle stats
    stats = engine.get_stats()
    assert stats.generation_tokens >= 16 and stats.prompt_tokens > 0
    assert stats.prefix_cache_hits > 0  # r2 reused r1's prompt blocks


async def test_abort_frees_blocks(engine):
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
    streams = [await engine.add_request(f"a{i}", f"Prompt {i} goes on", params) for i in range(3)]
    first = await streams[0].__anext__()
    assert not first.finished
    for i in range(3):
        await engine.abort(f"a{i}")
    for s in streams:
        outs = [o async for o in s]
        assert outs[-1].finished and outs[-1].outputs[0].finish_reason == "abort"
    for _ in range(50):
        await asyncio.sleep(0.1)
        st = engine.get_stats()
        if st.num_running_reqs == 0 and st.kv_cache_usage == 0.0:
            break


async def test_concurrent_requests_and_invalid_prompt(engine):
    params = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)

    async def run(i: int) -> list[int]:
        outs = [o async for o in engine.generate(f"Number {i}", params, f"c{i}")]
        return outs[-1].outputs[0].token_ids

    results = await asyncio.gather(*(run(i) for i in range(16)))
    assert all(len(r) == 5 for r in results)
    with pytest.raises(ValueError, match="empty"):
        await engine.add_request("bad", [], params)
    await asyncio.sleep(0.2)
