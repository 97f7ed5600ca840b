"""End-to-end behaviour of the offline LLM on a tiny random model: batching, prefix
caching, preemption, sampling, stop strings. Every test leaves the pool fully free."""

from __future__ import annotations

import pytest
from engine_testing import assert_pool_free

from tritium.engine import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
PROMPTS = [
    "The quick brown fox",
    "Once upon a time, in a land far away, there lived",
    "1, 2, 3, 4,",
    "Hello",
]


def tokens(outs):
    return [o.outputs[0].token_ids for o in outs]


def test_batched_equals_unbatched(tiny_llm_factory):
    llm = tiny_llm_factory()
    batched = tokens(llm.generate(PROMPTS, GREEDY, use_tqdm=False))
    single = [tokens(llm.generate([p], GREEDY, use_tqdm=False))[0] for p in PROMPTS]
    assert batched == single
    assert all(len(t) == 12 for t in batched)
    assert_pool_free(llm)


def test_request_joining_mid_batch_does_not_disturb(tiny_llm_factory):
    llm = tiny_llm_factory()
    alone = tokens(llm.generate(PROMPTS[:2], GREEDY, use_tqdm=False))
    core, proc = llm.engine_core, llm.processor
    for i, p in enumerate(PROMPTS[:2]):
        for r in proc.add_request(f"a{i}", p, llm.tokenizer.encode(p), GREEDY):
            core.add_request(r)
    finished = {}
    for step in range(100):
        if step == 3:  # a long prompt arrives while the others decode
            late = PROMPTS[1] * 3
            for r in proc.add_request("late", late, llm.tokenizer.encode(late), GREEDY):
                core.add_request(r)
        outs, _ = proc.process_outputs(core.step().outputs)
        finished.update({o.request_id: o for o in outs if o.finished})
        if not core.has_unfinished_requests():
            break
    assert [finished["a0"].outputs[0].token_ids, finished["a1"].outputs[0].token_ids] == alone
    assert "late" in finished
    assert_pool_free(llm)


def test_unwritten_cache_slots_are_never_read(tiny_model_dirs):
    """Decodes of different lengths share one padded batch (chunked prefill beside them),
    so attention spans slots no token was written to, masked out. The pool starts zeroed,
    and what a masked slot holds never reaches the output: poisoned with NaN (recycled
    memory can hold any bit pattern), the tokens are the same."""
    from tritium.engine import LLM

    prompts = [{"prompt_token_ids": [5 + i for i in range(n)]} for n in (1, 9, 30)]
    runs = []
    for poison in (False, True):
        llm = LLM(str(tiny_model_dirs["llama"]), dtype="float32", max_num_batched_tokens=16, max_num_seqs=3)  # fmt: skip
        pool = llm.engine_core.runner.kv_cache
        assert not pool.any()
        if poison:
            pool.fill_(float("nan"))
        outs = llm.generate(prompts, GREEDY, use_tqdm=False)
        runs.append(tokens(outs))
        assert_pool_free(llm)
    assert runs[0] == runs[1]
    assert all(len(t) == 12 for t in runs[0])


def test_prefix_cache_hit_gives_same_tokens(tiny_llm_factory):
    llm = tiny_llm_factory(block_size=4)
    prompt = "A shared system prompt that is long enough to fill blocks. Question one?"
    first = tokens(llm.generate([prompt], GREEDY, use_tqdm=False))
    hits_before = llm.engine_core.block_manager.prefix_cache_hits
    second = tokens(llm.generate([prompt], GREEDY, use_tqdm=False))
    assert llm.engine_core.block_manager.prefix_cache_hits > hits_before
    assert first == second
    no_cache = tiny_llm_factory(block_size=4, enable_prefix_caching=False)
    assert tokens(no_cache.generate([prompt], GREEDY, use_tqdm=False)) == first
    assert_pool_free(llm)


def test_n_samples_share_prefix_blocks(tiny_llm_factory):
    llm = tiny_llm_factory(block_size=4)
    prompt = "Sampling several answers from one long prompt shares its blocks."
    hits = llm.engine_core.block_manager.prefix_cache_hits
    out = llm.generate(
        [prompt], SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=8), use_tqdm=False
    )[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert all(len(c.token_ids) == 8 for c in out.outputs)
    assert llm.engine_core.block_manager.prefix_cache_hits > hits
    assert_pool_free(llm)


def test_preemption_gives_same_tokens(tiny_llm_factory):
    ref = tokens(tiny_llm_factory().generate(PROMPTS, GREEDY, use_tqdm=False))
    small = tiny_llm_factory(block_size=4, num_gpu_blocks_override=12)
    got = tokens(small.generate(PROMPTS, GREEDY, use_tqdm=False))
    assert small.engine_core.scheduler.num_preemptions > 0
    assert got == ref
    assert_pool_free(small)


def test_many_requests_on_a_small_pool(tiny_llm_factory):
    llm = tiny_llm_factory(block_size=4, num_gpu_blocks_override=40, enable_prefix_caching=False)
    prompts = [f"Request number {i} says" for i in range(256)]
    outs = llm.generate(
        prompts, SamplingParams(temperature=0, max_tokens=3, ignore_eos=True), use_tqdm=False
    )
    assert len(outs) == 256 and all(len(o.outputs[0].token_ids) == 3 for o in outs)
    assert_pool_free(llm)


def test_seeded_sampling_is_reproducible(tiny_llm_factory):
    llm = tiny_llm_factory()
    params = SamplingParams(
        temperature=1.0, top_p=0.9, top_k=50, seed=1234, max_tokens=10, ignore_eos=True
    )
    alone = tokens(llm.generate([PROMPTS[0]], params, use_tqdm=False))[0]
    unseeded = SamplingParams(temperature=1.0, max_tokens=10, ignore_eos=True)
    mixed = llm.generate(
        [PROMPTS[1], PROMPTS[0], PROMPTS[2]], [unseeded, params, unseeded], use_tqdm=False
    )
    assert mixed[1].outputs[0].token_ids == alone
    other = SamplingParams(
        temperature=1.0, top_p=0.9, top_k=50, seed=99, max_tokens=10, ignore_eos=True
    )
    assert tokens(llm.generate([PROMPTS[0]], other, use_tqdm=False))[0] != alone
    assert_pool_free(llm)


def test_stop_string_cuts_exactly(tiny_llm_factory):
    llm = tiny_llm_factory()
    full = llm.generate([PROMPTS[0]], GREEDY, use_tqdm=False)[0].outputs[0]
    text = full.text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip()
    out = llm.generate(
        [PROMPTS[0]],
        SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop=[stop]),
        use_tqdm=False,
    )[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == text[: text.index(stop)]
    kept = llm.generate(
        [PROMPTS[0]],
        SamplingParams(
            temperature=0,
            max_tokens=12,
            ignore_eos=True,
            stop=[stop],
            include_stop_str_in_output=True,
        ),
        use_tqdm=False,
    )[0].outputs[0]
    assert kept.text == text[: text.index(stop) + len(stop)]
    assert_pool_free(llm)


def test_stop_token_ids_max_and_min_tokens(tiny_llm_factory):
    llm = tiny_llm_factory()
    full = tokens(llm.generate([PROMPTS[0]], GREEDY, use_tqdm=False))[0]
    stop_id = full[4]
    out = llm.generate(
        [PROMPTS[0]],
        SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop_token_ids=[stop_id]),
        use_tqdm=False,
    )[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop_id
    assert out.token_ids == full[: full.index(stop_id) + 1]
    banned = llm.generate(
        [PROMPTS[0]],
        SamplingParams(
            temperature=0, max_tokens=12, ignore_eos=True, stop_token_ids=[stop_id], min_tokens=12
        ),
        use_tqdm=False,
    )[0].outputs[0]
    assert stop_id not in banned.token_ids and banned.finish_reason == "length"
    assert_pool_free(llm)


def test_logprobs(tiny_llm_factory):
    llm = tiny_llm_factory()
    out = llm.generate(
        [PROMPTS[0]],
        SamplingParams(temperature=0, max_tokens=4, ignore_eos=True, logprobs=3),
        use_tqdm=False,
    )[0].outputs[0]
    assert len(out.logprobs) == 4
    for tid, entry in zip(out.token_ids, out.logprobs, strict=True):
        assert entry[tid].rank == 1  # greedy picks the most likely token
        assert len(entry) == 3  # the sampled token is also the top-1
        assert max(lp.logprob for lp in entry.values()) == entry[tid].logprob
    assert out.cumulative_logprob == pytest.approx(
        sum(e[t].logprob for t, e in zip(out.token_ids, out.logprobs, strict=True))
    )


def test_prompt_too_long_is_rejected(tiny_llm_factory):
    llm = tiny_llm_factory()
    with pytest.raises(ValueError, match="max_model_len"):
        llm.generate([[1] * 600], GREEDY, use_tqdm=False)
    assert_pool_free(llm)
