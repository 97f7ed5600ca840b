"""BlockManager: the paged KV cache's blocks, their reference counts and the prefix cache.

Each full block is known by a chained hash of its tokens (the hash of the previous block
goes into the next), so a hash names a whole prefix, not just 16 tokens. Freed blocks
keep their hash and stay findable until they are reused, least recently freed first.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Sequence as Seq

import xxhash

from tritium.engine.sequence import Sequence


def hash_block(parent: int, tokens: Seq[int]) -> int:
    """Chained hash of one full block: depends on every token before it too."""
    return xxhash.xxh3_64_intdigest(parent.to_bytes(8, "little") + array("q", tokens).tobytes())


class BlockManager:
    """Owns the pool of KV blocks. The scheduler asks; it never edits blocks itself."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_cnt = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks
        # Free blocks in eviction order (front first); cached ones keep their hash until reused.
        self.free_queue: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.hash_to_block: dict[int, int] = {}
        self.prefix_cache_queries = 0  # tokens looked up
        self.prefix_cache_hits = 0  # tokens found

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_queue)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by live sequences (cached free blocks count as free)."""
        return 1.0 - len(self.free_queue) / self.num_blocks

    def _update_hashes(self, seq: Sequence) -> None:
        bs = self.block_size
        hashes = seq.block_hashes
        while len(hashes) < seq.num_tokens // bs:
            i = len(hashes)
            hashes.append(
                hash_block(hashes[-1] if hashes else 0, seq.token_ids[i * bs : (i + 1) * bs])
            )

    def get_computed_blocks(self, seq: Sequence) -> list[int]:
        """The longest cached prefix of a new sequence's full blocks, leaving at least one
        token to compute (the model must run on the last token to sample the next). A
        sequence that wants prompt logprobs reuses none of the prompt positions it has no
        logprobs for yet: those must run through the model."""
        if not self.enable_prefix_caching:
            return []
        self._update_hashes(seq)
        usable = seq.num_tokens - 1
        if seq.params.prompt_logprobs is not None:
            usable = min(usable, seq.num_prompt_logprobs)
        blocks: list[int] = []
        for h in seq.block_hashes[: usable // self.block_size]:
            b = self.hash_to_block.get(h)
            if b is None:
                break
            blocks.append(b)
        return blocks

    def allocate_slots(
        self, seq: Sequence, num_new_tokens: int, computed_blocks: list[int] | None = None
    ) -> bool:
        """Make room for `num_new_tokens` more tokens after the computed ones (after
        `computed_blocks` when given, for a sequence being admitted). False, with nothing
        changed, when the pool is short."""
        computed = computed_blocks or []
        bs = self.block_size
        num_tokens = seq.num_computed_tokens + len(computed) * bs + num_new_tokens
        num_new_blocks = -(-num_tokens // bs) - len(seq.block_table) - len(computed)
        num_revived = sum(1 for b in computed if self.ref_cnt[b] == 0)
        if num_new_blocks + num_revived > len(self.free_queue):
            return False
        if computed_blocks is not None:
            self.prefix_cache_queries += seq.num_tokens
            self.prefix_cache_hits += len(computed) * bs
        for b in computed:
            if self.ref_cnt[b] == 0:
                del self.free_queue[b]
            self.ref_cnt[b] += 1
            seq.block_table.append(b)
        seq.num_cached_blocks += len(computed)
        for _ in range(max(num_new_blocks, 0)):
            seq.block_table.append(self._take_free_block())
        if self.enable_prefix_caching:
            self._cache_full_blocks(seq, num_tokens)
        return True

    def _take_free_block(self) -> int:
        b, _ = self.free_queue.popitem(last=False)
        h = self.block_hash[b]
        if h is not None:  # evict its prefix-cache entry
            if self.hash_to_block.get(h) == b:
                del self.hash_to_block[h]
            self.block_hash[b] = None
        self.ref_cnt[b] = 1
        return b

    def _cache_full_blocks(self, seq: Sequence, num_tokens: int) -> None:
        # Registered at allocation, before the step computes them: a later sequence in the
        # same step may hit them, which is safe because every layer writes the whole
        # batch's KV before any attention reads it.
        num_full = num_tokens // self.block_size
        if num_full <= seq.num_cached_blocks:
            return
        self._update_hashes(seq)
        for i in range(seq.num_cached_blocks, num_full):
            h, b = seq.block_hashes[i], seq.block_table[i]
            if h not in self.hash_to_block:
                self.hash_to_block[h] = b
                self.block_hash[b] = h
        seq.num_cached_blocks = num_full

    def free(self, seq: Sequence) -> None:
        """Release a sequence's blocks. Tail blocks are freed first so they are evicted first;
        blocks without a hash go to the front: reusing them loses no cached prefix."""
        for b in reversed(seq.block_table):
            self.ref_cnt[b] -= 1
            if self.ref_cnt[b] == 0:
                self.free_queue[b] = None
                if self.block_hash[b] is None:
                    self.free_queue.move_to_end(b, last=False)
        seq.block_table = []
        seq.num_cached_blocks = 0

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix (e.g. after weights change)."""
        for h, b in self.hash_to_block.items():
            if self.block_hash[b] == h:
                self.block_hash[b] = None
        self.hash_to_block.clear()
