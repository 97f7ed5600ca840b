"""Paged attention on CUDA: Triton kernels that read K/V straight from the block pool.

Three kernels, all driven by one `PagedMetadata` per step:

- `write_kv`: scatter the step's new keys/values into their cache slots (slot -1 = skip,
  so padded rows of a CUDA-graph batch write nothing).
- `paged_decode`: one query token per sequence. A program owns one (sequence, KV head,
  split): it loads the GQA group's query heads as one [group, D] tile, so each key/value
  tile is read once per group, not once per query head. Long contexts are split across
  programs (flash-decoding) and merged by a small reduce kernel, so batch 1 still fills
  the GPU.
- `paged_prefill`: every prompt chunk of the batch in one launch (varlen). A program owns
  BLOCK_M query rows of one chunk and one head; it walks the chunk's block table up to its
  causal limit, so context already in the cache (chunked prefill, prefix-cache hits) and
  the chunk itself are read the same way, straight from the pool.

Sliding-window layers (Mistral, Qwen2 with use_sliding_window) pass their window: a query
at position p sees keys (p - window, p], and tiles wholly before that are never read.

The K/V pool layout is the runner's: [num_blocks, block_size, num_kv_heads, head_dim].
`reference_decode` / `reference_prefill` are plain torch versions for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # CPU-only installs: the engine keeps its torch path
    HAS_TRITON = False

DECODE_BLOCK_N = 64  # keys per decode iteration
PREFILL_BLOCK_M = 64  # query rows per prefill program
PREFILL_BLOCK_N = 64  # keys per prefill iteration
MAX_SPLITS = 16
_LOG2E = 1.4426950408889634


@dataclass
class PagedMetadata:
    """A step's batch for the Triton path: decodes first, then prefill chunks.

    Integer tensors live on the device; the decode part has fixed shapes for a given
    padded batch size, so CUDA graphs can replay it with new contents.
    """

    slot_mapping: torch.Tensor  # [T] int64 flat cache slot per new token; -1 = skip
    num_decodes: int = 0
    decode_block_tables: torch.Tensor | None = None  # [B, W] int32
    decode_context_lens: torch.Tensor | None = None  # [B] int32 (0 = padded row)
    decode_splits: int = 1
    # Prefill chunks (C of them), in batch order after the decodes.
    prefill_q_start: torch.Tensor | None = None  # [C] int32 first row in the batch
    prefill_q_len: torch.Tensor | None = None  # [C] int32 query rows
    prefill_context_len: torch.Tensor | None = None  # [C] int32 tokens already cached
    prefill_block_tables: torch.Tensor | None = None  # [C, W] int32
    prefill_tile_chunk: torch.Tensor | None = None  # [tiles] int32 chunk of each tile
    prefill_tile_m0: torch.Tensor | None = None  # [tiles] int32 first row within the chunk
    num_prefill_tiles: int = 0

    paged_triton = True  # the marker Attention.forward dispatches on


def num_decode_splits(batch: int, num_kv_heads: int, max_context: int, num_sms: int) -> int:
    """Splits per sequence so that batch * kv_heads * splits covers about two waves."""
    programs = batch * num_kv_heads
    want = -(-2 * num_sms // programs)
    tiles = max(1, -(-max_context // DECODE_BLOCK_N))
    return max(1, min(want, MAX_SPLITS, tiles))


if HAS_TRITON:

    @triton.jit
    def _write_kv_kernel(
        k_ptr, v_ptr, kc_ptr, vc_ptr, slot_ptr, k_stride, v_stride,
        ROW: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        t = tl.program_id(0)
        slot = tl.load(slot_ptr + t).to(tl.int64)
        offs = tl.arange(0, BLOCK)
        m = (offs < ROW) & ((slot + tl.zeros_like(offs)) >= 0)  # a vector (the interpreter)
        k = tl.load(k_ptr + t.to(tl.int64) * k_stride + offs, mask=m)
        v = tl.load(v_ptr + t.to(tl.int64) * v_stride + offs, mask=m)
        tl.store(kc_ptr + slot * ROW + offs, k, mask=m)
        tl.store(vc_ptr + slot * ROW + offs, v, mask=m)

    @triton.jit
    def _decode_kernel(
        q_ptr, kc_ptr, vc_ptr, bt_ptr, ctx_ptr, out_ptr, part_o_ptr, part_lse_ptr,
        qk_scale, q_stride_t, q_stride_h, out_stride_t, out_stride_h, bt_stride,
        kv_stride_blk, kv_stride_tok,
        GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
        D_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
        NUM_SPLITS: tl.constexpr, NUM_HEADS: tl.constexpr, IEEE: tl.constexpr,
        WINDOW: tl.constexpr,
    ):  # fmt: skip
        b = tl.program_id(0)
        kvh = tl.program_id(1)
        s = tl.program_id(2)
        ctx = tl.load(ctx_ptr + b)
        if WINDOW > 0:  # noqa: SIM108 (a compile-time branch); keys [ctx - WINDOW, ctx)
            lo = tl.maximum(ctx - WINDOW, 0)
        else:
            lo = ctx * 0
        tiles_per_split = tl.cdiv(tl.cdiv(ctx - lo, BLOCK_N), NUM_SPLITS)
        start = lo + s * tiles_per_split * BLOCK_N
        end = tl.minimum(ctx, start + tiles_per_split * BLOCK_N)
        g = tl.arange(0, GROUP_PAD)
        d = tl.arange(0, D_PAD)
        heads = kvh * GROUP + g
        gm = g < GROUP
        dm = d < HEAD_DIM
        q = tl.load(
            q_ptr + b.to(tl.int64) * q_stride_t + heads[:, None] * q_stride_h + d[None, :],
            mask=gm[:, None] & dm[None, :],
            other=0.0,
        )
        m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
        l_i = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, D_PAD], tl.float32)
        bt_row = bt_ptr + b.to(tl.int64) * bt_stride
        # Loop bounds stay plain scalars (the interpreter cannot loop to a tl.minimum).
        for it in range(0, tiles_per_split):
            n = start + it * BLOCK_N + tl.arange(0, BLOCK_N)
            nm = n < end
            blk = tl.load(bt_row + n // BLOCK_SIZE, mask=nm, other=0).to(tl.int64)
            off = blk * kv_stride_blk + (n % BLOCK_SIZE) * kv_stride_tok + kvh * HEAD_DIM
            kv_mask = nm[:, None] & dm[None, :]
            k = tl.load(kc_ptr + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
            sc = tl.dot(q, tl.trans(k), input_precision="ieee") if IEEE else tl.dot(q, tl.trans(k))
            sc = tl.where(nm[None, :], sc * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(sc, 1))
            # A split past the context sees only masked keys: keep exp2 finite there.
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp2(sc - m_safe[:, None])
            alpha = tl.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(vc_ptr + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
            if IEEE:
                pv = tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                pv = tl.dot(p.to(v.dtype), v)
            acc = acc * alpha[:, None] + pv
            m_i = m_new
        om = gm[:, None] & dm[None, :]
        if NUM_SPLITS == 1:
            o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
            dst = out_ptr + b.to(tl.int64) * out_stride_t + heads[:, None] * out_stride_h
            tl.store(dst + d[None, :], o.to(out_ptr.dtype.element_ty), mask=om)
        else:
            # Partial results: [B, H, S, D] outputs and [B, H, S] log2-sum-exp2.
            row = (b.to(tl.int64) * NUM_HEADS + heads) * NUM_SPLITS + s
            o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
            tl.store(part_o_ptr + row[:, None] * HEAD_DIM + d[None, :], o, mask=om)
            lse = tl.where(l_i > 0, m_i + tl.log2(tl.where(l_i > 0, l_i, 1.0)), float("-inf"))
            tl.store(part_lse_ptr + row, lse, mask=gm)

    @triton.jit
    def _decode_reduce_kernel(
        part_o_ptr, part_lse_ptr, out_ptr, out_stride_t, out_stride_h,
        HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, NUM_SPLITS: tl.constexpr,
        S_PAD: tl.constexpr, NUM_HEADS: tl.constexpr,
    ):  # fmt: skip
        b = tl.program_id(0)
        h = tl.program_id(1)
        s = tl.arange(0, S_PAD)
        d = tl.arange(0, D_PAD)
        sm = s < NUM_SPLITS
        row = (b.to(tl.int64) * NUM_HEADS + h) * NUM_SPLITS + s
        lse = tl.load(part_lse_ptr + row, mask=sm, other=float("-inf"))
        m = tl.max(lse, 0)
        m = tl.where(m == float("-inf"), 0.0, m)
        w = tl.exp2(lse - m)
        total = tl.sum(w, 0)
        o = tl.load(
            part_o_ptr + row[:, None] * HEAD_DIM + d[None, :],
            mask=sm[:, None] & (d[None, :] < HEAD_DIM),
            other=0.0,
        )
        res = tl.sum(o * w[:, None], 0) / tl.where(total > 0, total, 1.0)
        dst = out_ptr + b.to(tl.int64) * out_stride_t + h * out_stride_h + d
        tl.store(dst, res.to(out_ptr.dtype.element_ty), mask=d < HEAD_DIM)

    @triton.jit
    def _prefill_kernel(
        q_ptr, kc_ptr, vc_ptr, out_ptr, q_start_ptr, q_len_ptr, ctx_ptr, bt_ptr,
        tile_chunk_ptr, tile_m0_ptr,
        qk_scale, q_stride_t, q_stride_h, out_stride_t, out_stride_h, bt_stride,
        kv_stride_blk, kv_stride_tok,
        GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
        BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        IEEE: tl.constexpr, WINDOW: tl.constexpr,
    ):  # fmt: skip
        tile = tl.program_id(0)
        h = tl.program_id(1)
        kvh = h // GROUP
        c = tl.load(tile_chunk_ptr + tile)
        m0 = tl.load(tile_m0_ptr + tile)
        q_row0 = tl.load(q_start_ptr + c)
        n_q = tl.load(q_len_ptr + c)
        ctx0 = tl.load(ctx_ptr + c)
        rows = m0 + tl.arange(0, BLOCK_M)
        rm = rows < n_q
        d = tl.arange(0, D_PAD)
        dm = d < HEAD_DIM
        t_rows = (q_row0 + rows).to(tl.int64)
        q = tl.load(
            q_ptr + t_rows[:, None] * q_stride_t + h * q_stride_h + d[None, :],
            mask=rm[:, None] & dm[None, :],
            other=0.0,
        )
        q_pos = ctx0 + rows  # absolute position of each query row
        kv_end = ctx0 + tl.minimum(m0 + BLOCK_M, n_q)  # causal limit of the whole tile
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)
        bt_row = bt_ptr + c.to(tl.int64) * bt_stride
        n_first = ctx0 * 0
        if WINDOW > 0:  # query p sees keys (p - WINDOW, p]: skip tiles before the first row's
            n_first = tl.maximum(ctx0 + m0 - WINDOW + 1, 0) // BLOCK_N * BLOCK_N
        # Loop to the tile's last row without the min (a scalar bound); masks use kv_end.
        for n0 in range(n_first, ctx0 + m0 + BLOCK_M, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            nm = n < kv_end
            blk = tl.load(bt_row + n // BLOCK_SIZE, mask=nm, other=0).to(tl.int64)
            off = blk * kv_stride_blk + (n % BLOCK_SIZE) * kv_stride_tok + kvh * HEAD_DIM
            kv_mask = nm[:, None] & dm[None, :]
            k = tl.load(kc_ptr + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
            sc = tl.dot(q, tl.trans(k), input_precision="ieee") if IEEE else tl.dot(q, tl.trans(k))
            keep = nm[None, :] & (n[None, :] <= q_pos[:, None])
            if WINDOW > 0:
                keep = keep & (n[None, :] > q_pos[:, None] - WINDOW)
            sc = tl.where(keep, sc * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(sc, 1))
            # Rows with nothing visible yet keep m = -inf; use 0 there so exp2 stays finite.
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp2(sc - m_safe[:, None])
            alpha = tl.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(vc_ptr + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
            if IEEE:
                pv = tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                pv = tl.dot(p.to(v.dtype), v)
            acc = acc * alpha[:, None] + pv
            m_i = m_new
        o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        dst = out_ptr + t_rows[:, None] * out_stride_t + h * out_stride_h + d[None, :]
        tl.store(dst, o.to(out_ptr.dtype.element_ty), mask=rm[:, None] & dm[None, :])


def write_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:  # fmt: skip
    """k/v: [T, KVH, D] (rows may be strided, heads packed) into [NB, BS, KVH, D] caches."""
    t, kvh, d = k.shape
    if t == 0:
        return
    if k.stride(2) != 1 or k.stride(1) != d:
        k = k.contiguous()
    if v.stride(2) != 1 or v.stride(1) != d:
        v = v.contiguous()
    row = kvh * d
    _write_kv_kernel[(t,)](
        k, v, k_cache, v_cache, slot_mapping, k.stride(0), v.stride(0),
        ROW=row, BLOCK=triton.next_power_of_2(row),
    )  # fmt: skip


def paged_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    num_splits: int = 1,
    out: torch.Tensor | None = None,
    window: int = 0,
) -> torch.Tensor:
    """q: [B, H, D] one token per sequence -> [B, H, D] attention over its cached tokens
    (the last `window` of them, when given: a sliding-window layer)."""
    b, h, d = q.shape
    _, block_size, kvh, _ = k_cache.shape
    group = h // kvh
    if out is None:
        out = torch.empty_like(q)
    if b == 0:
        return out
    d_pad = max(16, triton.next_power_of_2(d))
    ieee = q.dtype == torch.float32
    common = dict(
        GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=d, D_PAD=d_pad,
        BLOCK_SIZE=block_size, BLOCK_N=DECODE_BLOCK_N, NUM_SPLITS=num_splits,
        NUM_HEADS=h, IEEE=ieee, WINDOW=window,
    )  # fmt: skip
    if num_splits == 1:
        part_o = part_lse = out  # unused
    else:
        part_o = torch.empty(b, h, num_splits, d, dtype=torch.float32, device=q.device)
        part_lse = torch.empty(b, h, num_splits, dtype=torch.float32, device=q.device)
    _decode_kernel[(b, kvh, num_splits)](
        q, k_cache, v_cache, block_tables, context_lens, out, part_o, part_lse,
        scale * _LOG2E, q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        block_tables.stride(0), k_cache.stride(0), k_cache.stride(1),
        num_warps=4, **common,
    )  # fmt: skip
    if num_splits > 1:
        _decode_reduce_kernel[(b, h)](
            part_o, part_lse, out, out.stride(0), out.stride(1),
            HEAD_DIM=d, D_PAD=triton.next_power_of_2(d), NUM_SPLITS=num_splits,
            S_PAD=max(2, triton.next_power_of_2(num_splits)), NUM_HEADS=h, num_warps=2,
        )  # fmt: skip
    return out


def paged_prefill(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: PagedMetadata,
    scale: float,
    out: torch.Tensor,
    window: int = 0,
) -> torch.Tensor:
    """Attention for every prefill chunk of `meta` in one launch; rows are written in place
    into `out` ([T, H, D], the same row layout as `q`). `window`: query p sees only keys
    (p - window, p]."""
    if not meta.num_prefill_tiles:
        return out
    _, h, d = q.shape
    _, block_size, kvh, _ = k_cache.shape
    bt = meta.prefill_block_tables
    assert bt is not None
    _prefill_kernel[(meta.num_prefill_tiles, h)](
        q, k_cache, v_cache, out, meta.prefill_q_start, meta.prefill_q_len,
        meta.prefill_context_len, bt, meta.prefill_tile_chunk, meta.prefill_tile_m0,
        scale * _LOG2E, q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        bt.stride(0), k_cache.stride(0), k_cache.stride(1),
        GROUP=h // kvh, HEAD_DIM=d, D_PAD=max(16, triton.next_power_of_2(d)), BLOCK_SIZE=block_size,
        BLOCK_M=PREFILL_BLOCK_M, BLOCK_N=PREFILL_BLOCK_N, IEEE=q.dtype == torch.float32,
        WINDOW=window, num_warps=4,
    )  # fmt: skip
    return out


def paged_attention_forward(
    layer, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: PagedMetadata
) -> torch.Tensor:
    """`Attention.forward` for the Triton path: q [T, H, D], k/v [T, KVH, D] -> [T, H*D]."""
    write_kv(k, v, layer.k_cache, layer.v_cache, meta.slot_mapping)
    return paged_attention(layer, q, meta)


def paged_attention(layer, q: torch.Tensor, meta: PagedMetadata) -> torch.Tensor:
    """Attention of q [T, H, D] over `layer`'s cache, which already holds the step's keys
    and values (written by `write_kv` or the fused rotary kernel) -> [T, H*D]."""
    kc, vc = layer.k_cache, layer.v_cache
    window = layer.sliding_window or 0
    out = torch.empty_like(q)
    nd = meta.num_decodes
    if nd:
        assert meta.decode_block_tables is not None and meta.decode_context_lens is not None
        paged_decode(
            q[:nd], kc, vc, meta.decode_block_tables, meta.decode_context_lens,
            layer.scale, meta.decode_splits, out=out[:nd], window=window,
        )  # fmt: skip
    if meta.num_prefill_tiles:
        paged_prefill(q, kc, vc, meta, layer.scale, out, window)
    return out.view(q.shape[0], -1)


def prefill_tiles(q_lens: list[int]) -> tuple[list[int], list[int]]:
    """(chunk index, first row) of each BLOCK_M-row tile of the prefill chunks."""
    chunk: list[int] = []
    m0: list[int] = []
    for c, n in enumerate(q_lens):
        for start in range(0, n, PREFILL_BLOCK_M):
            chunk.append(c)
            m0.append(start)
    return chunk, m0


# ---- torch references (tests) ------------------------------------------------------------


def _gather(cache: torch.Tensor, table: list[int] | torch.Tensor, n: int) -> torch.Tensor:
    """The first n cached tokens of one sequence: [n, KVH, D]."""
    bs = cache.shape[1]
    blocks = torch.as_tensor(table, dtype=torch.long, device=cache.device)[: -(-n // bs)]
    return cache[blocks].flatten(0, 1)[:n]


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal_from: int,
    window: int = 0,
) -> torch.Tensor:  # fmt: skip
    """q [n, H, D] at positions causal_from.. against k/v [m, KVH, D], float64; with a
    window, query p sees keys (p - window, p]."""
    group = q.shape[1] // k.shape[1]
    k = k.double().repeat_interleave(group, 1)
    v = v.double().repeat_interleave(group, 1)
    s = torch.einsum("nhd,mhd->hnm", q.double(), k) * scale
    q_pos = torch.arange(q.shape[0], device=q.device)[:, None] + causal_from
    k_pos = torch.arange(k.shape[0], device=q.device)[None, :]
    hidden = k_pos > q_pos
    if window:
        hidden |= k_pos <= q_pos - window
    s = s.masked_fill(hidden, float("-inf"))
    return torch.einsum("hnm,mhd->nhd", s.softmax(-1), v)


def reference_decode(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float, window: int = 0,
) -> torch.Tensor:  # fmt: skip
    """float64 decode attention, one sequence at a time (0-length rows give zeros)."""
    out = torch.zeros(q.shape, dtype=torch.float64, device=q.device)
    for i, n in enumerate(context_lens.tolist()):
        if n:
            k = _gather(k_cache, block_tables[i], n)
            v = _gather(v_cache, block_tables[i], n)
            out[i] = _attend(q[i : i + 1], k, v, scale, n - 1, window)[0]
    return out


def reference_prefill(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    chunks: list[tuple[int, int, int, list[int]]], scale: float, window: int = 0,
) -> torch.Tensor:  # fmt: skip
    """float64 prefill: chunks are (first row, rows, context_len, block table)."""
    out = torch.zeros(q.shape, dtype=torch.float64, device=q.device)
    for start, n, ctx, table in chunks:
        k = _gather(k_cache, table, ctx + n)
        v = _gather(v_cache, table, ctx + n)
        out[start : start + n] = _attend(q[start : start + n], k, v, scale, ctx, window)
    return out
