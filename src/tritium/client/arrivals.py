"""When benchmark requests are sent: Poisson (or gamma) arrivals at a target rate."""

from __future__ import annotations

import math

import numpy as np


def arrival_times(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Send times in seconds from the start for n requests at `rate` requests/s.

    Gaps are gamma-distributed with mean 1/rate (burstiness 1.0 is exponential: a Poisson
    process, as `vllm bench serve` does); rate inf sends everything at time 0.
    """
    if rate <= 0:
        raise ValueError(f"request rate must be positive, got {rate}")
    if burstiness <= 0:
        raise ValueError(f"burstiness must be positive, got {burstiness}")
    if math.isinf(rate):
        return [0.0] * n
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    gaps[0] = 0.0  # the first request goes at once
    return [float(t) for t in np.cumsum(gaps)]
