"""Scheduler: which sequences run this step, and how many tokens each computes.

vLLM V1's idea: no prefill or decode phases. Each sequence has `num_computed_tokens`
catching up with its `num_tokens` under one per-step token budget, so long prompts are
prefilled in chunks next to running decodes, and a prefix-cache hit simply starts a
sequence with tokens already computed. When blocks run out, the lowest-priority running
sequence is preempted: its blocks are freed and it is recomputed later.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from tritium.engine.block_manager import BlockManager
from tritium.engine.sequence import Sequence, SequenceStatus


@dataclass
class SchedulerOutput:
    """One step's batch: sequences with the number of tokens each computes."""

    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    num_preempted: int = 0

    @property
    def total_tokens(self) -> int:
        return sum(self.num_new_tokens)


@dataclass
class SeqUpdate:
    """What a step did to one sequence that produced a token."""

    seq: Sequence
    new_token_id: int
    finished: bool


class Scheduler:
    """Owns the waiting and running queues."""

    def __init__(
        self,
        block_manager: BlockManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
    ) -> None:
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.waiting: list[Sequence] = []  # sorted by (priority, arrival)
        self.running: list[Sequence] = []
        self.requests: dict[str, Sequence] = {}
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        if seq.request_id in self.requests:
            raise ValueError(f"request id {seq.request_id!r} is already in the engine")
        self.requests[seq.request_id] = seq
        self._enqueue(seq)

    def _enqueue(self, seq: Sequence) -> None:
        bisect.insort(self.waiting, seq, key=lambda s: s.sort_key)

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        bm = self.block_manager
        preempted = False
        # Highest priority (then oldest) first, so the victim is always the last one, not
        # yet scheduled in this step.
        self.running.sort(key=lambda s: s.sort_key)
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            while not bm.allocate_slots(seq, n):
                victim = self.running[-1]
                self._preempt(victim)
                out.num_preempted += 1
                preempted = True
                if victim is seq:
                    break
            if seq.status != SequenceStatus.RUNNING:
                continue  # preempted itself; `running` shrank, so i stays
            out.seqs.append(seq)
            out.num_new_tokens.append(n)
            budget -= n
            i += 1
        # Admit waiting sequences only when nothing was preempted this step: a preemption
        # means the pool is short, and admitting would just preempt again.
        while (
            self.waiting and budget > 0 and not preempted and len(self.running) < self.max_num_seqs
        ):
            seq = self.waiting[0]
            computed = bm.get_computed_blocks(seq)
            num_cached = len(computed) * bm.block_size
            n = min(seq.num_tokens - num_cached, budget)
            if not bm.allocate_slots(seq, n, computed):
                break
            self.waiting.pop(0)
            seq.num_computed_tokens = num_cached
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.seqs.append(seq)
            out.num_new_tokens.append(n)
            budget -= n
        return out

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.PREEMPTED
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self._enqueue(seq)

    def update(self, out: SchedulerOutput, sampled: list[int]) -> list[SeqUpdate]:
        """Advance the computed counters; sequences that caught up with their tokens got one
        sampled token each (in batch order, `sampled`). Returns those, with stop checks done."""
        updates: list[SeqUpdate] = []
        k = 0
        for seq, n in zip(out.seqs, out.num_new_tokens, strict=True):
            seq.num_computed_tokens += n
            if seq.num_computed_tokens < seq.num_tokens:
                continue  # a prompt chunk: nothing sampled yet
            token = sampled[k]
            k += 1
            if seq.status != SequenceStatus.RUNNING:
                continue  # aborted while the step ran
            seq.token_ids.append(token)
            finished = self._check_stop(seq, token)
            if finished:
                self._finish(seq)
            updates.append(SeqUpdate(seq, token, finished))
        return updates

    def _check_stop(self, seq: Sequence, token: int) -> bool:
        p = seq.params
        if seq.num_output_tokens >= p.min_tokens:
            if token in p.stop_token_ids:  # type: ignore[operator]
                seq.finish_reason, seq.stop_reason = "stop", token
                return True
            if not p.ignore_eos and token in p.all_stop_token_ids:
                seq.finish_reason = "stop"
                return True
        if (p.max_tokens is not None and seq.num_output_tokens >= p.max_tokens) or (
            seq.num_tokens >= self.max_model_len
        ):
            seq.finish_reason = "length"
            return True
        return False

    def _finish(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.FINISHED
        self.running.remove(seq)
        self.block_manager.free(seq)
        del self.requests[seq.request_id]

    def abort(self, request_id: str) -> Sequence | None:
        """Drop a request wherever it is and free its blocks; None if unknown or done."""
        seq = self.requests.pop(request_id, None)
        if seq is None:
            return None
        if seq in self.running:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = "abort"
        return seq
