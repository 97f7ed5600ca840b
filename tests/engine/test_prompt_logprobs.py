"""SamplingParams.prompt_logprobs: each prompt token's logprob and the top k, as vLLM
returns them (RequestOutput.prompt_logprobs, None for the first token), what an evaluation
harness scores a text with."""

from __future__ import annotations

import asyncio

import pytest
import torch
from engine_testing import assert_pool_free

from tritium.engine import AsyncLLM, EngineArgs, RequestOutputKind, SamplingParams

PROMPTS = [
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the woods.",
    "Short one.",
    "A third prompt, of some other length, that shares nothing with the others at all.",
]
TOP = 3


def _params(**kwargs) -> SamplingParams:
    return SamplingParams(**{"temperature": 0, "max_tokens": 2, "prompt_logprobs": TOP, **kwargs})


def _scores(out) -> list[tuple[int, float, list[float]]]:
    """Per prompt token 1..: (token, its logprob, the top-k logprobs, best first)."""
    rows = []
    for token, entry in zip(out.prompt_token_ids[1:], out.prompt_logprobs[1:], strict=True):
        top = sorted((lp.logprob for lp in entry.values() if lp.rank <= TOP), reverse=True)
        rows.append((token, entry[token].logprob, top))
    return rows


def _assert_same_scores(got: list, expected: list) -> None:
    """The same tokens scored, up to fp32 summation order (the top k by their logprobs,
    not their ids: a random tiny model has near-ties everywhere)."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert [t for t, _, _ in g] == [t for t, _, _ in e]
        assert [lp for _, lp, _ in g] == pytest.approx([lp for _, lp, _ in e], abs=1e-4)
        for (_, _, gt), (_, _, et) in zip(g, e, strict=True):
            assert gt == pytest.approx(et, abs=1e-4)


def test_prompt_logprobs_are_transformers_log_softmax(tiny_llm_factory, tiny_model_dirs) -> None:
    """Against transformers fed the same prompt (fp32): every prompt token's logprob, its
    rank, and the top k, for prompts of several lengths in one batch."""
    from transformers import AutoModelForCausalLM

    llm = tiny_llm_factory()
    outs = llm.generate(PROMPTS, _params(), use_tqdm=False)
    assert_pool_free(llm)
    hf = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"], dtype=torch.float32)
    for out in outs:
        ids = out.prompt_token_ids
        assert out.prompt_logprobs is not None and len(out.prompt_logprobs) == len(ids)
        assert out.prompt_logprobs[0] is None
        with torch.inference_mode():
            ref = hf(input_ids=torch.tensor([ids])).logits[0, :-1].float().log_softmax(dim=-1)
        for p, (token, entry) in enumerate(zip(ids[1:], out.prompt_logprobs[1:], strict=True)):
            assert entry[token].logprob == pytest.approx(ref[p, token].item(), abs=1e-4)
            # its rank, give or take the near-ties of a random model's flat distribution
            above = (ref[p] > ref[p, token] + 1e-4).sum(), (ref[p] > ref[p, token] - 1e-4).sum()
            assert above[0] + 1 <= entry[token].rank <= above[1] + 1
            top = sorted((lp.rank, t) for t, lp in entry.items() if lp.rank <= TOP)
            assert [r for r, _ in top] == list(range(1, TOP + 1))
            assert [entry[t].logprob for _, t in top] == pytest.approx(
                ref[p].topk(TOP).values.tolist(), abs=1e-4
            )
            assert all(ref[p, t] >= ref[p].topk(TOP).values[-1] - 1e-4 for _, t in top)
        # The first generated token is not a prompt logprob: it is sampled as usual.
        assert len(out.outputs[0].token_ids) == 2


def test_chunked_prefill_prefix_caching_and_preemption_give_the_same_scores(
    tiny_llm_factory,
) -> None:
    """A prompt computed in chunks, after its prefix was cached by a request that did not
    ask for prompt logprobs, or preempted and recomputed, scores every token once, the
    same; requests without prompt_logprobs still reuse the cache."""
    ref = [_scores(o) for o in tiny_llm_factory().generate(PROMPTS, _params(), use_tqdm=False)]

    chunked = tiny_llm_factory(block_size=4, max_num_batched_tokens=7)
    got = chunked.generate(PROMPTS, _params(), use_tqdm=False)
    _assert_same_scores([_scores(o) for o in got], ref)

    cached = tiny_llm_factory(block_size=4)
    plain = SamplingParams(temperature=0, max_tokens=2)
    cached.generate(PROMPTS, plain, use_tqdm=False)  # fills the prefix cache
    bm = cached.engine_core.block_manager
    hits = bm.prefix_cache_hits
    got = cached.generate(PROMPTS, _params(), use_tqdm=False)
    assert bm.prefix_cache_hits == hits  # every prompt position ran through the model
    _assert_same_scores([_scores(o) for o in got], ref)
    cached.generate(PROMPTS, plain, use_tqdm=False)
    assert bm.prefix_cache_hits > hits
    assert_pool_free(cached)

    small = tiny_llm_factory(block_size=4, num_gpu_blocks_override=12)
    got = small.generate(PROMPTS, _params(max_tokens=24, ignore_eos=True), use_tqdm=False)
    assert small.engine_core.scheduler.num_preemptions > 0
    _assert_same_scores([_scores(o) for o in got], ref)
    assert_pool_free(small)


def test_n_samples_share_one_scoring_and_zero_top_gives_the_token_alone(tiny_llm_factory):
    llm = tiny_llm_factory()
    params = SamplingParams(n=3, temperature=1.0, seed=3, max_tokens=3, prompt_logprobs=0)
    out = llm.generate([PROMPTS[0]], params, use_tqdm=False)[0]
    assert len(out.outputs) == 3
    assert out.prompt_logprobs is not None and len(out.prompt_logprobs) == len(out.prompt_token_ids)
    for token, entry in zip(out.prompt_token_ids[1:], out.prompt_logprobs[1:], strict=True):
        assert entry is not None and token in entry
        assert all(t == token or lp.rank is not None for t, lp in entry.items())
        assert len(entry) == 1 or entry[token].rank != 1  # the top 0: the token alone
    assert_pool_free(llm)
    # Unasked, there are none.
    plain = llm.generate([PROMPTS[0]], SamplingParams(max_tokens=2), use_tqdm=False)[0]
    assert plain.prompt_logprobs is None


def test_prompt_logprobs_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="prompt_logprobs must be non-negative"):
        SamplingParams(prompt_logprobs=-1)


@pytest.mark.parametrize("multiprocess", [False, True], ids=["inproc", "multiprocess"])
def test_a_stream_carries_them_once(tiny_model_dirs, multiprocess: bool) -> None:
    """Delta outputs carry the prompt logprobs in one output, cumulative ones in each."""

    async def run() -> tuple[list, list]:
        args = EngineArgs(model=str(tiny_model_dirs["llama"]), dtype="float32", block_size=4)
        llm = await AsyncLLM.create(args, multiprocess=multiprocess)
        try:
            delta = _params(max_tokens=5, ignore_eos=True, output_kind=RequestOutputKind.DELTA)
            deltas = [o async for o in llm.generate(PROMPTS[0], delta, "d")]
            full = [o async for o in llm.generate(PROMPTS[0], _params(max_tokens=5), "c")]
        finally:
            await llm.shutdown()
        return deltas, full

    deltas, full = asyncio.run(run())
    carrying = [o for o in deltas if o.prompt_logprobs is not None]
    assert len(carrying) == 1 and len(deltas) == 5
    assert all(o.prompt_logprobs is not None for o in full)
    _assert_same_scores([_scores(carrying[0])], [_scores(full[-1])])
