"""Sampler: per-request sampling inside one batch.

Every row of the batch has its own settings (temperature, top-k/p, min-p, penalties,
seed). Batch-wide work is skipped when no row needs it, so an all-greedy batch costs one
argmax. Seeded rows draw their noise from their own torch.Generator, so a seeded request
samples the same tokens whatever else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tritium.engine.sequence import Sequence


@dataclass
class SamplingMetadata:
    """Per-row sampling settings as tensors, built once per step."""

    all_greedy: bool
    temperature: torch.Tensor | None = None  # [B]; greedy rows hold 1.0 (argmax used)
    greedy_rows: torch.Tensor | None = None  # [B] bool
    top_k: torch.Tensor | None = None  # [B] long, 0 = off; None when no row uses it
    top_p: torch.Tensor | None = None  # [B]; None when no row uses it
    min_p: torch.Tensor | None = None  # [B]; None when no row uses it
    generators: list[tuple[int, torch.Generator]] | None = None  # (row, generator)
    # Penalties: None when no row uses them.
    output_counts: torch.Tensor | None = None  # [B, V] occurrences in the output
    prompt_mask: torch.Tensor | None = None  # [B, V] token occurs in the prompt
    presence: torch.Tensor | None = None
    frequency: torch.Tensor | None = None
    repetition: torch.Tensor | None = None
    # min_tokens: rows whose stop tokens are still banned, as (rows, token ids) index pairs
    banned: tuple[torch.Tensor, torch.Tensor] | None = None
    max_logprobs: int = -1  # -1: no row wants logprobs

    @classmethod
    def build(cls, seqs: list[Sequence], vocab_size: int, device: torch.device) -> SamplingMetadata:
        params = [s.params for s in seqs]
        max_logprobs = max((p.logprobs for p in params if p.logprobs is not None), default=-1)
        banned_rows: list[int] = []
        banned_ids: list[int] = []
        for i, s in enumerate(seqs):
            p = s.params
            if s.num_output_tokens < p.min_tokens:
                ids = set(p.stop_token_ids or ()) | (
                    set() if p.ignore_eos else set(p.all_stop_token_ids)
                )
                banned_rows += [i] * len(ids)
                banned_ids += list(ids)
        banned = None
        if banned_rows:
            banned = (
                torch.tensor(banned_rows, device=device),
                torch.tensor(banned_ids, device=device),
            )
        penalized = any(
            p.presence_penalty or p.frequency_penalty or p.repetition_penalty != 1.0 for p in params
        )
        if all(p.greedy for p in params) and not penalized:
            return cls(all_greedy=True, banned=banned, max_logprobs=max_logprobs)

        def col(values: list[float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        md = cls(all_greedy=False, banned=banned, max_logprobs=max_logprobs)
        md.greedy_rows = col([p.greedy for p in params], torch.bool)
        md.temperature = col([1.0 if p.greedy else p.temperature for p in params])
        if any(p.top_k for p in params):
            md.top_k = col([p.top_k or vocab_size for p in params], torch.long)
        if any(p.top_p < 1.0 for p in params):
            md.top_p = col([p.top_p for p in params])
        if any(p.min_p > 0.0 for p in params):
            md.min_p = col([p.min_p for p in params])
        md.generators = [(i, s.generator) for i, s in enumerate(seqs) if s.generator is not None]
        if penalized:
            b = len(seqs)
            counts = torch.zeros(b, vocab_size, device=device)
            prompt = torch.zeros(b, vocab_size, dtype=torch.bool, device=device)
            for i, s in enumerate(seqs):
                out = s.output_token_ids
                if out:
                    counts[i].index_add_(
                        0, torch.tensor(out, device=device), torch.ones(len(out), device=device)
                    )
                prompt[i, torch.tensor(s.token_ids[: s.num_prompt_tokens], device=device)] = True
            md.output_counts, md.prompt_mask = counts, prompt
            md.presence = col([p.presence_penalty for p in params])
            md.frequency = col([p.frequency_penalty for p in params])
            md.repetition = col([p.repetition_penalty for p in params])
        return md


@dataclass
class SamplerOutput:
    token_ids: torch.Tensor  # [B]
    logprobs: torch.Tensor | None = None  # [B, 1 + k]: sampled token's, then the top k
    logprob_token_ids: torch.Tensor | None = None  # [B, 1 + k]
    ranks: torch.Tensor | None = None  # [B] rank of the sampled token (1 = most likely)


def gather_logprobs(
    logprobs: torch.Tensor, tokens: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For rows of log-probabilities [B, V] and a token per row [B]: (logprobs [B, 1 + k],
    token ids [B, 1 + k], ranks [B]): the token's, then the row's top k, and the token's
    rank (1 = most likely)."""
    chosen = logprobs.gather(1, tokens.unsqueeze(1))
    ranks = (logprobs > chosen).sum(dim=1) + 1
    if k <= 0:
        return chosen, tokens.unsqueeze(1), ranks
    top_lp, top_ids = logprobs.topk(k, dim=-1)
    return (
        torch.cat([chosen, top_lp], dim=1),
        torch.cat([tokens.unsqueeze(1), top_ids], dim=1),
        ranks,
    )


class Sampler:
    """Turns the last-token logits of each row into one token id."""

    def __call__(self, logits: torch.Tensor, md: SamplingMetadata) -> SamplerOutput:
        logits = logits.float()
        raw_logprobs = torch.log_softmax(logits, dim=-1) if md.max_logprobs >= 0 else None
        if md.banned is not None:
            logits[md.banned] = float("-inf")
        tokens = argmax(logits) if md.all_greedy else self._sample(logits, md)
        out = SamplerOutput(tokens)
        if raw_logprobs is not None:
            out.logprobs, out.logprob_token_ids, out.ranks = gather_logprobs(
                raw_logprobs, tokens, md.max_logprobs
            )
        return out

    def _sample(self, logits: torch.Tensor, md: SamplingMetadata) -> torch.Tensor:
        if md.output_counts is not None:
            logits = apply_penalties(logits, md)
        greedy_tokens = argmax(logits)
        logits = logits / md.temperature.unsqueeze(1)  # type: ignore[union-attr]
        if md.top_k is not None or md.top_p is not None:
            logits = apply_top_k_top_p(logits, md.top_k, md.top_p)
        probs = torch.softmax(logits, dim=-1)
        if md.min_p is not None:
            threshold = probs.amax(dim=-1, keepdim=True) * md.min_p.unsqueeze(1)
            probs = probs.masked_fill(probs < threshold, 0.0)
        # Exponential-race sampling: argmax(p / E) with E ~ Exp(1) draws from p, and lets
        # each seeded row take its noise from its own generator.
        noise = torch.empty_like(probs).exponential_()
        for row, gen in md.generators or ():
            noise[row].exponential_(generator=gen)
        sampled = argmax(probs / noise)
        return torch.where(md.greedy_rows, greedy_tokens, sampled)  # type: ignore[arg-type]


def argmax(x: torch.Tensor) -> torch.Tensor:
    """The first index of each row's maximum, as ``x.argmax(dim=-1)``: on CPU, torch's
    max reduction finds it about 3x faster than its argmax (20 x 49k logits: 0.23 against
    0.67 ms a step)."""
    return x.max(dim=-1).indices


def apply_penalties(logits: torch.Tensor, md: SamplingMetadata) -> torch.Tensor:
    """Repetition (prompt and output, as in vLLM/HF), frequency and presence (output)."""
    counts, rep = md.output_counts, md.repetition
    assert counts is not None and rep is not None and md.prompt_mask is not None
    seen = md.prompt_mask | (counts > 0)
    rep = rep.unsqueeze(1).expand_as(logits)
    scaled = torch.where(logits > 0, logits / rep, logits * rep)
    logits = torch.where(seen, scaled, logits)
    logits = logits - md.frequency.unsqueeze(1) * counts  # type: ignore[union-attr]
    return logits - md.presence.unsqueeze(1) * (counts > 0).float()  # type: ignore[union-attr]


def apply_top_k_top_p(
    logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None
) -> torch.Tensor:
    """Mask everything outside each row's top-k and its top-p nucleus."""
    sorted_logits, order = logits.sort(dim=-1, descending=False)
    if top_k is not None:
        kth = sorted_logits.gather(1, (logits.shape[1] - top_k).clamp(min=0).unsqueeze(1))
        sorted_logits = sorted_logits.masked_fill(sorted_logits < kth, float("-inf"))
    if top_p is not None:
        probs = sorted_logits.softmax(dim=-1)
        cumulative = probs.cumsum(dim=-1)
        drop = cumulative <= 1 - top_p.unsqueeze(1)
        drop[:, -1] = False  # always keep the most likely token
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, sorted_logits)
