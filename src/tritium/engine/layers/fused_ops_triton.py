"""Fused elementwise kernels for the CUDA step (Triton), one launch where torch takes many.

At batch 1 a decode step is a few hundred small kernels, and on an H100 their launches and
round trips through memory, not the weight reads, made the step 1.6x its memory floor.
Three kernels replace the unfused torch expressions of a layer:

- `add_rms_norm`: residual add + RMSNorm (torch: about nine kernels, each norm twice a
  layer). The sum is written into the residual's own memory, as the CPU op does.
- `qkv_rope_write_kv`: over the packed q/k/v rows of a step, in place: Qwen3's per-head
  q/k RMSNorm, RoPE on q and k, and the store of k and v into their cache slots (torch:
  about a dozen kernels, plus the cache write).
- `silu_mul`: silu(gate) * up of the packed gate/up rows (torch: three kernels).

Every kernel computes in fp32 and rounds where Hugging Face's bf16 expressions round, so
the results follow the reference within the last bit of a reduction. The torch expressions
stay as the CPU path and as the tests' reference. The layers take the kernels when their
`triton_ops` flag is set (`use_triton_ops`, by the Triton step's executor); the tests run
them, and that executor, on CPU tensors through Triton's interpreter (TRITON_INTERPRET=1).
"""

from __future__ import annotations

import torch
from torch import nn

from tritium.engine.layers.paged_attention_triton import HAS_TRITON

if HAS_TRITON:
    import triton
    import triton.language as tl

#: Heads per program in `qkv_rope_write_kv` (a [HEADS_PER_PROGRAM, head_dim] tile).
HEADS_PER_PROGRAM = 4
#: Columns per program in `silu_mul`.
SILU_BLOCK = 1024


def use_triton_ops(model: nn.Module) -> None:
    """Switch `model`'s layers that have a fused kernel here to it (their `triton_ops`
    flag); the executor of the Triton step does this once."""
    for module in model.modules():
        if hasattr(module, "triton_ops"):
            setattr(module, "triton_ops", True)  # noqa: B010 (a plain bool, not a submodule)


if HAS_TRITON:

    @triton.jit
    def _add_rms_norm_kernel(
        x_ptr, res_ptr, w_ptr, out_ptr, n_cols, eps, x_stride, res_stride, out_stride,
        HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        m = cols < n_cols
        x = tl.load(x_ptr + row * x_stride + cols, mask=m, other=0.0)
        if HAS_RESIDUAL:
            r = tl.load(res_ptr + row * res_stride + cols, mask=m, other=0.0)
            x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)  # rounded as torch's add
            tl.store(res_ptr + row * res_stride + cols, x, mask=m)
        xf = x.to(tl.float32)
        inv_rms = tl.rsqrt(tl.sum(xf * xf, axis=0) / n_cols + eps)
        y = (xf * inv_rms).to(x.dtype)  # Hugging Face rounds before the weight
        w = tl.load(w_ptr + cols, mask=m, other=0.0)
        out = w.to(tl.float32) * y.to(tl.float32)
        tl.store(out_ptr + row * out_stride + cols, out.to(out_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _qkv_rope_write_kv_kernel(
        qkv_ptr, cos_ptr, sin_ptr, q_norm_ptr, k_norm_ptr, kc_ptr, vc_ptr, slot_ptr,
        eps, qkv_stride, cos_stride, sin_stride,
        NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
        D_PAD: tl.constexpr, HEADS: tl.constexpr, QK_NORM: tl.constexpr,
    ):  # fmt: skip
        # A program owns HEADS consecutive head rows of one token's packed [q | k | v] row.
        t = tl.program_id(0).to(tl.int64)
        j = tl.program_id(1) * HEADS + tl.arange(0, HEADS)  # head rows 0 .. H + 2 KVH
        d = tl.arange(0, D_PAD)
        all_heads = NUM_HEADS + 2 * NUM_KV_HEADS
        is_q = j < NUM_HEADS
        is_k = (j >= NUM_HEADS) & (j < NUM_HEADS + NUM_KV_HEADS)
        is_qk = j < NUM_HEADS + NUM_KV_HEADS
        dm = d < HEAD_DIM
        m = (j < all_heads)[:, None] & dm[None, :]
        row = qkv_ptr + t * qkv_stride + j[:, None] * HEAD_DIM
        partner = (d + HEAD_DIM // 2) % HEAD_DIM  # rotate_half reads the other half, sign in `sin`
        x = tl.load(row + d[None, :], mask=m, other=0.0)
        x2 = tl.load(row + partner[None, :], mask=m, other=0.0)
        if QK_NORM:  # Qwen3: RMSNorm over each q and k head before the rotation
            xf = x.to(tl.float32)
            inv_rms = tl.rsqrt(tl.sum(xf * xf, axis=1) / HEAD_DIM + eps)
            qw = tl.load(q_norm_ptr + d, mask=dm, other=0.0).to(tl.float32)
            kw = tl.load(k_norm_ptr + d, mask=dm, other=0.0).to(tl.float32)
            qw2 = tl.load(q_norm_ptr + partner, mask=dm, other=0.0).to(tl.float32)
            kw2 = tl.load(k_norm_ptr + partner, mask=dm, other=0.0).to(tl.float32)
            w = tl.where(is_q[:, None], qw[None, :], kw[None, :])
            w2 = tl.where(is_q[:, None], qw2[None, :], kw2[None, :])
            y = (xf * inv_rms[:, None]).to(x.dtype).to(tl.float32)
            y2 = (x2.to(tl.float32) * inv_rms[:, None]).to(x.dtype).to(tl.float32)
            normed = (w * y).to(x.dtype)
            normed2 = (w2 * y2).to(x.dtype)
            x = tl.where(is_qk[:, None], normed, x)
            x2 = tl.where(is_qk[:, None], normed2, x2)
        cos = tl.load(cos_ptr + t * cos_stride + d, mask=dm, other=0.0).to(tl.float32)
        sin = tl.load(sin_ptr + t * sin_stride + d, mask=dm, other=0.0).to(tl.float32)
        # Rounded as Hugging Face's bf16 expression: x * cos, rotate_half(x) * sin, sum.
        a = (x.to(tl.float32) * cos[None, :]).to(x.dtype).to(tl.float32)
        b = (x2.to(tl.float32) * sin[None, :]).to(x.dtype).to(tl.float32)
        roped = (a + b).to(x.dtype)
        x = tl.where(is_qk[:, None], roped, x)
        tl.store(row + d[None, :], x, mask=m & is_qk[:, None])
        slot = tl.load(slot_ptr + t).to(tl.int64)
        kv_head = tl.where(is_k, j - NUM_HEADS, j - NUM_HEADS - NUM_KV_HEADS)
        dst = slot * (NUM_KV_HEADS * HEAD_DIM) + kv_head[:, None] * HEAD_DIM + d[None, :]
        # slot -1: a padded row of a CUDA-graph batch. (The slot is widened to a vector
        # first: the interpreter rejects a mask made from a scalar comparison.)
        live = m & ((slot + tl.zeros_like(j)) >= 0)[:, None]
        tl.store(kc_ptr + dst, x, mask=live & is_k[:, None])
        tl.store(vc_ptr + dst, x, mask=live & (j >= NUM_HEADS + NUM_KV_HEADS)[:, None])

    @triton.jit
    def _silu_mul_kernel(
        gate_up_ptr, out_ptr, n_cols, in_stride, out_stride, BLOCK: tl.constexpr
    ):  # fmt: skip
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        m = cols < n_cols
        gate = tl.load(gate_up_ptr + row * in_stride + cols, mask=m, other=0.0)
        up = tl.load(gate_up_ptr + row * in_stride + n_cols + cols, mask=m, other=0.0)
        g = gate.to(tl.float32)
        act = (g / (1.0 + tl.exp(-g))).to(gate.dtype)  # F.silu rounds to the input dtype
        out = act.to(tl.float32) * up.to(tl.float32)
        tl.store(out_ptr + row * out_stride + cols, out.to(out_ptr.dtype.element_ty), mask=m)


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rmsnorm(x + residual) * weight, x + residual) for rows [T, N]; the sum is made in
    `residual`'s own memory (a step's private running sum). Without `residual`:
    (rmsnorm(x) * weight, x). Rows must have unit column stride; weight has x's dtype."""
    t, n = x.shape
    out = torch.empty(t, n, dtype=x.dtype, device=x.device)
    if t:
        res = x if residual is None else residual
        block = triton.next_power_of_2(n)
        _add_rms_norm_kernel[(t,)](
            x, res, weight, out, n, eps, x.stride(0), res.stride(0), out.stride(0),
            HAS_RESIDUAL=residual is not None, BLOCK=block,
            num_warps=min(16, max(1, block // 256)),
        )  # fmt: skip
    return out, x if residual is None else residual


def qkv_rope_write_kv(
    qkv: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    rope: tuple[torch.Tensor, torch.Tensor],
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    qk_norm: tuple[torch.Tensor, torch.Tensor, float] | None = None,
) -> None:
    """In place over the packed rows qkv [T, (H + 2 KVH) * D]: optional per-head q/k
    RMSNorm (`qk_norm` = (q weight, k weight, eps)), then RoPE on q and k with the step's
    (cos, signed sin) rows [T, 1, D] from `RotaryEmbedding`; k and v are also stored at
    `slot_mapping` (slot -1 skips the row) in the [NB, BS, KVH, D] pools."""
    t = qkv.shape[0]
    if t == 0:
        return
    cos, sin = rope
    heads = num_heads + 2 * num_kv_heads
    qn, kn, eps = qk_norm if qk_norm is not None else (qkv, qkv, 0.0)  # unused without norms
    _qkv_rope_write_kv_kernel[(t, triton.cdiv(heads, HEADS_PER_PROGRAM))](
        qkv, cos, sin, qn, kn, k_cache, v_cache, slot_mapping,
        eps, qkv.stride(0), cos.stride(0), sin.stride(0),
        NUM_HEADS=num_heads, NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim,
        D_PAD=triton.next_power_of_2(head_dim), HEADS=HEADS_PER_PROGRAM,
        QK_NORM=qk_norm is not None, num_warps=4,
    )  # fmt: skip


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for packed rows [T, 2 * I] -> [T, I]."""
    t, two_i = gate_up.shape
    n = two_i // 2
    out = torch.empty(t, n, dtype=gate_up.dtype, device=gate_up.device)
    if t:
        _silu_mul_kernel[(t, triton.cdiv(n, SILU_BLOCK))](
            gate_up, out, n, gate_up.stride(0), out.stride(0), BLOCK=SILU_BLOCK, num_warps=4
        )
    return out
