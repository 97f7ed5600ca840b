"""Benchmark and client prompts: a prompts file (one per line) or random-length word prompts."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import cycle, islice
from pathlib import Path

import numpy as np

# Common English words: random prompts made of them tokenize to about one token a word
# with most LLM tokenizers, so a prompt of N words is roughly N tokens.
_WORDS_TEXT = """
the of and to in is was for on that with as by at from his her an be this which or had are
not but have were they all their one has been its first new after who would also time two
more other city year may when there school into world only most state over some team she
than used can them these up between people during where part about such through both work
national three many out early later known film three including under while name music
could made then series war game him second well until season water light river house story
small long group church family began high place music book old life way around since day
government each however being same number area
"""
WORDS = tuple(dict.fromkeys(_WORDS_TEXT.split()))


@dataclass(frozen=True)
class BenchRequest:
    """One prompt to send, with its output length and its length in words."""

    prompt: str
    max_tokens: int | None
    prompt_words: int


def load_prompts(path: str | Path) -> list[str]:
    """One prompt per line; blank lines are skipped, line endings dropped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"no prompts in {path}")
    return prompts


def file_dataset(path: str | Path, num_prompts: int, max_tokens: int | None) -> list[BenchRequest]:
    """num_prompts requests cycling through the file's prompts in order."""
    prompts = load_prompts(path)
    return [
        BenchRequest(p, max_tokens, len(p.split())) for p in islice(cycle(prompts), num_prompts)
    ]


def _lengths(rng: np.random.Generator, n: int, mean: int, range_ratio: float) -> list[int]:
    """n lengths uniform in [mean*(1-r), mean*(1+r)], at least 1 (vLLM's random dataset)."""
    low = max(1, int(mean * (1 - range_ratio)))
    high = max(low, int(mean * (1 + range_ratio)))
    return [int(x) for x in rng.integers(low, high + 1, size=n)]


def random_dataset(
    num_prompts: int,
    input_len: int,
    output_len: int,
    range_ratio: float = 0.0,
    seed: int = 0,
) -> list[BenchRequest]:
    """num_prompts prompts of random words with random input/output lengths (reproducible)."""
    if not 0.0 <= range_ratio < 1.0:
        raise ValueError(f"random range ratio must be in [0, 1), got {range_ratio}")
    rng = np.random.default_rng(seed)
    input_lens = _lengths(rng, num_prompts, input_len, range_ratio)
    output_lens = _lengths(rng, num_prompts, output_len, range_ratio)
    requests = []
    for n_in, n_out in zip(input_lens, output_lens, strict=True):
        words = [WORDS[i] for i in rng.integers(0, len(WORDS), size=n_in)]
        requests.append(BenchRequest(" ".join(words), n_out, n_in))
    return requests
