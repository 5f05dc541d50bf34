"""A claim's measurements with their uncertainty, and the verdict an interval gives (pure).

A *measurement* is one figure a claim reads (a pair's speed-up or memory saving, a cell's peak, a
kernel's speed-up) with its 95 % interval and the number of independent measurements behind it
(`units`: repeats; for a pair, the fewer repeats of its two sides). Speed comes from the timed steps
(`step_s[warmup_steps:]`, `step_tokens[warmup_steps:]`): per-step tokens/s, one group per repeat, and
bench.analysis.stats.bootstrap_ratio over them (the median rate of one side over the other's). Memory
peaks have no per-step sample: a pair's interval comes from its repeats (none with one repeat), and
across measurements their spread stands for the uncertainty.

The minimum evidence before `holds` / `does not hold` (MIN_UNITS): two independent measurements
(matched pairs or repeats), and the interval clear of the claim's bounds; an interval that straddles
a bound is `inconclusive`.

A pair's speed-up is bench.analysis.speed's (the one definition the report, console and gate read).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

from bench.analysis.speed import memory_saving, ratio_of_rates
from bench.analysis.stats import Interval, bootstrap_interval, median
from bench.schema.record import rate_groups

#: Independent measurements (matched pairs or repeats) a verdict needs at least.
MIN_UNITS = 2


@dataclass(frozen=True)
class Measurement:
    value: float  # the estimate (a ratio, a fraction saved, GiB, ...: the rule's unit)
    interval: Interval  # its 95 % interval; low / high None when it has none
    units: int  # independent measurements behind it (repeats; a pair: the fewer of its two sides')
    spans: list = field(default_factory=list)  # evidence spans naming where it comes from
    records: tuple = ()  # the records behind it (tier and mode labels)


def pair_speedup(reference: Sequence, candidate: Sequence) -> Optional[tuple[float, Interval]]:
    """(speed-up, interval) of a candidate's repeats over its reference's (bench.analysis.speed: median
    per-step tokens/s, bootstrapped over repeats then steps); None without timings."""
    iv = ratio_of_rates(rate_groups(candidate), rate_groups(reference))
    return None if iv.estimate is None else (iv.estimate, iv)


def pair_memory_reduction(reference: Sequence, candidate: Sequence, metric: str) -> Optional[tuple[float, Interval]]:
    """(fraction of the reference's peak `metric` the candidate saves, interval over repeats:
    bench.analysis.speed.memory_saving); None without the figures. One repeat a side: no interval."""
    iv = memory_saving(reference, candidate, metric)
    return None if iv is None else (iv.estimate, iv)


def values_interval(values: Sequence[float]) -> Interval:
    """Several readings of one deterministic quantity (memory peaks): their median and bootstrap interval."""
    return bootstrap_interval([list(values)])


def bounds(rule: dict, target: Optional[float] = None) -> tuple[float, float]:
    """The band a rule's comparison accepts: at_least t -> [t, inf), between lo hi -> [lo, hi], approx
    -> target +- rel_tol (`target` overrides the rule's, for per-point rules)."""
    op = rule["op"]
    if op == "at_least":
        return rule["threshold"], math.inf
    if op == "at_most":
        return -math.inf, rule["threshold"]
    if op == "between":
        return rule["lo"], rule["hi"]
    t = rule.get("target") if target is None else target
    return t - rule["rel_tol"] * abs(t), t + rule["rel_tol"] * abs(t)


def interval_verdict(interval: Interval, rule: dict, target: Optional[float] = None) -> Optional[bool]:
    """True: the whole interval inside the rule's band; False: wholly outside; None: it straddles a
    bound or is unknown."""
    if not interval.known:
        return None
    lo, hi = bounds(rule, target)
    if lo <= interval.low and interval.high <= hi:
        return True
    if interval.high < lo or interval.low > hi:
        return False
    return None


def envelope(ms: Sequence[Measurement]) -> Interval:
    """The smallest interval holding every measurement's interval (its value where it has none)."""
    lows = [m.interval.low if m.interval.known else m.value for m in ms]
    highs = [m.interval.high if m.interval.known else m.value for m in ms]
    return Interval(median([m.value for m in ms]), min(lows), max(highs))


def median_interval(ms: Sequence[Measurement]) -> Interval:
    """The median over measurements and its interval: the bootstrap over their values, widened to the
    median of their own bounds where every one has an interval (a noisy pair widens it); one
    measurement: its own."""
    if len(ms) == 1:
        return ms[0].interval
    between = values_interval([m.value for m in ms])
    if not all(m.interval.known for m in ms):
        return between
    low = min(between.low, median([m.interval.low for m in ms]))
    high = max(between.high, median([m.interval.high for m in ms]))
    return Interval(between.estimate, low, high, between.level)


def aggregate_interval(ms: Sequence[Measurement], aggregate: str) -> Interval:
    """The interval a claim is judged on: the median's (aggregate "median") or the envelope of all ("each")."""
    return median_interval(ms) if aggregate == "median" else envelope(ms)


def too_little(ms: Sequence[Measurement], min_pairs: int = 1) -> Optional[str]:
    """Why the measurements are too little evidence (fewer than MIN_UNITS independent measurements, or
    fewer measurements than the rule's min_pairs); None when enough."""
    units = sum(m.units for m in ms)
    if units < MIN_UNITS:
        return (f"{units} independent measurement{'s' if units != 1 else ''} (matched pairs or repeats); "
                f"a verdict needs at least {MIN_UNITS}")
    if len(ms) < min_pairs:
        return f"{len(ms)} measurement{'s' if len(ms) != 1 else ''}; the rule needs at least {min_pairs}"
    return None
