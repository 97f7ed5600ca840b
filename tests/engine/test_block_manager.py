"""BlockManager: allocation, reference counts, prefix cache hits and LRU eviction."""

from __future__ import annotations

from tritium.engine.block_manager import BlockManager
from tritium.engine.sampling_params import SamplingParams
from tritium.engine.sequence import Sequence


def seq(tokens: list[int], rid: str = "r") -> Sequence:
    return Sequence(rid, tokens, SamplingParams(), arrival=0)


def test_allocate_and_free_return_every_block():
    bm = BlockManager(num_blocks=8, block_size=4)
    s = seq(list(range(10)))
    assert bm.allocate_slots(s, 10, bm.get_computed_blocks(s))
    assert len(s.block_table) == 3 and bm.num_free_blocks == 5
    bm.free(s)
    assert bm.num_free_blocks == 8 and s.block_table == []


def test_allocation_fails_without_side_effects_when_short():
    bm = BlockManager(num_blocks=2, block_size=4)
    s = seq(list(range(12)))
    assert not bm.allocate_slots(s, 12, [])
    assert bm.num_free_blocks == 2 and s.block_table == []


def test_prefix_hit_shares_blocks_and_counts_references():
    bm = BlockManager(num_blocks=8, block_size=4)
    a = seq(list(range(9)), "a")
    assert bm.allocate_slots(a, 9, bm.get_computed_blocks(a))
    b = seq([*list(range(9)), 99], "b")
    hit = bm.get_computed_blocks(b)
    assert hit == a.block_table[:2]  # two full blocks of a's prompt
    assert bm.allocate_slots(b, 10 - 8, hit)
    assert bm.ref_cnt[hit[0]] == 2 and bm.prefix_cache_hits == 8
    bm.free(a)
    bm.free(b)
    assert bm.num_free_blocks == 8


def test_hit_leaves_the_last_token_to_compute():
    bm = BlockManager(num_blocks=8, block_size=4)
    a = seq(list(range(8)), "a")
    bm.allocate_slots(a, 8, [])
    b = seq(list(range(8)), "b")
    assert len(bm.get_computed_blocks(b)) == 1  # not 2: the model must see token 8


def test_chained_hash_depends_on_the_prefix():
    bm = BlockManager(num_blocks=8, block_size=4)
    a = seq([1, 2, 3, 4, 5, 6, 7, 8, 9], "a")
    bm.allocate_slots(a, 9, [])
    b = seq([0, 2, 3, 4, 5, 6, 7, 8, 9], "b")  # same second block, different first
    assert bm.get_computed_blocks(b) == []


def test_freed_cached_blocks_stay_findable_until_reused():
    bm = BlockManager(num_blocks=4, block_size=4)
    a = seq(list(range(9)), "a")
    bm.allocate_slots(a, 9, [])
    bm.free(a)
    again = seq(list(range(9)), "a2")
    assert len(bm.get_computed_blocks(again)) == 2
    filler = seq(list(range(100, 116)), "f")  # needs all 4 blocks: evicts the cache
    assert bm.allocate_slots(filler, 16, [])
    assert bm.get_computed_blocks(again) == []
    bm.free(filler)
    assert bm.num_free_blocks == 4
