"""The same matrix run several ways (one GPU, `--gpus all`, a Dask cluster): wall time, where the cells
ran, and whether cells run side by side measured what cells run alone did.

Pure functions over records; the first run given is the baseline the others are compared with. A
speed difference counts only where it is larger than the noise of the cell itself: twice the larger
coefficient of variation of the two cells' timed steps (a run of few timed steps has a wide one).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Optional

from bench.schema.record import ResultRecord


@dataclass
class RunSummary:
    label: str
    records: list[ResultRecord]
    wall_s: Optional[float]  # the command's wall time, where the caller knows it (the GPU script's console)

    @property
    def executors(self) -> list[str]:
        return sorted({(r.placement or {}).get("executor", "serial") for r in self.records})

    @property
    def gpus(self) -> list[str]:
        """The distinct GPUs (or hosts, for Dask) the run's cells ran on."""
        out = set()
        for r in self.records:
            p = r.placement or {}
            out.add(p.get("gpu_uuid") or (f"gpu{p['gpu_index']}" if p.get("gpu_index") is not None else None)
                    or p.get("host") or "the visible GPU")
        return sorted(out)

    @property
    def most_beside(self) -> int:
        return max(((r.placement or {}).get("cells_beside") or 0 for r in self.records), default=0)

    @property
    def ok(self) -> int:
        return sum(r.ok for r in self.records)


def timed_cv(r: ResultRecord) -> Optional[float]:
    """Coefficient of variation of the cell's timed steps (after warm-up), or None with fewer than two."""
    steps = r.step_s[r.warmup_steps:]
    if len(steps) < 2 or statistics.fmean(steps) <= 0:
        return None
    return statistics.stdev(steps) / statistics.fmean(steps)


@dataclass
class CellComparison:
    cell_id: str
    baseline: ResultRecord
    others: list[Optional[ResultRecord]]  # the same cell in each other run (None: missing)
    speed_ratio: list[Optional[float]] = field(default_factory=list)  # other tokens/s over the baseline's
    memory_diff_bytes: list[Optional[int]] = field(default_factory=list)  # other peak device - baseline's
    beyond_noise: list[Optional[bool]] = field(default_factory=list)  # |ratio - 1| above twice the larger CV


def compare_runs(runs: list[RunSummary]) -> list[CellComparison]:
    """Every ok cell of the baseline run beside the same cell (cell_id) of each other run."""
    base, others = runs[0], runs[1:]
    index = [{r.cell_id: r for r in run.records} for run in others]
    out = []
    for b in base.records:
        if not b.ok:
            continue
        c = CellComparison(b.cell_id, b, [ix.get(b.cell_id) for ix in index])
        for o in c.others:
            ok = o is not None and o.ok and o.tokens_per_s and b.tokens_per_s
            ratio = o.tokens_per_s / b.tokens_per_s if ok else None
            c.speed_ratio.append(ratio)
            c.memory_diff_bytes.append(o.peak_device_bytes - b.peak_device_bytes
                                       if ok and o.peak_device_bytes is not None and b.peak_device_bytes is not None
                                       else None)
            cvs = [x for x in (timed_cv(b), timed_cv(o) if o else None) if x is not None]
            c.beyond_noise.append(None if ratio is None or not cvs else abs(ratio - 1) > 2 * max(cvs))
        out.append(c)
    return out


@dataclass
class SpeedVerdict:
    run: str
    pairs: int
    median_ratio: Optional[float]
    low: Optional[float]
    high: Optional[float]
    beyond_noise: int  # cells whose difference exceeds their own noise
    max_memory_diff_bytes: Optional[int]  # the largest |peak device difference| over the compared cells
    verdict: str  # "no consistent difference beyond noise" | "differs" | "not measured"


def speed_verdicts(runs: list[RunSummary], cells: list[CellComparison]) -> list[SpeedVerdict]:
    """Per other run: do its cells measure the baseline's speed? `differs` when most compared cells differ
    beyond their own noise; else `no consistent difference beyond noise` (some cells may)."""
    out = []
    for i, run in enumerate(runs[1:]):
        ratios = [c.speed_ratio[i] for c in cells if c.speed_ratio[i] is not None]
        flags = [c.beyond_noise[i] for c in cells if c.beyond_noise[i] is not None]
        if not ratios:
            out.append(SpeedVerdict(run.label, 0, None, None, None, 0, None, "not measured"))
            continue
        beyond = sum(flags)
        memory = [abs(c.memory_diff_bytes[i]) for c in cells if c.memory_diff_bytes[i] is not None]
        verdict = "differs" if flags and beyond > len(flags) / 2 else "no consistent difference beyond noise"
        out.append(SpeedVerdict(run.label, len(ratios), statistics.median(ratios), min(ratios), max(ratios),
                                beyond, max(memory) if memory else None, verdict))
    return out
