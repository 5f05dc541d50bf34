"""The record's `host_cpu` dict: how busy the host's CPUs were over a cell's timed steps, this worker's share of
that and every other process's, and what it warns of. Pure: the reads (/proc/stat, os.times) are
bench/run/device.py's (read_host_sample, TimedWindow).

Layout (None where the host has no /proc/stat, or the window had no timed step):
  {"cores": logical CPUs of the host (os.cpu_count()),
   "seconds": wall seconds between the two reads (the end of the warm-up, the end of the last timed step),
   "busy_cores": CPU-seconds every process on the host was busy / wall seconds (cores kept busy on average),
   "own_cores": CPU-seconds of this worker process (all its threads) / wall seconds,
   "other_cores": busy_cores - own_cores, at least 0: what every other process kept busy}

Why: a training step partly waits on the CPU (Python, kernel launches, the data collator; the more so the
shorter its GPU work, as in a quantised model's small steps), so other work on the same host (a second
benchmark beside this one, a compile, a checkpoint being written) slows the step while the GPU reads idle,
cool and unthrottled. Two cells side by side (`--gpus all`, or two commands) keep each other's cores busy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

#: Warn when other processes kept at least this share of the host's cores busy over the timed steps (and at
#: least one core): then the cell's speed may be the host's contention, not the GPU's.
HOST_BUSY_SHARE = 0.25


@dataclass(frozen=True)
class HostCpuSample:
    """One read: the host's busy and total CPU time (jiffies, /proc/stat), this process's CPU seconds
    (os.times user + system, every thread) and a monotonic clock (s)."""

    busy_jiffies: int
    total_jiffies: int
    own_cpu_s: float
    wall_s: float


def proc_stat_jiffies(text: str) -> Optional[tuple[int, int]]:
    """(busy, total) jiffies of all CPUs from /proc/stat's first ("cpu") line, or None when it has none.

    Fields: user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is already counted
    in user / nice. Busy is everything but idle and iowait."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:9]] + [0] * (8 - len(fields[1:9]))
            user, nice, system, idle, iowait, irq, softirq, steal = values
            busy = user + nice + system + irq + softirq + steal
            return busy, busy + idle + iowait
    return None


def host_cpu(start: Optional[HostCpuSample], end: Optional[HostCpuSample], cores: Optional[int]) -> Optional[dict[str, Any]]:
    """The record's host_cpu between two reads (module docstring), or None without both reads or elapsed time."""
    if start is None or end is None or not cores:
        return None
    wall, total = end.wall_s - start.wall_s, end.total_jiffies - start.total_jiffies
    if wall <= 0 or total <= 0:
        return None
    busy = cores * (end.busy_jiffies - start.busy_jiffies) / total
    own = (end.own_cpu_s - start.own_cpu_s) / wall
    return {"cores": cores, "seconds": round(wall, 3), "busy_cores": round(busy, 2), "own_cores": round(own, 2),
            "other_cores": round(max(0.0, busy - own), 2)}


def host_cpu_warnings(state: Optional[dict[str, Any]]) -> list[str]:
    """A warning when other processes kept at least HOST_BUSY_SHARE of the host's cores (and one core) busy."""
    if not state:
        return []
    other, cores = state.get("other_cores"), state.get("cores")
    if other is None or not cores or other < max(1.0, HOST_BUSY_SHARE * cores):
        return []
    return [f"host CPU busy during the timed steps: other processes kept {other:.1f} of {cores} cores busy on "
            f"average; a step that waits on the CPU (Python, kernel launches, data) runs slower, so this speed may "
            f"be the host's contention, not the GPU's"]
