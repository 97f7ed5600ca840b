"""Scheduler: token budget, chunked prefill, FCFS and priorities, preemption, stops."""

from __future__ import annotations

from tritium.engine.block_manager import BlockManager
from tritium.engine.sampling_params import SamplingParams
from tritium.engine.scheduler import Scheduler
from tritium.engine.sequence import Sequence, SequenceStatus


def make(num_blocks=16, budget=8, block_size=4, max_num_seqs=8):
    bm = BlockManager(num_blocks, block_size)
    return Scheduler(bm, max_num_seqs, budget, max_model_len=1000), bm


def add(s: Scheduler, rid: str, n: int, arrival: int, priority: int = 0, **params) -> Sequence:
    seq = Sequence(
        rid,
        list(range(arrival * 100, arrival * 100 + n)),
        SamplingParams(**params),
        arrival,
        priority,
    )
    s.add(seq)
    return seq


def test_long_prompt_is_chunked_under_the_budget():
    s, _ = make(budget=8)
    a = add(s, "a", 20, 1)
    out = s.schedule()
    assert out.num_new_tokens == [8]
    assert s.update(out, []) == []  # no token sampled mid-prompt
    assert a.num_computed_tokens == 8
    s.update(s.schedule(), [])
    out = s.schedule()
    assert out.num_new_tokens == [4]
    [u] = s.update(out, [7])
    assert u.new_token_id == 7 and a.output_token_ids == [7]


def test_decodes_first_then_new_prompts_fcfs_with_priority():
    s, _ = make(budget=6)
    add(s, "a", 3, 1)
    out = s.schedule()
    s.update(out, [1])
    add(s, "b", 10, 2)
    add(s, "c", 2, 3, priority=-1)  # more urgent than b
    out = s.schedule()
    assert [q.request_id for q in out.seqs] == ["a", "c", "b"]
    assert out.num_new_tokens == [1, 2, 3]


def test_preemption_frees_the_newest_and_requeues_it():
    s, _bm = make(num_blocks=4, budget=64)
    add(s, "a", 7, 1)
    b = add(s, "b", 7, 2)
    s.update(s.schedule(), [1, 1])  # both prompts: 2 blocks each, pool full
    out = s.schedule()  # a needs a 3rd block at token 9 -> not yet (8 tokens fit)
    s.update(out, [2, 2])
    out = s.schedule()
    assert out.num_preempted == 1 and b.status == SequenceStatus.PREEMPTED
    assert b.num_computed_tokens == 0 and b.block_table == [] and s.waiting == [b]
    assert [q.request_id for q in out.seqs] == ["a"]


def test_stop_token_and_max_tokens_finish_and_free():
    s, bm = make()
    a = add(s, "a", 3, 1, max_tokens=5, stop_token_ids=[42])
    b = add(s, "b", 3, 2, max_tokens=2)
    s.update(s.schedule(), [42, 5])
    assert a.finish_reason == "stop" and a.stop_reason == 42
    s.update(s.schedule(), [6])
    assert b.finish_reason == "length"
    assert not s.has_unfinished() and bm.num_free_blocks == bm.num_blocks


def test_abort_frees_blocks():
    s, bm = make()
    add(s, "a", 9, 1)
    s.schedule()
    assert s.abort("a").finish_reason == "abort"
    assert bm.num_free_blocks == bm.num_blocks and s.abort("a") is None
