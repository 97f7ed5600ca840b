"""Sampler on hand-made logits: greedy, top-k/top-p/min-p, penalties, seeds, min_tokens."""

from __future__ import annotations

import pytest
import torch

from tritium.engine.layers.sampler import Sampler, SamplingMetadata
from tritium.engine.sampling_params import SamplingParams
from tritium.engine.sequence import Sequence

V = 8


def seqs_for(*params: SamplingParams, outputs: list[int] | None = None) -> list[Sequence]:
    out = []
    for i, p in enumerate(params):
        p.all_stop_token_ids = [0]
        s = Sequence(str(i), [1, 2], p, i)
        s.token_ids += outputs or []
        if p.seed is not None:
            s.generator = torch.Generator().manual_seed(p.seed)
        out.append(s)
    return out


def sample(seqs, logits):
    return Sampler()(logits.clone(), SamplingMetadata.build(seqs, V, torch.device("cpu")))


def test_greedy_and_top_k_one_pick_the_max():
    logits = torch.tensor([[0.0, 1, 5, 2, 0, 0, 0, 0]] * 2)
    seqs = seqs_for(SamplingParams(temperature=0), SamplingParams(temperature=1.0, top_k=1))
    assert sample(seqs, logits).token_ids.tolist() == [2, 2]


def test_top_p_and_min_p_keep_only_likely_tokens():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05, 1e-9, 1e-9, 1e-9, 1e-9]] * 64))
    seqs = seqs_for(
        *[SamplingParams(temperature=1.0, top_p=0.7, seed=i) for i in range(32)],
        *[SamplingParams(temperature=1.0, min_p=0.4, seed=i) for i in range(32)],
    )
    got = sample(seqs, logits).token_ids.tolist()
    assert set(got) <= {0, 1}


def test_seeded_rows_are_reproducible_whatever_the_batch():
    logits = torch.zeros(3, V)
    a = sample(seqs_for(SamplingParams(seed=5)), logits[:1]).token_ids.tolist()
    b = sample(
        seqs_for(SamplingParams(), SamplingParams(seed=5), SamplingParams()), logits
    ).token_ids.tolist()
    assert [b[1]] == a


def test_penalties_change_the_choice():
    logits = torch.tensor([[0.0, 0, 3.0, 2.9, 0, 0, 0, 0]])
    base = SamplingParams(temperature=0)
    assert sample(seqs_for(base, outputs=[2]), logits).token_ids.tolist() == [2]
    for p in (
        SamplingParams(temperature=0, frequency_penalty=1.0),
        SamplingParams(temperature=0, presence_penalty=1.0),
        SamplingParams(temperature=0, repetition_penalty=1.5),
    ):
        assert sample(seqs_for(p, outputs=[2]), logits).token_ids.tolist() == [3]


def test_min_tokens_bans_eos_and_stop_ids():
    logits = torch.tensor([[9.0, 8.0, 1, 0, 0, 0, 0, 0]])
    p = SamplingParams(temperature=0, min_tokens=2, stop_token_ids=[1])
    assert sample(seqs_for(p), logits).token_ids.tolist() == [2]


def test_logprobs_top_k_and_rank():
    logits = torch.tensor([[0.0, 1, 5, 2, 0, 0, 0, 0]])
    out = sample(seqs_for(SamplingParams(temperature=0, logprobs=2)), logits)
    assert out.logprob_token_ids.tolist() == [[2, 2, 3]]
    assert out.ranks.tolist() == [1]
    assert out.logprobs[0, 0].item() == pytest.approx(torch.log_softmax(logits, -1)[0, 2].item())
