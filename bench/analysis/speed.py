"""A cell's speed and a pair's speed-up and memory saving, with their intervals: the one definition the
report, the console, the claims and the gate read (pure).

- A cell's **speed** is the median per-step tokens/s over the timed steps of all its repeats
  (bench.schema.record.ResultRecord.timed_rates: `step_tokens[warmup_steps:]` over `step_s[warmup_steps:]`),
  with its 95 % bootstrap interval (bench.analysis.stats.bootstrap_interval: repeats, then steps), the
  coefficient of variation of those per-step rates and `noisy` (CV above stats.NOISY_CV). A single timed
  step in all gives the median and no interval.
- A pair's **speed-up** is the candidate's median per-step tokens/s over the reference's, with the
  interval of stats.bootstrap_ratio (the two sides resampled independently). Its verdict is `faster` or
  `slower` when the interval excludes 1.0, else `inconclusive` (the interval contains 1.0, or there is
  none).
- A pair's **memory saving** is 1 - candidate peak / reference peak (medians over repeats, bytes), with an
  interval only when the repeats give more than one peak on each side; with one peak a side it is a point
  estimate and `Interval.known` is False (renderers say so).

Speed-ups and savings are read from comparable pairs only (bench.schema.pairs.Pair.comparable).
A pair side is a ResultRecord or an entry carrying `.record`; an entry's `.repeat_records` (bench.analysis.results.Entry)
are the records of every repeat of its cell, else the one record is the only repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from bench.analysis import stats
from bench.analysis.stats import Interval
from bench.schema.pairs import Pair, record_of
from bench.schema.record import ResultRecord, rate_groups

FASTER, SLOWER, INCONCLUSIVE = "faster", "slower", "inconclusive"
NO_INTERVAL = Interval(None, None, None)


@dataclass(frozen=True)
class CellSpeed:
    """A cell's tokens/s: median per-step rate and its interval, the CV of the per-step rates, and how many
    repeats and timed steps they come from."""

    tokens_per_s: Interval
    cv: Optional[float]
    repeats: int  # ok repeats with timed steps
    steps: int  # timed steps over those repeats

    @property
    def noisy(self) -> bool:
        return stats.is_noisy(self.cv)

    @property
    def known(self) -> bool:
        return self.tokens_per_s.estimate is not None


def repeats_of(side: Any) -> list[ResultRecord]:
    """The records of every repeat of a pair side's cell: an entry's `.repeat_records`, else its one record."""
    if isinstance(side, ResultRecord):
        return [side]
    repeats = getattr(side, "repeat_records", None)
    return list(repeats) if repeats else [record_of(side)]


def speed_of_rates(groups: Sequence[Sequence[float]]) -> CellSpeed:
    """The speed of per-step tokens/s grouped by repeat (one list per repeat)."""
    usable = [list(g) for g in groups if g]
    pooled = [v for g in usable for v in g]
    return CellSpeed(stats.bootstrap_interval(usable), stats.coefficient_of_variation(pooled), len(usable),
                     len(pooled))


def cell_speed(records: Sequence[ResultRecord]) -> CellSpeed:
    """The speed of one cell from the records of its repeats (ok repeats only)."""
    return speed_of_rates(rate_groups(records))


def side_speed(side: Any) -> CellSpeed:
    """The speed of a pair side (a record, or an entry with its repeats)."""
    return cell_speed(repeats_of(side))


def median_of_rates(groups: Sequence[Sequence[float]]) -> Optional[float]:
    """The median of per-step tokens/s grouped by repeat, pooled (`speed_of_rates`' estimate without its
    bootstrap); None without any."""
    return stats.median([v for group in groups for v in group])


def median_tokens_per_s(side: Any) -> Optional[float]:
    """A pair side's cell speed without its interval: the median per-step tokens/s over every repeat (the
    estimate `side_speed` gives, without the bootstrap); None without timed steps."""
    return median_of_rates(rate_groups(repeats_of(side)))


def ratio_of_rates(numerator: Sequence[Sequence[float]], denominator: Sequence[Sequence[float]]) -> Interval:
    """numerator's median per-step tokens/s over denominator's, with its bootstrap interval."""
    return stats.bootstrap_ratio(numerator, denominator)


def pair_speedup(pair: Pair) -> Optional[Interval]:
    """Candidate over reference median per-step tokens/s with its interval; None unless the pair is comparable."""
    if not pair.comparable:
        return None
    return ratio_of_rates(rate_groups(repeats_of(pair.candidate)), rate_groups(repeats_of(pair.reference)))


def speedup_verdict(ratio: Optional[Interval]) -> str:
    """FASTER / SLOWER when the interval lies above / below 1.0, else INCONCLUSIVE (it contains 1.0, or none)."""
    if ratio is not None and ratio.above(1.0):
        return FASTER
    if ratio is not None and ratio.below(1.0):
        return SLOWER
    return INCONCLUSIVE


def peaks(records: Sequence[ResultRecord], metric: str) -> list[float]:
    """The peak `metric` (a record field, bytes) of each ok repeat that recorded it."""
    return [v for r in records if r.ok and (v := getattr(r, metric)) is not None]


def memory_saving(reference: Sequence[ResultRecord], candidate: Sequence[ResultRecord],
                  metric: str = "peak_device_bytes") -> Optional[Interval]:
    """1 - candidate peak / reference peak of `metric` (a record field, bytes; medians over each side's ok
    repeats); None when a side did not record it. An interval only with more than one peak on each side."""
    cand, ref = peaks(candidate, metric), peaks(reference, metric)
    if not cand or not ref:
        return None
    ratio = stats.bootstrap_ratio([[v] for v in cand], [[v] for v in ref])
    if ratio.estimate is None:
        return None
    if not ratio.known:
        return Interval(1.0 - ratio.estimate, None, None, ratio.level)
    return Interval(1.0 - ratio.estimate, 1.0 - ratio.high, 1.0 - ratio.low, ratio.level)


def pair_memory_saving(pair: Pair, metric: str = "peak_device_bytes") -> Optional[Interval]:
    """A comparable pair's `memory_saving` over the repeats of its two cells (None for other pairs)."""
    if not pair.comparable:
        return None
    return memory_saving(repeats_of(pair.reference), repeats_of(pair.candidate), metric)
