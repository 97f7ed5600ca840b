"""The small fused ops of a CPU step (csrc/cpu_ops.c, built by native.py): add + RMSNorm,
Qwen3's per-head q/k norms, RoPE in place, SiLU * up, the KV store, decode attention over
the contiguous context, and a whole decoder layer of a decode-only step in one call.

A decode step at batch 1 spends more time dispatching torch ops on vectors of a few
hundred floats than computing them (rms_norm alone takes ~19 us of dispatch on a 576-float
row); each of these does its group's work in one call. The layers use them for fp32 CPU
tensors when the library is available (`enabled`) and keep their torch expressions
otherwise, which remain the reference the tests compare against.
"""

from __future__ import annotations

import ctypes
import functools
from typing import TYPE_CHECKING

import torch

from tritium.engine.layers import native
from tritium.engine.layers.linear import HALF_FORMATS

if TYPE_CHECKING:
    from tritium.engine.layers.attention import Attention, AttentionMetadata
    from tritium.engine.layers.linear import Linear

#: decode_attention's limits (the C kernel's stack buffers).
MAX_GROUP = 16
MAX_HEAD_DIM = 512

#: KV cache dtypes the C ops read and write (16-bit rows are widened as they are read),
#: with the C ops' kv_format flag for each.
_KV_FORMATS = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
KV_DTYPES = tuple(_KV_FORMATS)


@functools.cache
def _available() -> bool:
    return native.is_available()


def _kv_format(cache: torch.Tensor) -> int:
    """The C ops' kv_format flag for a KV cache of this dtype."""
    return _KV_FORMATS[cache.dtype]


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


def head_rms_norm_(
    qkv: torch.Tensor, first_head: int, heads: int, head_dim: int, weight: torch.Tensor, eps: float
) -> None:
    """RMSNorm over each of `heads` heads from `first_head` on, in place in qkv [T, width]
    (Qwen3's q and k norms)."""
    native.library().tritium_head_rms_norm(
        qkv.data_ptr(), qkv.shape[0], qkv.stride(0), first_head, heads, head_dim,
        weight.data_ptr(), eps,
    )  # fmt: skip


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
        _kv_format(k_pool),
    )  # fmt: skip


def can_store_kv(
    k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor, cache: torch.Tensor
) -> bool:
    """Whether store_kv takes these views (heads and dims contiguous, one row stride) into
    a cache of `cache`'s dtype."""
    d = k.shape[2]
    return (
        cache.dtype in KV_DTYPES
        and k.stride(1) == d
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
    [B, KVH, tokens, D] (same strides and dtype, one of KV_DTYPES, D contiguous), positions
    [lo, n), with the additive mask [B, 1, 1, n - lo] when given -> [B, H * D]."""
    b, h, d = q.shape
    kvh = k.shape[1]
    out = q.new_empty(b, h * d)
    if mask is not None:
        mask = mask.reshape(b, n - lo).contiguous()
    sb, sh, st, _ = k.stride()
    native.library().tritium_decode_attention(
        q.data_ptr(), q.stride(0), b, h, kvh, d, k.data_ptr(), v.data_ptr(), sb, sh, st,
        lo, n, None if mask is None else mask.data_ptr(), scale,
        _kv_format(k), out.data_ptr(),
    )  # fmt: skip
    return out


def heads_fit(heads: int, kv_heads: int, head_dim: int) -> bool:
    """Whether decode attention's kernel takes this head layout (its stack buffers)."""
    return heads % kv_heads == 0 and heads // kv_heads <= MAX_GROUP and head_dim <= MAX_HEAD_DIM


def can_decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether decode_attention takes these tensors (layouts and the kernel's limits)."""
    d = q.shape[2]
    return (
        k.dtype in KV_DTYPES
        and v.dtype == k.dtype
        and q.stride(2) == 1
        and q.stride(1) == d
        and k.stride(3) == 1
        and v.stride() == k.stride()
        and heads_fit(q.shape[1], k.shape[1], d)
    )


# -- one whole decoder layer per call (decode-only steps) --------------------------------


class LinearParams(ctypes.Structure):
    """csrc/cpu_ops.c's TritiumLinear: a compact Linear's buffers."""

    _fields_ = [
        ("kind", ctypes.c_int64),  # _KINDS
        ("in_features", ctypes.c_int64),
        ("out_features", ctypes.c_int64),
        ("codes", ctypes.c_void_p),
        ("scales", ctypes.c_void_p),
        ("bias", ctypes.c_void_p),
    ]


class LayerParams(ctypes.Structure):
    """csrc/cpu_ops.c's TritiumLayer: a Llama-family decoder layer's weights and shapes.
    The pointers are into the layer's own parameters, which live as long as the model."""

    _fields_ = [
        ("qkv", LinearParams),
        ("o", LinearParams),
        ("gate_up", LinearParams),
        ("down", LinearParams),
        ("input_norm", ctypes.c_void_p),
        ("post_norm", ctypes.c_void_p),
        ("q_norm", ctypes.c_void_p),  # Qwen3; None otherwise
        ("k_norm", ctypes.c_void_p),
        ("eps", ctypes.c_float),
        ("scale", ctypes.c_float),
        ("hidden", ctypes.c_int64),
        ("heads", ctypes.c_int64),
        ("kv_heads", ctypes.c_int64),
        ("head_dim", ctypes.c_int64),
        ("intermediate", ctypes.c_int64),
    ]


_KINDS = {"int8": 1, "q4": 2, "bf16": 3, "fp16": 4, "q8": 5}
_BF16_INPUTS_KIND = 6  # bf16 weights, inputs rounded to bf16 (Linear.bf16_inputs)


def linear_params(layer: Linear) -> LinearParams | None:
    """The C view of a compact Linear; None when its weight is a plain tensor."""
    if layer.quant not in _KINDS or layer.qweight is None:
        return None
    scales = layer.wscale
    if scales is None and layer.quant not in HALF_FORMATS:
        return None
    bias = layer.bias
    if bias is not None and (bias.dtype != torch.float32 or not bias.is_contiguous()):
        return None
    kind = _BF16_INPUTS_KIND if layer.bf16_inputs else _KINDS[layer.quant]
    return LinearParams(
        kind, layer.in_features, layer.out_features, layer.qweight.data_ptr(),
        None if scales is None else scales.data_ptr(), None if bias is None else bias.data_ptr(),
    )  # fmt: skip


def decode_layer(
    params: LayerParams,
    x: torch.Tensor,
    residual: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    attn: Attention,
    meta: AttentionMetadata,
    work: torch.Tensor,
) -> None:
    """One decoder layer for a step of decodes only (meta.decode_views set): x [B, hidden]
    in and out, `residual` the running sum (zeros before the first layer); `work` holds
    workspace_floats(params, B) floats. Identical to the layer's forward with the C ops."""
    assert meta.decode_views is not None and meta.decode_rows is not None
    b = x.shape[0]
    k_flat, v_flat, k_all, _ = meta.decode_views[attn.layer_idx]
    lo, mask = 0, meta.decode_mask
    if attn.sliding_window is not None and meta.window_decode_start is not None:
        lo, mask = meta.window_decode_start, meta.window_decode_mask
    sb, sh, st, _ = k_all.stride()
    cos, sin = rope
    rc = native.library().tritium_decode_layer(
        ctypes.byref(params), x.data_ptr(), residual.data_ptr(), b, cos.data_ptr(),
        sin.data_ptr(), attn.k_cache.data_ptr(), attn.v_cache.data_ptr(),
        meta.slot_mapping.data_ptr(), k_flat.data_ptr(), v_flat.data_ptr(),
        meta.decode_rows.data_ptr(), sb, sh, st, lo, meta.decode_len,
        None if mask is None else mask.data_ptr(), _kv_format(attn.k_cache),
        work.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    if rc != 0:
        raise MemoryError("decode layer: cannot allocate a kernel's scratch buffer")


def workspace_floats(params: LayerParams, batch: int) -> int:
    """Floats of scratch tritium_decode_layer needs for `batch` rows."""
    width = (params.heads + 2 * params.kv_heads) * params.head_dim
    return batch * (
        params.hidden + width + params.heads * params.head_dim + 3 * params.intermediate
    )
