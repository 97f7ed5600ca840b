"""DecodeKV: the CPU decode batch's context, kept contiguous from one step to the next.

Paged attention without a paged kernel means gathering each sequence's blocks into a
dense tensor before SDPA. Done per layer per step, that copy moves as many bytes as the
weights at 20 streams. But while the same sequences keep decoding, step t+1's context is
step t's plus one token, so the runner gathers once into a buffer with some headroom and
the attention layers append each step's key and value to it (as well as to the paged
pool, which stays the source of truth for prefix caching and preemption). The buffer is
rebuilt when the batch changes or outgrows it, and not kept at all past a memory budget.
"""

from __future__ import annotations

import torch

from tritium.engine.sequence import Sequence

HEADROOM_BLOCKS = 8  # tokens of growth (in blocks) before a rebuild
DEFAULT_BUDGET_BYTES = 1 << 30


class DecodeKV:
    """Owns the dense copy; the model runner asks for it once per step."""

    def __init__(self, kv_cache: torch.Tensor, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        # kv_cache: the paged pool, [2, layers, num_blocks, block_size, kv_heads, head_dim]
        self.pool = kv_cache
        self.block_size = kv_cache.shape[3]
        self.token_bytes = kv_cache[:, :, 0, 0].numel() * kv_cache.element_size()
        self.budget_bytes = budget_bytes
        self.buf: torch.Tensor | None = None  # [2, layers, batch, capacity, kv_heads, head_dim]
        self.seqs: list[Sequence] = []
        self.lens: list[int] = []
        self.num_rebuilds = 0
        # Per layer, views of `buf` made once per rebuild rather than once per layer per
        # step (a one-stream step is bound by op dispatch): flat keys and values
        # [B * capacity, KVH, D] for appending, and [B, KVH, capacity, D] for SDPA.
        self.layer_views: list[tuple[torch.Tensor, ...]] = []

    def invalidate(self) -> None:
        self.buf, self.seqs, self.lens, self.layer_views = None, [], [], []

    def prepare(
        self, seqs: list[Sequence], ctx_lens: list[int], tables: list[list[int]]
    ) -> tuple[list[tuple[torch.Tensor, ...]], torch.Tensor] | None:
        """The per-layer views of the buffer (`layer_views`) and the flat row
        (b * capacity + position) of each sequence's new token, for decodes of `seqs` whose
        context (new token included) is `ctx_lens`. None when the buffer would exceed the
        budget (gather per layer instead)."""
        buf = self.buf
        same = (
            buf is not None
            and len(seqs) == len(self.seqs)
            and max(ctx_lens) <= buf.shape[3]
            and all(a is b for a, b in zip(seqs, self.seqs, strict=True))
            and all(n == m + 1 for n, m in zip(ctx_lens, self.lens, strict=True))
        )
        if not same:
            buf = self._rebuild(ctx_lens, tables)
            if buf is None:
                self.invalidate()
                return None
        self.buf, self.seqs, self.lens = buf, list(seqs), list(ctx_lens)
        assert buf is not None
        cap = buf.shape[3]
        rows = torch.tensor([b * cap + n - 1 for b, n in enumerate(ctx_lens)], dtype=torch.long)
        return self.layer_views, rows

    def _rebuild(self, ctx_lens: list[int], tables: list[list[int]]) -> torch.Tensor | None:
        bs = self.block_size
        cap_blocks = -(-max(ctx_lens) // bs) + HEADROOM_BLOCKS
        b = len(ctx_lens)
        if b * cap_blocks * bs * self.token_bytes > self.budget_bytes:
            return None
        self.buf = None  # free the old one before allocating the new
        two, layers, num_blocks = self.pool.shape[:3]
        buf = self.pool.new_empty((two, layers, b, cap_blocks * bs, *self.pool.shape[4:]))
        # Each row gathers its blocks padded to the capacity (block 0 past the end: garbage,
        # never attended to), so one index_select per layer writes the buffer directly.
        idx = torch.tensor(
            [t[i] if i < len(t) else 0 for t in tables for i in range(cap_blocks)],
            dtype=torch.long,
        )
        src = self.pool.view(two * layers, num_blocks, -1)
        dst = buf.view(two * layers, b * cap_blocks, -1)
        for j in range(two * layers):
            torch.index_select(src[j], 0, idx, out=dst[j])
        self.num_rebuilds += 1
        heads = self.pool.shape[4:]
        self.layer_views = [
            (
                buf[0, i].view(-1, *heads),
                buf[1, i].view(-1, *heads),
                buf[0, i].transpose(1, 2),
                buf[1, i].transpose(1, 2),
            )
            for i in range(layers)
        ]
        return buf
