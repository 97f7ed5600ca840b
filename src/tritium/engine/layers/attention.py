"""Attention over the paged KV cache, behind one small interface.

The model runner builds an `AttentionMetadata` once per step; each layer's `Attention`
writes the step's keys and values into its cache blocks, then attends. The batch holds
single-token queries first (decodes, batched as one SDPA call), then multi-token queries
(prompt chunks, one SDPA call each). On CPU the decodes read a contiguous copy of their
context (`DecodeKV`, kept by the model runner across steps and appended to in place),
because gathering every layer's blocks anew each step costs as much memory traffic as
the weights at 20 streams; when that copy would be too big they gather blocks per layer.
A CUDA paged-decode kernel plugs in through `meta.paged_triton`.

Sliding-window layers (Mistral, Qwen2 with use_sliding_window) read the `window_*` fields
instead: the runner sets them only in steps where the window hides a key, so a model
without a window, or a context shorter than it, does exactly the work it did before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tritium.engine.layers import cpu_ops


@dataclass
class PrefillChunk:
    """A multi-token query: tokens [start, end) of the batch, after `context_len` tokens
    already in the cache. `kv_slots`/`mask` are set only when context_len > 0."""

    start: int
    end: int
    context_len: int
    kv_slots: torch.Tensor | None = None  # [context_len + n] flat cache slots
    mask: torch.Tensor | None = None  # [n, context_len + n] bool, True = attend
    # Sliding-window layers, when the window hides a key of this chunk: they attend to keys
    # [window_start, context_len + n) under window_mask [n, context_len + n - window_start].
    window_start: int = 0
    window_mask: torch.Tensor | None = None


@dataclass
class AttentionMetadata:
    """Everything attention needs about one step's batch, built once per step."""

    slot_mapping: torch.Tensor  # [num_tokens] flat cache slot for each new token
    num_decodes: int = 0  # the first num_decodes tokens are single-token queries
    block_tables: torch.Tensor | None = None  # [num_decodes, max_blocks]
    decode_mask: torch.Tensor | None = None  # [num_decodes, 1, 1, decode_len]; None: all valid
    decode_len: int = 0  # keys each decode attends over (padded to the longest)
    # CPU: the decode batch's context kept contiguous across steps (DecodeKV). Per layer:
    # flat keys and values [B * capacity, KVH, D], where this step's tokens go in at rows
    # `decode_rows`, and keys and values as [B, KVH, capacity, D] for SDPA.
    decode_views: list[tuple[torch.Tensor, ...]] | None = None
    decode_rows: torch.Tensor | None = None  # [num_decodes] b * capacity + position
    prefills: list[PrefillChunk] = field(default_factory=list)
    # Sliding-window layers' decodes: keys [window_decode_start, decode_len) under
    # window_decode_mask (None: none needed). window_decode_start None: the window hides
    # nothing this step, so they read the fields above like any layer.
    window_decode_start: int | None = None
    window_decode_mask: torch.Tensor | None = None


class Attention(nn.Module):
    """Paged attention for one layer; `k_cache`/`v_cache` are [num_blocks, block_size,
    num_kv_heads, head_dim] views into the runner's pool, set after allocation.
    `sliding_window`: the query at position p sees only keys at positions > p - window."""

    def __init__(
        self,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        scale: float,
        sliding_window: int | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = scale
        self.sliding_window = sliding_window
        self.layer_idx = 0  # set by the model runner with the cache views
        self.k_cache = torch.empty(0)
        self.v_cache = torch.empty(0)
        self._flat_of: torch.Tensor | None = None  # the k_cache `_flat` was made from
        self._flat: tuple[torch.Tensor, torch.Tensor] = (self.k_cache, self.v_cache)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """q: [T, H, D], k/v: [T, KVH, D] -> [T, H * D]."""
        if getattr(meta, "paged_triton", False):  # CUDA: Triton kernels over the pool
            from tritium.engine.layers.paged_attention_triton import paged_attention_forward

            return paged_attention_forward(self, q, k, v, meta)  # type: ignore[arg-type]
        if self._flat_of is not self.k_cache:  # the runner (re)assigned the cache views
            self._flat = (
                self.k_cache.view(-1, self.num_kv_heads, self.head_dim),
                self.v_cache.view(-1, self.num_kv_heads, self.head_dim),
            )
            self._flat_of = self.k_cache
        kc, vc = self._flat
        nd = meta.num_decodes
        # The C ops write the pool and the contiguous decode copy in one call (fp32 CPU).
        fast = cpu_ops.enabled(q) and cpu_ops.can_store_kv(k, v, meta.slot_mapping, kc)
        if fast:
            dense = None
            if nd and meta.decode_views is not None:
                assert meta.decode_rows is not None  # set together with decode_views
                k_flat, v_flat = meta.decode_views[self.layer_idx][:2]
                dense = (k_flat, v_flat, meta.decode_rows)
            cpu_ops.store_kv(k, v, kc, vc, meta.slot_mapping, dense)
        else:
            kc.index_copy_(0, meta.slot_mapping, k.to(kc.dtype))
            vc.index_copy_(0, meta.slot_mapping, v.to(vc.dtype))
        if not meta.prefills:
            return self.decode_attention(q, k, v, meta, fast).reshape(q.shape[0], -1)
        out = torch.empty_like(q)
        if nd:
            out[:nd] = self.decode_attention(q[:nd], k[:nd], v[:nd], meta, fast)
        for chunk in meta.prefills:
            out[chunk.start : chunk.end] = self.prefill_attention(q, k, v, kc, vc, chunk)
        return out.view(q.shape[0], -1)

    def _as_cached(self, x: torch.Tensor) -> torch.Tensor:
        """`x` at the cache's precision, in x's dtype: a prompt attends to its own keys and
        values as the cache holds them, so a later chunk or a prefix-cache hit, which read
        them from the cache, computes what this step does."""
        dtype = self.k_cache.dtype
        return x if x.dtype == dtype else x.to(dtype).to(x.dtype)

    def decode_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        meta: AttentionMetadata,
        fast: bool = False,
    ) -> torch.Tensor:
        """One query token per sequence (with its new key and value) against its context.
        `fast`: the C ops are in use, and store_kv already put this step's token into the
        contiguous copy."""
        b, n = q.shape[0], meta.decode_len
        lo, mask = 0, meta.decode_mask
        if self.sliding_window is not None and meta.window_decode_start is not None:
            lo, mask = meta.window_decode_start, meta.window_decode_mask
        if meta.decode_views is not None:  # contiguous context; add this step's token to it
            assert meta.decode_rows is not None  # set together with decode_views
            k_flat, v_flat, k_all, v_all = meta.decode_views[self.layer_idx]
            if fast and cpu_ops.can_decode_attention(q, k_all, v_all):
                out = cpu_ops.decode_attention(q, k_all, v_all, lo, n, mask, self.scale)
                return out.view(q.shape)
            if not fast:
                k_flat.index_copy_(0, meta.decode_rows, k.to(k_flat.dtype))
                v_flat.index_copy_(0, meta.decode_rows, v.to(v_flat.dtype))
            k, v = k_all[:, :, lo:n], v_all[:, :, lo:n]  # [B, KVH, n, D]
        else:  # gather this layer's blocks (the cache already holds this step's token)
            assert meta.block_tables is not None
            idx = meta.block_tables.view(-1)
            k = self.k_cache.flatten(1).index_select(0, idx)
            v = self.v_cache.flatten(1).index_select(0, idx)
            k = k.view(b, -1, self.num_kv_heads, self.head_dim)[:, lo:n].transpose(1, 2)
            v = v.view(b, -1, self.num_kv_heads, self.head_dim)[:, lo:n].transpose(1, 2)
        o = F.scaled_dot_product_attention(
            q.unsqueeze(2),  # [B, H, 1, D]
            k.to(q.dtype),  # a cache in another dtype (kv_cache_dtype) is widened here
            v.to(q.dtype),
            attn_mask=mask,
            scale=self.scale,
            enable_gqa=True,
        )
        return o.squeeze(2)

    def prefill_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kc: torch.Tensor,
        vc: torch.Tensor,
        chunk: PrefillChunk,
    ) -> torch.Tensor:
        """A prompt chunk: causal over itself, plus everything before it in the cache.

        With a bf16 cache (dtype bfloat16 on CPU) the chunk attends in bf16, as a bf16
        model does: the keys and values are bf16 already, and torch's flash attention runs
        bf16 about 3x faster than fp32 on a CPU with AMX (a 1500-token prompt)."""
        s, e = chunk.start, chunk.end
        in_bf16 = self.k_cache.dtype == torch.bfloat16 and q.device.type == "cpu"
        qs = q[s:e].transpose(0, 1).unsqueeze(0)  # [1, H, n, D]
        if in_bf16:
            qs = qs.to(torch.bfloat16)
        windowed = self.sliding_window is not None and chunk.window_mask is not None
        if chunk.context_len == 0:
            ks, vs, mask, causal = self._as_cached(k[s:e]), self._as_cached(v[s:e]), None, True
            if windowed:  # window_start is 0: the first query sees the first key
                mask, causal = chunk.window_mask, False
        else:
            assert chunk.kv_slots is not None
            slots, mask = chunk.kv_slots, chunk.mask
            if windowed:
                slots, mask = slots[chunk.window_start :], chunk.window_mask
            ks, vs, causal = kc[slots], vc[slots], False
        ks, vs = ks.to(qs.dtype), vs.to(qs.dtype)
        o = F.scaled_dot_product_attention(
            qs,
            ks.transpose(0, 1).unsqueeze(0),
            vs.transpose(0, 1).unsqueeze(0),
            attn_mask=mask,
            is_causal=causal,
            scale=self.scale,
            enable_gqa=True,
        )
        return o.squeeze(0).transpose(0, 1).to(q.dtype)  # [n, H, D]
