"""Per tier, one verdict: "Unsloth against what Hugging Face users run today" (unsloth vs hf-trl).

Read from the comparable pairs of the unsloth and hf-trl cells of one environment group
(bench.analysis.against: exactly hf-trl, never a fallback, so records from before recipes give no
verdict), with the sizes where only one of the two fits beside them. Fewer than MIN_PAIRS comparable
pairs: inconclusive. Speed-ups and savings are bench.analysis.speed's (median per-step tokens/s of the
candidate over the baseline's, with their intervals; fractions of the baseline's peak memory, device
else allocated).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Optional

from bench.analysis.against import Side, pairs_against
from bench.analysis.borderline import fits_clearly
from bench.analysis.speed import INCONCLUSIVE as SPEEDUP_INCONCLUSIVE
from bench.analysis.speed import pair_memory_saving, pair_speedup, speedup_verdict
from bench.analysis.stats import Interval
from bench.analysis.results import Group
from bench.schema.pairs import Pair

BASELINE, CANDIDATE = "hf-trl", "unsloth"
MIN_PAIRS = 2
MEASURED, INCONCLUSIVE, NOT_MEASURED = "measured", "inconclusive", "not measured"


@dataclass
class TierVerdict:
    """What the unsloth and hf-trl cells of one group say, as figures (bench.render.report words them)."""

    group: Group
    status: str  # MEASURED | INCONCLUSIVE | NOT_MEASURED
    baseline: str
    candidate: str
    comparable: list[Pair[Side]] = field(default_factory=list)
    unmatched: list[Pair[Side]] = field(default_factory=list)
    speedups: list[float] = field(default_factory=list)
    speedup_intervals: list[Interval] = field(default_factory=list)  # of the comparable pairs with a speed-up
    savings: list[float] = field(default_factory=list)
    saving_field: str = "peak_device_bytes"
    only_candidate_fits: list[Pair[Side]] = field(default_factory=list)  # both tried, only the candidate fits
    only_baseline_fits: list[Pair[Side]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # of baseline / candidate: not measured in the group

    @property
    def median_speedup(self) -> Optional[float]:
        return statistics.median(self.speedups) if self.speedups else None

    @property
    def inconclusive_speedups(self) -> int:
        """Speed-ups whose 95 % interval contains 1.0 (or that have none)."""
        return sum(1 for i in self.speedup_intervals if speedup_verdict(i) == SPEEDUP_INCONCLUSIVE)

    @property
    def median_saving(self) -> Optional[float]:
        return statistics.median(self.savings) if self.savings else None


def _fits(side: Optional[Side]) -> bool:
    """Fits and is not borderline (bench.analysis.borderline.fits_clearly)."""
    return side is not None and fits_clearly(side.record)


def _does_not_fit(side: Optional[Side]) -> bool:
    """Finished without fitting: out of memory, skipped, or over the tier's memory (a borderline cell fits
    neither way, so a size where one side is borderline is said by neither list)."""
    return side is not None and not side.record.fits_tier


def _savings(pairs: list[Pair[Side]], metric: str) -> list[float]:
    return [i.estimate for p in pairs if (i := pair_memory_saving(p, metric)) is not None]


def tier_verdict(group: Group, baseline: str = BASELINE, candidate: str = CANDIDATE,
                 min_pairs: int = MIN_PAIRS) -> TierVerdict:
    """The verdict of `candidate` against `baseline` on one group (a tier on one host)."""
    present = {e.record.recipe for e in group.entries}
    missing = [r for r in (baseline, candidate) if r not in present]
    if missing:
        return TierVerdict(group, NOT_MEASURED, baseline, candidate, missing=missing)
    pairs = pairs_against(group.entries, baseline, candidate)
    comparable = [p for p in pairs if p.comparable]
    saving_field, savings = "peak_device_bytes", _savings(comparable, "peak_device_bytes")
    if not savings:
        saving_field, savings = "peak_allocated_bytes", _savings(comparable, "peak_allocated_bytes")
    intervals = [i for p in comparable if (i := pair_speedup(p)) is not None and i.estimate is not None]
    finished = [p for p in pairs if p.reference and p.candidate
                and {p.reference.record.status, p.candidate.record.status} <= {"ok", "oom", "skipped"}]
    return TierVerdict(
        group, MEASURED if len(comparable) >= min_pairs else INCONCLUSIVE, baseline, candidate, comparable,
        [p for p in pairs if p.not_matched], [i.estimate for i in intervals], intervals, savings, saving_field,
        [p for p in finished if _fits(p.candidate) and _does_not_fit(p.reference)],
        [p for p in finished if _fits(p.reference) and _does_not_fit(p.candidate)])
