"""kv_cache_dtype: an fp16 or bf16 KV cache under fp32 math on CPU (twice the tokens in the
same memory), read and written by the C ops and by the torch paths alike."""

from __future__ import annotations

import pytest
import torch
from engine_testing import assert_pool_free, tokens_and_logprobs

from tritium.engine import SamplingParams
from tritium.engine.config import EngineArgs
from tritium.engine.engine_core import resolve_kv_cache_dtype
from tritium.engine.layers import cpu_ops

GREEDY = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, logprobs=1)
PROMPTS = [
    "A shared system prompt that is long enough to fill blocks. Question one?",
    "Short one.",
    "A third prompt, of some other length, to pad the decode batch.",
]


def _run(llm, prompts=PROMPTS):
    outs = llm.generate(prompts, GREEDY, use_tqdm=False)
    assert_pool_free(llm)
    tokens, logprobs = tokens_and_logprobs(outs)
    return tokens, torch.tensor(logprobs)


HALF = pytest.mark.parametrize("kv", ["float16", "bfloat16"])


@HALF
def test_16_bit_cache_holds_twice_the_tokens(tiny_llm_factory, kv: str) -> None:
    budget = 1 << 20
    fp32 = tiny_llm_factory(kv_cache_memory_bytes=budget)
    half = tiny_llm_factory(kv_cache_memory_bytes=budget, kv_cache_dtype=kv)
    assert half.engine_core.runner.kv_cache.dtype == getattr(torch, kv)
    assert fp32.engine_core.runner.kv_cache.dtype == torch.float32
    assert half.engine_core.runner.num_blocks == 2 * fp32.engine_core.runner.num_blocks


@HALF
def test_16_bit_cache_c_ops_and_torch_paths_agree(tiny_llm_factory, monkeypatch, kv) -> None:
    """The fused C decode layer and the layers' torch expressions (with the cache widened
    for SDPA) compute the same tokens over a 16-bit cache; and its results stay near the
    fp32 cache's."""
    llm = tiny_llm_factory(kv_cache_dtype=kv)
    c_tokens, c_logprobs = _run(llm)
    torch_llm = tiny_llm_factory(kv_cache_dtype=kv, enable_prefix_caching=False)
    monkeypatch.setattr(cpu_ops, "enabled", lambda x: False)
    t_tokens, t_logprobs = _run(torch_llm)
    assert c_tokens == t_tokens
    torch.testing.assert_close(c_logprobs, t_logprobs, rtol=0, atol=1e-4)
    monkeypatch.undo()
    _, fp32_logprobs = _run(tiny_llm_factory())
    first = [0, 16, 32]  # each prompt's first token: the caches differ only by rounding
    torch.testing.assert_close(c_logprobs[first], fp32_logprobs[first], rtol=0, atol=2e-2)


@HALF
def test_16_bit_cache_prefix_hits_and_chunked_prefill_match_a_miss(tiny_llm_factory, kv) -> None:
    """A prompt attends to its own keys as the cache holds them, so reading them back from
    the cache (a prefix-cache hit, a later prefill chunk) computes the same tokens."""
    llm = tiny_llm_factory(block_size=4, kv_cache_dtype=kv)
    first, first_logprobs = _run(llm, PROMPTS[:1])
    hits = llm.engine_core.block_manager.prefix_cache_hits
    again, again_logprobs = _run(llm, PROMPTS[:1])
    assert llm.engine_core.block_manager.prefix_cache_hits > hits
    assert again == first
    # Equal but for the order of fp32 sums; a prompt attending to its own keys in fp32
    # while its later queries read them back as fp16 would be ~5e-6 off here.
    torch.testing.assert_close(again_logprobs, first_logprobs, rtol=0, atol=1e-6)
    chunked = tiny_llm_factory(block_size=4, kv_cache_dtype=kv, max_num_batched_tokens=5)
    chunked_tokens, chunked_logprobs = _run(chunked, PROMPTS[:1])
    assert chunked_tokens == first
    torch.testing.assert_close(chunked_logprobs, first_logprobs, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kv_cache_dtype": "fp8"}, "kv_cache_dtype must be"),
        ({"kv_cache_dtype": "float16", "dtype": "bfloat16", "device": "cuda"}, "on CUDA"),
    ],
)
def test_kv_cache_dtype_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        args = EngineArgs(model="m", **kwargs)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
        resolve_kv_cache_dtype(args, dtype)


def test_auto_is_the_compute_dtype_or_fp16_under_quantized_weights() -> None:
    args = EngineArgs(model="m", device="cpu")
    assert resolve_kv_cache_dtype(args, torch.float32) == torch.float32
    assert resolve_kv_cache_dtype(args, torch.bfloat16) == torch.bfloat16
    half = EngineArgs(model="m", device="cpu", kv_cache_dtype="float16")
    assert resolve_kv_cache_dtype(half, torch.bfloat16) == torch.float16
    # A model with quantized weights on CPU keeps fp16 by default, as llama.cpp does.
    assert resolve_kv_cache_dtype(args, torch.float32, "q4") == torch.float16
    mixed = {"a.weight": "q4", "b.weight": "q8", "c.weight": "int8"}
    assert resolve_kv_cache_dtype(args, torch.float32, mixed) == torch.float16
    assert resolve_kv_cache_dtype(args, torch.float32, {"a.weight": "bf16"}) == torch.float32
    assert resolve_kv_cache_dtype(args, torch.bfloat16, "bf16") == torch.bfloat16
    explicit = EngineArgs(model="m", device="cpu", kv_cache_dtype="float32")
    assert resolve_kv_cache_dtype(explicit, torch.float32, "q4") == torch.float32
    cuda = EngineArgs(model="m", device="cuda")
    assert resolve_kv_cache_dtype(cuda, torch.bfloat16, None) == torch.bfloat16
    # On CPU the C ops read a bf16 cache under fp32 math too.
    bf16 = EngineArgs(model="m", device="cpu", kv_cache_dtype="bfloat16", dtype="float32")
    assert resolve_kv_cache_dtype(bf16, torch.float32) == torch.bfloat16
