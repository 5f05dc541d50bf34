"""Statistics of repeated timings: quantiles, the coefficient of variation, bootstrap intervals (pure).

A cell's speed is a sample of timed steps, from one or more repeats (each a fresh worker). Its centre is
the median; its spread the 20th-80th percentiles and the coefficient of variation (CV = sample standard
deviation / mean); its uncertainty a 95 % bootstrap interval that resamples repeats, then steps within
each resampled repeat (so a run-to-run shift widens the interval, not only step-to-step jitter).

A cell is `noisy` when its CV is above NOISY_CV: 5 %. A steady cell on an idle GPU repeats its steps far
more closely than that (each record's `step_s_cv` shows how closely: reports/results/); above it something
else is changing the step time (data of varying length, another process, clock throttling, compilation
of new shapes, a too-short window), and a difference of that size between two recipes is not read as a
speed-up.

Intervals are deterministic: the bootstrap's random generator is seeded.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

#: Above this coefficient of variation a cell's timed steps are `noisy` (see the module docstring).
NOISY_CV = 0.05
#: Two-sided confidence level of every interval the suite reports.
CONFIDENCE = 0.95
#: Bootstrap resamples per interval.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261129


def quantile(values: Sequence[float], q: float) -> Optional[float]:
    """The q-quantile (0 <= q <= 1) by linear interpolation between order statistics (numpy's default);
    None for no values."""
    if not values:
        return None
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} outside [0, 1]")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: Sequence[float]) -> Optional[float]:
    return quantile(values, 0.5)


def coefficient_of_variation(values: Sequence[float]) -> Optional[float]:
    """Sample standard deviation (n - 1) over the mean; None for fewer than two values or a zero mean."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    if mean == 0:
        return None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(var) / abs(mean)


def is_noisy(cv: Optional[float], threshold: float = NOISY_CV) -> bool:
    """True when the CV is known and above the threshold."""
    return cv is not None and cv > threshold


@dataclass(frozen=True)
class StepStats:
    """Timed step times (seconds) of one measurement: count, median, p20 / p80, CV."""

    n: int
    median_s: Optional[float]
    p20_s: Optional[float]
    p80_s: Optional[float]
    cv: Optional[float]

    @property
    def noisy(self) -> bool:
        return is_noisy(self.cv)


def step_stats(step_s: Sequence[float]) -> StepStats:
    """The statistics of timed step times (seconds)."""
    return StepStats(len(step_s), median(step_s), quantile(step_s, 0.2), quantile(step_s, 0.8),
                     coefficient_of_variation(step_s))


@dataclass(frozen=True)
class Interval:
    """An estimate and its two-sided `level` interval [low, high]; low / high None when it has none."""

    estimate: Optional[float]
    low: Optional[float]
    high: Optional[float]
    level: float = CONFIDENCE

    @property
    def known(self) -> bool:
        return self.low is not None and self.high is not None

    def excludes(self, value: float) -> bool:
        """True when the whole interval lies on one side of `value` (known intervals only)."""
        return self.known and (self.low > value or self.high < value)

    def above(self, value: float) -> bool:
        return self.known and self.low > value

    def below(self, value: float) -> bool:
        return self.known and self.high < value


def _resample(groups: Sequence[Sequence[float]], rng: random.Random) -> list[float]:
    """Repeats drawn with replacement, then values within each drawn repeat with replacement."""
    out: list[float] = []
    for _ in groups:
        group = groups[rng.randrange(len(groups))]
        out.extend(group[rng.randrange(len(group))] for _ in group)
    return out


def _percentile_interval(draws: list[float], estimate: Optional[float], level: float) -> Interval:
    draws.sort()
    tail = (1.0 - level) / 2.0
    return Interval(estimate, quantile(draws, tail), quantile(draws, 1.0 - tail), level)


def _usable(groups: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(g) for g in groups if g)


# The bootstraps are seeded, so the same samples always give the same interval: one report reads a cell's
# speed and a pair's speed-up in several places (tables, summary, matrix, ladder, claims), computed once here.
def bootstrap_interval(groups: Sequence[Sequence[float]], statistic: Callable[[Sequence[float]], float] = median,
                       level: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> Interval:
    """`statistic` of the pooled values and its percentile-bootstrap interval over repeats, then values.

    `groups`: one sequence of values per repeat. Fewer than two values in all: the estimate, no interval.
    """
    return _bootstrap_interval(_usable(groups), statistic, level, resamples, seed)


def bootstrap_ratio(numerator: Sequence[Sequence[float]], denominator: Sequence[Sequence[float]],
                    statistic: Callable[[Sequence[float]], float] = median, level: float = CONFIDENCE,
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval:
    """statistic(numerator) / statistic(denominator) and its bootstrap interval, the two resampled
    independently (e.g. a candidate's per-step tokens/s over its reference's: a speed-up).

    No interval unless both sides have two values or more; no estimate when a side is empty or zero.
    """
    return _bootstrap_ratio(_usable(numerator), _usable(denominator), statistic, level, resamples, seed)


@functools.lru_cache(maxsize=4096)
def _bootstrap_interval(usable: tuple[tuple[float, ...], ...], statistic: Callable[[Sequence[float]], float],
                        level: float, resamples: int, seed: int) -> Interval:
    pooled = [v for g in usable for v in g]
    if not pooled:
        return Interval(None, None, None, level)
    estimate = statistic(pooled)
    if len(pooled) < 2:
        return Interval(estimate, None, None, level)
    rng = random.Random(seed)
    return _percentile_interval([statistic(_resample(usable, rng)) for _ in range(resamples)], estimate, level)


@functools.lru_cache(maxsize=4096)
def _bootstrap_ratio(num: tuple[tuple[float, ...], ...], den: tuple[tuple[float, ...], ...],
                     statistic: Callable[[Sequence[float]], float], level: float, resamples: int,
                     seed: int) -> Interval:
    pooled_n = [v for g in num for v in g]
    pooled_d = [v for g in den for v in g]
    if not pooled_n or not pooled_d or statistic(pooled_d) == 0:
        return Interval(None, None, None, level)
    estimate = statistic(pooled_n) / statistic(pooled_d)
    if len(pooled_n) < 2 or len(pooled_d) < 2:
        return Interval(estimate, None, None, level)
    rng = random.Random(seed)
    draws = []
    for _ in range(resamples):
        d = statistic(_resample(den, rng))
        n = statistic(_resample(num, rng))
        if d:
            draws.append(n / d)
    return _percentile_interval(draws, estimate, level)


def rates(step_tokens: Sequence[int], step_s: Sequence[float]) -> list[float]:
    """Per-step throughput (tokens/s) of paired step token counts and step times; steps of zero time dropped."""
    return [t / s for t, s in zip(step_tokens, step_s) if s > 0]
