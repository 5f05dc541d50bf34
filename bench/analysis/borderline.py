"""One cell's fit against the memory a real card of its tier gives a process: fits, borderline, or not.

The cap a cell is read against (`memory_cap_bytes`) is the smaller of the cap its run enforced
(`ResultRecord.memory_limit_bytes`, emulated runs) and torch's total on a real card of the tier
(`GpuTier.memory_cap_bytes`, bench/data/tiers.json): records emulated before the table carried torch's
figure were capped at the larger driver total, and are read against the real card all the same.

**Borderline** (emulated tiers only): the cell ran ok and stayed under the cap, but its device peak
(NVML, CUDA context included; the allocator's reserved peak where NVML gave none) is at least
(1 - BORDERLINE_MARGIN) of the cap, or above the tier's cap where the run's own cap was larger. Such a
cell reads `borderline`, never `fits`: it is neither recommended nor counted as not fitting.
BORDERLINE_MARGIN = 5 % of the cap (0.73 GiB on a T4) because what the emulation cannot reproduce is of
that order: the spread of torch's total between real cards of one model (public reports: 14.56 to
14.75 GiB on a T4, 23.52 to 23.64 GiB on an RTX 4090: up to 1.3 %), the CUDA context of the real card
against the host's that stands in for it (a few hundred MiB: 2 to 3 % of a T4), and a device peak
sampled every 10 ms that can miss a short spike. A cell that ran out of memory stays `oom`: the cap
errs on the side of less memory (the smallest public figure, the host's context taken off), so an OOM
near it is not read as a fit either way.

**Native runs have no borderline**: the cell ran on a real card of the tier, so fitting is a fact
there, not an emulation's estimate; a native cell near its memory gets the report's little-headroom
note instead (bench.analysis.decisions.headroom_left).
"""

from __future__ import annotations

from typing import Optional

from bench.config.tiers import TIERS
from bench.schema.record import ResultRecord

#: A fitting emulated cell whose device peak is within this share of its cap reads `borderline`.
BORDERLINE_MARGIN = 0.05
FITS, BORDERLINE = "fits", "borderline"


def memory_cap_bytes(r: ResultRecord) -> Optional[int]:
    """Bytes a real card of the cell's tier gives a process, as this cell is read against: the smaller
    of the run's own cap (emulated) and the tier's torch total; the tier's alone when native; None
    when the tier is unknown and the run set no cap."""
    tier = TIERS.get(r.tier)
    caps = [c for c in (r.memory_limit_bytes, tier.memory_cap_bytes if tier else None) if c]
    return min(caps) if caps else None


def peak_bytes(r: ResultRecord) -> Optional[int]:
    """The cell's device peak (NVML), else its allocator's reserved peak; None without either."""
    return r.peak_device_bytes if r.peak_device_bytes is not None else r.peak_reserved_bytes


def is_borderline(r: ResultRecord, margin: float = BORDERLINE_MARGIN) -> bool:
    """An emulated cell that ran within the tier's memory with a peak of at least (1 - margin) of its cap."""
    if r.mode != "emulated" or not r.fits_tier:
        return False
    cap, peak = memory_cap_bytes(r), peak_bytes(r)
    return cap is not None and peak is not None and peak >= (1.0 - margin) * cap


def fits_clearly(r: ResultRecord) -> bool:
    """Ran ok within the tier's memory and is not borderline: the only reading a recommendation rests on."""
    return r.fits_tier and not is_borderline(r)


def fit_state(r: ResultRecord) -> str:
    """'fits', 'borderline', or the outcome of a cell that did not fit ('oom', 'over tier memory', ...)."""
    if is_borderline(r):
        return BORDERLINE
    return FITS if r.fits_tier else r.fit_outcome
