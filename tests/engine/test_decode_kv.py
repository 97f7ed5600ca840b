"""DecodeKV: the CPU decode batch's contiguous context gives the same tokens as gathering
the paged blocks per layer, and is rebuilt only when the batch changes or outgrows it."""

from __future__ import annotations

from engine_testing import assert_pool_free

from tritium.engine import LLM, SamplingParams

PROMPTS = ["The quick brown fox", "Once upon a time, in a land far away, there lived", "Hi"]


def test_dense_context_matches_block_gather(tiny_model_dirs):
    # block_size 4: contexts span many blocks and outgrow the headroom within 40 tokens.
    llm = LLM(str(tiny_model_dirs["llama"]), dtype="float32", block_size=4)
    dkv = llm.engine_core.runner.decode_kv
    assert dkv is not None
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    dense = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params, use_tqdm=False)]
    steps = llm.engine_core.stats.num_steps
    # Rebuilt on the first decode, when the headroom ran out (40 tokens > 8 blocks of 4),
    # never on the other ~38 steps.
    assert 1 <= dkv.num_rebuilds <= 4 < steps
    assert_pool_free(llm)

    dkv.budget_bytes = 0  # over budget: every layer gathers its blocks instead
    gathered = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params, use_tqdm=False)]
    assert dkv.buf is None
    assert gathered == dense
    alone = [llm.generate([p], params, use_tqdm=False)[0].outputs[0].token_ids for p in PROMPTS[:2]]
    assert alone == dense[:2]
    assert_pool_free(llm)
