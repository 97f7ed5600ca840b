"""The fused C ops of a CPU step against the torch expressions they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tritium.engine.layers import cpu_ops
from tritium.engine.layers.attention import Attention, AttentionMetadata
from tritium.engine.layers.norm import RMSNorm
from tritium.engine.layers.rotary import apply_rope

pytestmark = pytest.mark.skipif(
    not cpu_ops.enabled(torch.zeros(1)), reason="the CPU ops need a C compiler"
)


def hf_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_add_rms_norm(rows: int) -> None:
    torch.manual_seed(rows)
    weight = torch.randn(576) * 2
    x = torch.randn(rows, 576) * torch.logspace(-2, 2, 576)  # outlier channels, as in LLMs
    residual = torch.randn(rows, 576)
    expected_sum = x + residual
    out, new_residual = cpu_ops.add_rms_norm(x, residual.clone(), weight, 1e-5)
    assert torch.equal(new_residual, expected_sum)  # one float add per element: exact
    torch.testing.assert_close(out, hf_rms_norm(expected_sum, weight, 1e-5), rtol=2e-6, atol=1e-6)
    out, same = cpu_ops.add_rms_norm(x, None, weight, 1e-5)
    assert same is x
    torch.testing.assert_close(out, hf_rms_norm(x, weight, 1e-5), rtol=2e-6, atol=1e-6)


def test_rms_norm_module_takes_the_op_for_2d_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    norm = RMSNorm(64, eps=1e-6)
    norm.weight.data = torch.randn(64)
    x, residual = torch.randn(3, 64), torch.randn(3, 64)
    expected_sum = x + residual
    calls = []
    real = cpu_ops.add_rms_norm
    monkeypatch.setattr(cpu_ops, "add_rms_norm", lambda *a: calls.append(1) or real(*a))
    out, new_residual = norm(x, residual)
    assert calls and torch.equal(new_residual, expected_sum)
    torch.testing.assert_close(out, hf_rms_norm(expected_sum, norm.weight, 1e-6))


@pytest.mark.parametrize(("heads", "kv_heads", "d", "rows"), [(9, 3, 64, 1), (4, 2, 128, 17)])
def test_rope_is_bit_identical(heads: int, kv_heads: int, d: int, rows: int) -> None:
    torch.manual_seed(d)
    qkv = torch.randn(rows, (heads + 2 * kv_heads) * d)
    cos, sin = torch.randn(rows, 1, d), torch.randn(rows, 1, d)
    width = (heads + kv_heads) * d
    expected = apply_rope(qkv[:, :width].view(rows, -1, d), (cos, sin)).reshape(rows, width)
    v_before = qkv[:, width:].clone()
    cpu_ops.rope_(qkv, heads + kv_heads, d, cos, sin)
    assert torch.equal(qkv[:, :width], expected)
    assert torch.equal(qkv[:, width:], v_before)  # values are not rotated


def test_head_rms_norm_in_place() -> None:
    t, h, kvh, d = 3, 4, 2, 32
    qkv = torch.randn(t, (h + 2 * kvh) * d)
    wq, wk = torch.randn(d), torch.randn(d)
    q = qkv[:, : h * d].reshape(t, h, d)
    k = qkv[:, h * d : (h + kvh) * d].reshape(t, kvh, d)
    exp_q, exp_k = hf_rms_norm(q, wq, 1e-6), hf_rms_norm(k, wk, 1e-6)
    v_before = qkv[:, (h + kvh) * d :].clone()
    cpu_ops.head_rms_norm_(qkv, 0, h, d, wq, 1e-6)
    cpu_ops.head_rms_norm_(qkv, h, kvh, d, wk, 1e-6)
    torch.testing.assert_close(qkv[:, : h * d].reshape(t, h, d), exp_q, rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(
        qkv[:, h * d : (h + kvh) * d].reshape(t, kvh, d), exp_k, rtol=2e-6, atol=1e-6
    )
    assert torch.equal(qkv[:, (h + kvh) * d :], v_before)


@pytest.mark.parametrize("rows", [1, 40])
def test_silu_mul(rows: int) -> None:
    gate_up = torch.randn(rows, 2 * 1536) * 4
    gate, up = gate_up.split(1536, dim=-1)
    torch.testing.assert_close(cpu_ops.silu_mul(gate_up), F.silu(gate) * up, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_store_kv_writes_pool_and_dense_rows(kv_dtype: torch.dtype) -> None:
    """fp32 caches take the rows as they are; fp16 and bf16 caches as torch rounds them (to
    nearest even, ties, subnormals, overflow and NaN included)."""
    t, kvh, d = 5, 3, 64
    qkv = torch.randn(t, (9 + 2 * kvh) * d)
    qkv[0, 9 * d : 9 * d + 10] = torch.tensor(
        [1e-6, -3e-8, 7e4, 1.0 + 2**-11, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 3.3961e38, 1e-40,
         float("inf"), float("nan")]
    )  # fmt: skip
    k = qkv[:, 9 * d : (9 + kvh) * d].view(t, kvh, d)
    v = qkv[:, (9 + kvh) * d :].view(t, kvh, d)
    k_pool = torch.zeros(100, kvh, d, dtype=kv_dtype)
    v_pool = torch.zeros(100, kvh, d, dtype=kv_dtype)
    k_dense = torch.zeros(50, kvh, d, dtype=kv_dtype)
    v_dense = torch.zeros(50, kvh, d, dtype=kv_dtype)
    slots = torch.tensor([7, 3, 99, 0, 42])
    rows = torch.tensor([10, 20])  # the first two tokens are decodes
    assert cpu_ops.can_store_kv(k, v, slots, k_pool)
    cpu_ops.store_kv(k, v, k_pool, v_pool, slots, (k_dense, v_dense, rows))
    exp_k = torch.zeros(100, kvh, d, dtype=kv_dtype)
    exp_v = torch.zeros(100, kvh, d, dtype=kv_dtype)
    exp_k.index_copy_(0, slots, k.to(kv_dtype))
    exp_v.index_copy_(0, slots, v.to(kv_dtype))

    def same(a: torch.Tensor, b: torch.Tensor) -> None:  # NaN where NaN, all else equal
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)

    same(k_pool, exp_k)
    same(v_pool, exp_v)
    same(k_dense[rows], k[:2].to(kv_dtype))
    same(v_dense[rows], v[:2].to(kv_dtype))
    untouched = torch.ones(50, dtype=torch.bool)
    untouched[rows] = False
    assert not k_dense[untouched].any() and not v_dense[untouched].any()


def test_store_kv_refuses_caches_it_cannot_write() -> None:
    k = v = torch.randn(2, 3, 64)
    assert not cpu_ops.can_store_kv(
        k, v, torch.tensor([0, 1]), torch.zeros(4, 3, 64, dtype=torch.float64)
    )


def _dense_kv(b: int, kvh: int, cap: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DecodeKV's layout: [B, capacity, KVH, D] memory seen as [B, KVH, capacity, D]."""
    buf = torch.randn(2, b, cap, kvh, d)
    return buf[0].transpose(1, 2), buf[1].transpose(1, 2)


@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("b", "heads", "kv_heads", "d", "n", "lo", "masked"),
    [
        (1, 9, 3, 64, 1, 0, False),  # the first decode token sees only itself
        (1, 9, 3, 64, 300, 0, False),  # across several key chunks
        (3, 8, 8, 128, 130, 0, True),  # padded batch, no GQA
        (4, 12, 2, 64, 400, 150, True),  # a sliding window: keys from 150 on, masked rows
        (2, 32, 2, 64, 260, 0, True),  # a group of 16 query heads per key head
        (3, 6, 2, 40, 70, 0, True),  # head_dim 40: the kernel's generic loop
    ],
)
def test_decode_attention_matches_sdpa(
    b: int, heads: int, kv_heads: int, d: int, n: int, lo: int, masked: bool, kv_dtype
) -> None:
    """Against SDPA on the cache's values widened to fp32 (a 16-bit cache is read as it is
    stored, so only the order of the sums differs)."""
    torch.manual_seed(n)
    cap = n + 5
    k_all, v_all = (t.to(kv_dtype) for t in _dense_kv(b, kv_heads, cap, d))
    qkv = torch.randn(b, (heads + 2 * kv_heads) * d)
    q = qkv[:, : heads * d].view(b, heads, d)
    mask = None
    if masked:  # row i sees a different number of keys; a whole key chunk may be hidden
        lens = torch.tensor([n - 7 * i for i in range(b)])
        pos = torch.arange(lo, n)
        hide = (pos >= lens[:, None]) | (pos < lens[:, None] - 200)
        mask = torch.zeros(b, n - lo).masked_fill_(hide, float("-inf"))[:, None, None, :]
    assert cpu_ops.can_decode_attention(q, k_all, v_all)
    got = cpu_ops.decode_attention(q, k_all, v_all, lo, n, mask, d**-0.5)
    expected = F.scaled_dot_product_attention(
        q.unsqueeze(2),
        k_all[:, :, lo:n].float(),
        v_all[:, :, lo:n].float(),
        attn_mask=mask,
        scale=d**-0.5,
        enable_gqa=True,
    ).reshape(b, -1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if masked:  # what a masked key holds is never read, NaN included
        k_all[:, :, lo:n].masked_fill_(hide[:, None, :, None], float("nan"))
        v_all[:, :, lo:n].masked_fill_(hide[:, None, :, None], float("nan"))
        again = cpu_ops.decode_attention(q, k_all, v_all, lo, n, mask, d**-0.5)
        assert torch.equal(again, got)


def test_attention_layer_same_with_and_without_the_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """One decode step through Attention.forward, contiguous decode copy and pool both
    written, gives the torch path's output and cache contents."""
    b, h, kvh, d, cap, n = 2, 6, 2, 64, 40, 33
    results = []
    for fast in (True, False):
        torch.manual_seed(0)
        attn = Attention(h, kvh, d, d**-0.5)
        attn.k_cache, attn.v_cache = torch.zeros(8, 16, kvh, d), torch.zeros(8, 16, kvh, d)
        buf = torch.randn(2, 1, b, cap, kvh, d)  # [k/v, layers, B, cap, KVH, D]
        views = [
            (
                buf[0, 0].view(-1, kvh, d),
                buf[1, 0].view(-1, kvh, d),
                buf[0, 0].transpose(1, 2),
                buf[1, 0].transpose(1, 2),
            )
        ]
        ctx = [n, n - 4]
        pad = torch.arange(n) >= torch.tensor(ctx)[:, None]
        meta = AttentionMetadata(
            slot_mapping=torch.tensor([5, 70]),
            num_decodes=b,
            decode_len=n,
            decode_mask=torch.zeros(b, n).masked_fill_(pad, float("-inf"))[:, None, None, :],
            decode_views=views,
            decode_rows=torch.tensor([ctx[0] - 1, cap + ctx[1] - 1]),
        )
        qkv = torch.randn(b, (h + 2 * kvh) * d)
        q = qkv[:, : h * d].view(b, h, d)
        k = qkv[:, h * d : (h + kvh) * d].view(b, kvh, d)
        v = qkv[:, (h + kvh) * d :].view(b, kvh, d)
        monkeypatch.setattr(cpu_ops, "enabled", lambda x, fast=fast: fast)
        out = attn(q, k, v, meta)
        results.append((out, attn.k_cache.clone(), attn.v_cache.clone(), buf.clone()))
    (o1, k1, v1, d1), (o2, k2, v2, d2) = results
    torch.testing.assert_close(o1, o2, rtol=1e-5, atol=1e-5)
    assert torch.equal(k1, k2) and torch.equal(v1, v2) and torch.equal(d1, d2)


@pytest.mark.parametrize(
    ("family", "quantization", "window"),
    [
        ("llama", "int8", None),
        ("qwen2", "q4", None),
        ("qwen3", "q4", None),
        ("mistral", "q4", 8),
        ("llama", "q8", None),
        ("qwen2", "bf16", None),
        ("llama", "fp16", None),
        ("qwen3", "bfloat16", None),  # dtype bfloat16: bf16 matmuls, a bf16 cache
        ("mistral", "bfloat16", 8),
    ],
)
def test_fused_decode_layers_equal_the_layer_by_layer_path(
    tiny_model_dirs, tmp_path, monkeypatch, family, quantization, window
) -> None:
    """Decode steps with each layer as one C call give bit-identical logprobs to the
    layer-by-layer forward: a padded batch of three, Qwen2's q/k/v bias, Qwen3's q/k norms,
    a sliding window shorter than the prompts; and under dtype bfloat16."""
    from engine_testing import assert_pool_free
    from test_sliding_window import _with_window

    from tritium.engine import LLM, SamplingParams
    from tritium.engine.models.llama import LlamaModel

    src = tiny_model_dirs[family]
    if window is not None:
        src = _with_window(src, tmp_path / "windowed", window)
    if quantization == "bfloat16":
        llm = LLM(str(src), dtype="bfloat16")
        assert llm.engine_core.runner.kv_dtype == torch.bfloat16
    else:
        llm = LLM(str(src), dtype="float32", quantization=quantization)
    prompts = [{"prompt_token_ids": list(range(100, 100 + n))} for n in (21, 5, 13)]
    params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True, logprobs=3)
    calls = []
    real = cpu_ops.decode_layer
    monkeypatch.setattr(cpu_ops, "decode_layer", lambda *a: calls.append(1) or real(*a))

    def run() -> list[list[tuple[int, float]]]:
        llm.engine_core.block_manager.reset_prefix_cache()
        outs = llm.generate(prompts, params, use_tqdm=False)
        assert_pool_free(llm)
        return [
            [(t, lp.logprob) for step in o.outputs[0].logprobs or [] for t, lp in step.items()]
            for o in outs
        ]

    fused = run()
    assert len(calls) >= 19 * 2  # every decode step, every layer
    monkeypatch.setattr(LlamaModel, "_fused_decode_params", lambda self: [])
    calls.clear()
    assert run() == fused
    assert not calls
