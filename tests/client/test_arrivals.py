"""Request arrival schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tritium.client.arrivals import arrival_times


def test_infinite_rate_sends_everything_at_once() -> None:
    assert arrival_times(5, math.inf) == [0.0] * 5


def test_poisson_schedule_is_seeded_sorted_and_has_the_rate() -> None:
    times = arrival_times(4000, rate=20.0, seed=1)
    assert times == arrival_times(4000, rate=20.0, seed=1)
    assert times != arrival_times(4000, rate=20.0, seed=2)
    assert times[0] == 0.0
    assert all(gap >= 0 for gap in np.diff(times))
    gaps = np.diff(times)
    # Exponential gaps: mean 1/rate and standard deviation equal to the mean.
    assert gaps.mean() == pytest.approx(1 / 20.0, rel=0.1)
    assert gaps.std() == pytest.approx(1 / 20.0, rel=0.1)


def test_burstiness_changes_the_spread_not_the_rate() -> None:
    gaps = np.diff(arrival_times(4000, rate=10.0, burstiness=4.0, seed=0))
    assert gaps.mean() == pytest.approx(0.1, rel=0.1)
    assert gaps.std() == pytest.approx(0.1 / 2, rel=0.15)  # gamma: std = mean / sqrt(shape)


@pytest.mark.parametrize(("rate", "burstiness"), [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.0)])
def test_rejects_nonpositive_rate_or_burstiness(rate: float, burstiness: float) -> None:
    with pytest.raises(ValueError):
        arrival_times(3, rate, burstiness)
