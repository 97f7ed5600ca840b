"""The small fused ops of a CPU step (csrc/cpu_ops.c, built by native.py): add + RMSNorm,
RoPE in place, SiLU * up, the KV store, and decode attention over the contiguous context.

A decode step at batch 1 spends more time dispatching torch ops on vectors of a few
hundred floats than computing them (rms_norm alone takes ~19 us of dispatch on a 576-float
row); each of these does its group's work in one call. The layers use them for fp32 CPU
tensors when the library is available (`enabled`) and keep their torch expressions
otherwise, which remain the reference the tests compare against.
"""

from __future__ import annotations

import functools

import torch

from tritium.engine.layers import native

#: decode_attention's limits (the C kernel's stack buffers).
MAX_GROUP = 16
MAX_HEAD_DIM = 512


@functools.cache
def _available() -> bool:
    return native.is_available()


def enabled(x: torch.Tensor) -> bool:
    """Whether `x` takes the C ops: float32 on CPU, with the library built."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and _available()


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rmsnorm(x + residual) * weight, x + residual), the sum made in `residual`'s own
    memory (it is a step's private running sum); without `residual`, (norm(x), x).
    x, residual: [T, N] contiguous fp32; weight: [N] fp32."""
    t, n = x.shape
    out = torch.empty_like(x)
    native.library().tritium_add_rms_norm(
        x.data_ptr(), None if residual is None else residual.data_ptr(), weight.data_ptr(),
        t, n, eps, out.data_ptr(),
    )  # fmt: skip
    return out, x if residual is None else residual


def rope_(
    qkv: torch.Tensor, heads: int, head_dim: int, cos: torch.Tensor, sin: torch.Tensor
) -> None:
    """Rotate the first `heads` heads of each row of qkv [T, width] in place; cos and sin
    are the step's rows ([T, 1, D] or [T, D], contiguous) from RotaryEmbedding."""
    t = qkv.shape[0]
    native.library().tritium_rope(
        qkv.data_ptr(), t, qkv.stride(0), heads, head_dim, cos.data_ptr(), sin.data_ptr()
    )


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for packed rows [T, 2 * I] -> [T, I]."""
    t, two_i = gate_up.shape
    out = gate_up.new_empty(t, two_i // 2)
    native.library().tritium_silu_mul(gate_up.data_ptr(), t, two_i // 2, out.data_ptr())
    return out


def store_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    slots: torch.Tensor,
    dense: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> None:
    """k, v [T, KVH, D] (rows of one buffer, heads contiguous) into pool rows `slots` of
    k_pool/v_pool [slots, KVH, D]; with dense = (k_flat, v_flat, rows), the first
    len(rows) tokens also into those rows of the contiguous decode copy."""
    t = k.shape[0]
    width = k.shape[1] * k.shape[2]
    kd = vd = rows = None
    num_rows = 0
    if dense is not None:
        k_flat, v_flat, r = dense
        kd, vd, rows, num_rows = k_flat.data_ptr(), v_flat.data_ptr(), r.data_ptr(), r.numel()
    native.library().tritium_store_kv(
        k.data_ptr(), v.data_ptr(), t, k.stride(0), width, k_pool.data_ptr(),
        v_pool.data_ptr(), slots.data_ptr(), kd, vd, rows, num_rows,
    )  # fmt: skip


def can_store_kv(k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor) -> bool:
    """Whether store_kv takes these views: heads and dims contiguous, one row stride."""
    d = k.shape[2]
    return (
        k.stride(1) == d
        and k.stride(2) == 1
        and v.stride() == k.stride()
        and slots.dtype == torch.int64
        and slots.is_contiguous()
    )


def decode_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lo: int,
    n: int,
    mask: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """One query per sequence: q [B, H, D] (rows of one buffer) against keys and values
    [B, KVH, tokens, D] (same strides, D contiguous), positions [lo, n), with the additive
    mask [B, 1, 1, n - lo] when given -> [B, H * D]."""
    b, h, d = q.shape
    kvh = k.shape[1]
    out = q.new_empty(b, h * d)
    if mask is not None:
        mask = mask.reshape(b, n - lo).contiguous()
    sb, sh, st, _ = k.stride()
    native.library().tritium_decode_attention(
        q.data_ptr(), q.stride(0), b, h, kvh, d, k.data_ptr(), v.data_ptr(), sb, sh, st,
        lo, n, None if mask is None else mask.data_ptr(), scale, out.data_ptr(),
    )  # fmt: skip
    return out


def can_decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether decode_attention takes these tensors (layouts and the kernel's limits)."""
    h, d = q.shape[1], q.shape[2]
    kvh = k.shape[1]
    return (
        q.stride(2) == 1
        and q.stride(1) == d
        and k.stride(3) == 1
        and v.stride() == k.stride()
        and h % kvh == 0
        and h // kvh <= MAX_GROUP
        and d <= MAX_HEAD_DIM
    )
