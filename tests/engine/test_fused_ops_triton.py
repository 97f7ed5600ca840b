"""The fused Triton kernels of the CUDA step (fused_ops_triton.py) against the torch
expressions they replace, and the whole Triton step (GpuExecutor: paged attention, fused
ops) against the torch step. Without a GPU they run on CPU tensors through Triton's
interpreter (tests/conftest.py), which rounds fp32 to bf16 by truncation where a GPU
rounds to nearest: bf16 results are compared within a couple of bf16 steps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from engine_testing import TRITON_DEVICE as DEVICE
from engine_testing import needs_triton_kernels

from tritium.engine.layers import fused_ops_triton as fo
from tritium.engine.layers.norm import RMSNorm
from tritium.engine.layers.rotary import RotaryEmbedding, apply_rope

pytestmark = needs_triton_kernels


def assert_close(out: torch.Tensor, ref: torch.Tensor, exact: torch.Tensor) -> None:
    """`out` is as accurate as the torch path's `ref`. fp32: equal up to float rounding.
    bf16: its error against `exact` (the torch expression in fp32 on the same bf16 inputs)
    is at most 4x the torch path's own; the interpreter's truncating rounding costs ~2.5x."""
    assert out.dtype == ref.dtype and out.shape == ref.shape
    if out.dtype == torch.float32:
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        return

    def err(x: torch.Tensor) -> float:
        return ((x.float() - exact).norm() / exact.norm()).item()

    assert err(out) <= 4 * err(ref) + 1e-6, (err(out), err(ref))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("width", [96, 576])
@pytest.mark.parametrize("with_residual", [False, True])
def test_add_rms_norm_matches_the_torch_norm(dtype, width, with_residual):
    g = torch.Generator().manual_seed(width)
    x = torch.randn(7, width, generator=g).to(DEVICE, dtype)
    residual = torch.randn(7, width, generator=g).to(DEVICE, dtype) if with_residual else None
    weight = torch.randn(width, generator=g).to(DEVICE, dtype)

    def torch_norm(dt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # The layer's own path (triton_ops off); on CPU its C op sums in place: a copy.
        norm = RMSNorm(width, 1e-5).to(DEVICE, dt)
        norm.weight.data = weight.to(dt)
        return norm(x.to(dt), None if residual is None else residual.to(dt, copy=True))

    ref, ref_res = torch_norm(dtype)
    exact, exact_res = torch_norm(torch.float32)
    mine = None if residual is None else residual.clone()
    out, res = fo.add_rms_norm(x, mine, weight, 1e-5)
    assert_close(out, ref, exact)
    assert_close(res, ref_res, exact_res)
    if with_residual:
        assert res.data_ptr() == mine.data_ptr()  # the running sum, in place
    else:
        assert res is x
    norm = RMSNorm(width, 1e-5).to(DEVICE, dtype)
    norm.weight.data = weight
    norm.triton_ops = True  # the layer dispatches to the kernel
    again = None if residual is None else residual.clone()
    assert torch.equal(norm(x, again)[0], out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_mul_matches_torch(dtype):
    inter = 1536 + 40  # more than one program's columns, and a ragged last block
    gate_up = torch.randn(3, 2 * inter, generator=torch.Generator().manual_seed(1))
    gate_up = gate_up.to(DEVICE, dtype) * 4

    def torch_silu_mul(x: torch.Tensor) -> torch.Tensor:
        gate, up = x.split(inter, dim=-1)
        return F.silu(gate) * up

    exact = torch_silu_mul(gate_up.float())
    assert_close(fo.silu_mul(gate_up), torch_silu_mul(gate_up), exact)


class _Config:
    rope_theta = 10000.0
    rope_scaling = None


def _torch_qkv(qkv, heads, kv_heads, d, rope, qk_norm):
    """The layer's torch path: norms per head, rotation of q and k, v untouched."""
    t = qkv.shape[0]
    q, k, v = qkv.split([heads * d, kv_heads * d, kv_heads * d], dim=1)
    q, k = q.reshape(t, heads, d), k.reshape(t, kv_heads, d)
    if qk_norm is not None:
        q, k = qk_norm[0](q)[0], qk_norm[1](k)[0]
    return apply_rope(q, rope), apply_rope(k, rope), v.reshape(t, kv_heads, d)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 2, 64), (5, 1, 80), (8, 8, 32)])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_qkv_rope_write_kv_matches_torch(dtype, heads, kv_heads, head_dim, qk_norm):
    g = torch.Generator().manual_seed(heads * 100 + head_dim)
    t, d, block_size, num_blocks = 6, head_dim, 4, 5
    width = (heads + 2 * kv_heads) * d
    qkv = (torch.randn(t, width, generator=g) * 2).to(DEVICE, dtype)
    positions = torch.tensor([0, 1, 7, 300, 301, 5], device=DEVICE)
    rope = RotaryEmbedding(_Config(), d, 512).to(DEVICE)(positions, dtype)
    norms = None
    if qk_norm:
        norms = (RMSNorm(d, 1e-6).to(DEVICE, dtype), RMSNorm(d, 1e-6).to(DEVICE, dtype))
        for n in norms:
            n.weight.data = torch.randn(d, generator=g).to(DEVICE, dtype)
    ref_q, ref_k, ref_v = _torch_qkv(qkv, heads, kv_heads, d, rope, norms)
    exact_rope = tuple(r.float() for r in rope)
    exact_norms = None if norms is None else tuple(n.float() for n in norms)
    exact_q, exact_k, _ = _torch_qkv(qkv.float(), heads, kv_heads, d, exact_rope, exact_norms)
    k_cache = torch.zeros(num_blocks, block_size, kv_heads, d, dtype=dtype, device=DEVICE)
    v_cache = torch.zeros_like(k_cache)
    slots = torch.tensor([3, 17, 0, 9, -1, 12], device=DEVICE)  # -1: a padded row
    mine = qkv.clone()
    fo.qkv_rope_write_kv(
        mine, heads, kv_heads, d, rope, k_cache, v_cache, slots,
        None if norms is None else (norms[0].weight, norms[1].weight, 1e-6),
    )  # fmt: skip
    q, k, v = mine.split([heads * d, kv_heads * d, kv_heads * d], dim=1)
    assert_close(q.reshape(t, heads, d), ref_q, exact_q)
    assert_close(k.reshape(t, kv_heads, d), ref_k, exact_k)
    assert torch.equal(v.reshape(t, kv_heads, d), ref_v)  # v is only copied to the cache
    flat_k = k_cache.view(-1, kv_heads, d)
    flat_v = v_cache.view(-1, kv_heads, d)
    live = slots >= 0
    assert torch.equal(flat_k[slots[live]], k.reshape(t, kv_heads, d)[live])
    assert torch.equal(flat_v[slots[live]], ref_v[live])
    untouched = torch.ones(num_blocks * block_size, dtype=torch.bool, device=DEVICE)
    untouched[slots[live]] = False
    assert not flat_k[untouched].any() and not flat_v[untouched].any()  # nothing else written


# ---- the Triton step end to end ------------------------------------------------------------


@pytest.mark.skipif(DEVICE == "cuda", reason="on a GPU, test_gpu_paged_attention runs it on CUDA")
@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_triton_step_matches_the_torch_step(tiny_model_dirs, family):
    """The CUDA step's executor (Triton paged attention, the fused ops, its batch layout)
    gives the torch step's greedy tokens, through chunked prefill beside running decodes
    and a prefix-cache hit; on CPU through the interpreter, in fp32, eagerly."""
    from engine_testing import assert_pool_free

    from tritium.engine import LLM, SamplingParams
    from tritium.engine.cuda_graphs import GpuExecutor

    prompts = [[5 + i for i in range(n)] for n in (1, 9, 30)]
    prompts.append([*prompts[2][:20], 7, 8])  # shares 16 tokens (a full block) with prompt 2
    sp = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, logprobs=1)
    results = []
    for triton_step in (False, True):
        llm = LLM(
            str(tiny_model_dirs[family]), dtype="float32",
            max_num_batched_tokens=16, max_num_seqs=3,
        )  # fmt: skip
        runner = llm.engine_core.runner
        if triton_step:
            runner.gpu = GpuExecutor(runner, max_num_seqs=3, enforce_eager=True)
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], sp, use_tqdm=False)
        results.append([o.outputs[0] for o in outs])
        assert_pool_free(llm)
    for ref, got in zip(*results, strict=True):
        assert list(got.token_ids) == list(ref.token_ids)
        for a, b in zip(ref.logprobs, got.logprobs, strict=True):
            tok = next(iter(a))
            assert abs(a[tok].logprob - b[tok].logprob) < 1e-4
