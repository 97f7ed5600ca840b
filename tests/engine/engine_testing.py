"""Helpers shared by the engine tests (tiny model configs, pool checks)."""

from __future__ import annotations

import os

import pytest
import torch

from tritium.engine import LLM
from tritium.engine.layers import quant_kernel
from tritium.engine.layers.linear import BLOCK_FORMATS, Linear
from tritium.engine.layers.paged_attention_triton import HAS_TRITON

#: Where the Triton kernels' tests run: on CUDA, or on CPU through Triton's interpreter
#: (tests/conftest.py turns it on without CUDA).
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TRITON_INTERPRETED = TRITON_DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"
needs_triton_kernels = pytest.mark.skipif(
    not HAS_TRITON or (TRITON_DEVICE == "cpu" and not TRITON_INTERPRETED),
    reason="needs Triton (on CPU, its interpreter)",
)

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)


def tiny_config(family: str, vocab_size: int):
    from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    if family == "llama":
        return LlamaConfig(vocab_size=vocab_size, tie_word_embeddings=True, **TINY)
    if family == "llama3":
        return LlamaConfig(
            vocab_size=vocab_size,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 128,
            },
            **TINY,
        )
    if family == "mistral":
        return MistralConfig(vocab_size=vocab_size, sliding_window=None, **TINY)
    if family == "qwen2":
        return Qwen2Config(vocab_size=vocab_size, tie_word_embeddings=True, **TINY)
    if family == "qwen3":
        return Qwen3Config(vocab_size=vocab_size, head_dim=32, **TINY)
    raise ValueError(family)


FAMILIES = ["llama", "llama3", "mistral", "qwen2", "qwen3"]


def assert_pool_free(llm: LLM) -> None:
    """Every block is back in the free queue and no request is left anywhere."""
    core = llm.engine_core
    bm = core.block_manager
    assert not core.scheduler.requests
    assert not core.scheduler.running and not core.scheduler.waiting
    assert bm.num_free_blocks == bm.num_blocks
    assert all(r == 0 for r in bm.ref_cnt)


def tokens_and_logprobs(outs) -> tuple[list[list[int]], list[float]]:
    """Each request's first completion's tokens, and the logprob of every sampled token in
    order (requests made with logprobs >= 0)."""
    tokens = [list(o.outputs[0].token_ids) for o in outs]
    logprobs = [
        step[t].logprob
        for o in outs
        for t, step in zip(o.outputs[0].token_ids, o.outputs[0].logprobs or [], strict=True)
    ]
    return tokens, logprobs


def random_linear(in_features: int, out_features: int, bias: bool = True) -> Linear:
    """Our Linear with nn.Linear's random initialisation (the engine's layers are built
    uninitialised, as their weights are always loaded)."""
    layer = Linear(in_features, out_features, bias=bias)
    torch.nn.Linear.reset_parameters(layer)
    return layer


#: A format label for the kernel tests beside Linear's own: bf16 weights computing a bf16
#: matmul (Linear.bf16_inputs: dtype bfloat16 on CPU).
BF16_MATMUL = "bf16 matmul"


def compact_linear(in_features: int, out_features: int, method: str, bias: bool = True) -> Linear:
    """random_linear in `method`'s format (a QUANT_METHODS key, or BF16_MATMUL)."""
    layer = random_linear(in_features, out_features, bias)
    layer.quantize("bf16" if method == BF16_MATMUL else method)
    layer.bf16_inputs = method == BF16_MATMUL
    return layer


def kernel_inputs(layer: Linear, x: torch.Tensor) -> torch.Tensor:
    """x as `layer`'s kernels see it: rounded to 8 bits per block of 32 for q4 and q8, to
    bf16 for a bf16 matmul, as it is otherwise (fp32 math)."""
    if layer.quant in BLOCK_FORMATS:
        return quant_kernel.quantize_activations_q8(x)
    return x.bfloat16().float() if layer.bf16_inputs else x


def q4_block_errors(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block of 32 of w [N, K] ([N, K / 32] each): the largest error w takes through the
    q4 format, and what the fp16 rounding of the block's d and m alone allows (|m| * 2^-11
    and d's times up to 15 codes, with a factor 2 of margin). Within it, every code of a
    block already on a 4-bit grid came back."""
    codes, dm = quant_kernel.quantize_weight_q4(w)
    blocks = w.reshape(w.shape[0], -1, 32)
    err = (quant_kernel.dequantize_q4(codes, dm) - w).abs().reshape(blocks.shape).amax(-1)
    bound = blocks.abs().amax(-1) * 2**-10 + dm[..., 0].float().abs() * 15 * 2**-10 + 1e-7
    return err, bound
