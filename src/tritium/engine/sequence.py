"""Sequence: one request inside the engine core (a prompt and the tokens generated so far)."""

from __future__ import annotations

import enum

import torch

from tritium.engine.messages import TokenLogprobs
from tritium.engine.sampling_params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = enum.auto()
    RUNNING = enum.auto()
    PREEMPTED = enum.auto()
    FINISHED = enum.auto()


class Sequence:
    """A request as the scheduler sees it. `num_computed_tokens` catches up with `num_tokens`:
    a prompt is computed in chunks under the step's token budget, then one token per step."""

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        arrival: int,
        priority: int = 0,
    ) -> None:
        self.request_id = request_id
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.priority = priority
        self.arrival = arrival  # monotonically increasing admission number, for FCFS order
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0
        self.block_table: list[int] = []  # owned by the BlockManager
        self.block_hashes: list[
            int
        ] = []  # chained hashes of full blocks, owned by the BlockManager
        self.num_cached_blocks = 0  # how many of block_table are registered in the prefix cache
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None
        self.num_preemptions = 0
        # prompt_logprobs: how many prompt positions have theirs (position p: the logprob
        # of prompt token p + 1), and those not yet sent, as the sampler's tuples.
        self.num_prompt_logprobs = 0
        self.pending_prompt_logprobs: list[TokenLogprobs] = []
        # Per-request RNG, so a seeded request samples the same tokens in any batch.
        self.generator: torch.Generator | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def sort_key(self) -> tuple[int, int]:
        """Lower is served first: priority, then arrival (first come first served)."""
        return (self.priority, self.arrival)

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    def __repr__(self) -> str:
        return (
            f"Sequence({self.request_id!r}, tokens={self.num_tokens}, "
            f"computed={self.num_computed_tokens}, {self.status.name})"
        )
