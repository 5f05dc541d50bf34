"""The record's `gpu_state` dict: what NVML said of the GPU while a cell ran, the names of its clock-event
(throttle) reasons, what a state warns of, and a run's states in one line's figures. Pure: the NVML reads
are bench/run/device.py's.

Layout (a figure NVML does not report is None; a CPU cell has no gpu_state at all):
  {"start": snapshot,  # before the cell's first step
   "end": snapshot,    # after its last step
   "timed": span}      # read after each timed step
  snapshot: sm_clock_mhz, sm_clock_max_mhz (MHz), temperature_c (deg C), power_draw_w, power_limit_w (the
            enforced limit), power_limit_default_w (W), clock_event_reasons (names, CLOCK_EVENT_REASONS),
            processes ([{"pid", "used_memory_bytes"}]: the compute processes on the GPU, ours included,
            pids as NVML sees them), own_pid (this worker's pid)
  span: steps (how many reads), sm_clock_mhz_min, sm_clock_mhz_max, temperature_c_max, power_draw_w_max,
        clock_event_reasons (every reason seen at any of the reads)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

from bench.units import GiB

#: NVML's clock-event reason bits (nvmlClocksEventReason* = nvmlClocksThrottleReason*, nvidia-ml-py) -> names.
CLOCK_EVENT_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",
    0x400: "reliability",
}
#: The reasons that hold the clocks below what the work asks for: power, thermal, hardware slowdown and
#: board limits. Not these: gpu_idle, applications_clocks_setting, sync_boost, display_clock_setting.
THROTTLING = ("sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown",
              "board_limit", "reliability")


def clock_event_names(bits: Optional[int]) -> Optional[list[str]]:
    """The names of the reason bits set in `bits`, lowest bit first; an unknown bit as 'bit_0x...'; None for None."""
    if bits is None:
        return None
    names = [name for bit, name in sorted(CLOCK_EVENT_REASONS.items()) if bits & bit]
    unknown = bits & ~sum(CLOCK_EVENT_REASONS)
    bit = 1
    while unknown >= bit:
        if unknown & bit:
            names.append(f"bit_{bit:#x}")
        bit <<= 1
    return names


def other_processes(snapshot: Optional[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """(the compute processes on the GPU that are not this worker, whether ours was found among them).

    In another PID namespace (a container) NVML's pids are the host's and ours is not among them: every
    listed process but one (ours holds a CUDA context) is then another's, without knowing which."""
    procs = list((snapshot or {}).get("processes") or [])
    own = (snapshot or {}).get("own_pid")
    others = [p for p in procs if p.get("pid") != own]
    return others, len(others) < len(procs)


def _not_idle(label: str, snapshot: Optional[dict[str, Any]]) -> Optional[str]:
    others, found = other_processes(snapshot)
    if found and others:
        listed = ", ".join(f"pid {p.get('pid')}" + (f" using {p['used_memory_bytes'] / GiB:.2f} GiB"
                                                     if p.get("used_memory_bytes") is not None else "")
                           for p in others)
        return f"GPU not idle at the cell's {label}: {len(others)} other compute process(es) on it ({listed})"
    if not found and len(others) > 1:
        return (f"GPU not idle at the cell's {label}: {len(others)} compute processes on it, {len(others) - 1} "
                f"besides this worker (NVML's pids are another PID namespace's: which one is ours is unknown)")
    return None


def _power_text(snapshot: dict[str, Any]) -> str:
    limit, default = snapshot.get("power_limit_w"), snapshot.get("power_limit_default_w")
    if limit is None:
        return ""
    if default is None or abs(limit - default) < 0.5:
        return f"; power limit {limit:.0f} W" + (" (the card's default)" if default is not None else "")
    return f"; power limit {limit:.0f} W, the card's default {default:.0f} W"


#: The text every state warning starts with: records keep the warnings the worker wrote, and reading a record
#: replaces these with what state_warnings says today (with_state_warnings), so one rule holds for all records.
STATE_WARNING_PREFIXES = ("GPU throttled while the cell ran:", "GPU not idle at the cell's")


def _at_default_power_limit(snapshot: dict[str, Any]) -> bool:
    limit, default = snapshot.get("power_limit_w"), snapshot.get("power_limit_default_w")
    return limit is not None and default is not None and limit >= default - 0.5


def state_warnings(state: Optional[dict[str, Any]]) -> list[str]:
    """What the record should warn of: another process on the GPU at the start or end, and clocks held down by
    power, thermal or hardware slowdown (THROTTLING) at the start, at a timed step or at the end.

    sw_power_cap alone, under the card's default power limit, is not a warning: that is how a datacenter card
    runs a heavy load (an H200 under training reaches its 700 W and lowers its clocks a little), and a real card
    of the same model does the same. Under a power limit set below the default it is one."""
    if not state:
        return []
    out = [w for label in ("start", "end") if (w := _not_idle(label, state.get(label)))]
    seen: list[str] = []
    for part in ("start", "timed", "end"):
        for name in (state.get(part) or {}).get("clock_event_reasons") or []:
            if name in THROTTLING and name not in seen:
                seen.append(name)
    where = state.get("end") or state.get("start") or {}
    if seen == ["sw_power_cap"] and _at_default_power_limit(where):
        seen = []
    if seen:
        out.append(f"GPU throttled while the cell ran: {', '.join(seen)} (NVML clock-event reasons){_power_text(where)}; "
                   f"its speed may be below the card's")
    return out


def with_state_warnings(warnings: list[str], state: Optional[dict[str, Any]]) -> list[str]:
    """`warnings` with the GPU-state ones (STATE_WARNING_PREFIXES) replaced by state_warnings(state); as they
    are when the record has no gpu_state."""
    if not state:
        return list(warnings)
    kept = [w for w in warnings if not str(w).startswith(STATE_WARNING_PREFIXES)]
    return kept + state_warnings(state)


def _extreme(pick, old, new):
    return new if old is None else (old if new is None else pick(old, new))


def add_to_span(span: dict[str, Any], reading: dict[str, Any]) -> dict[str, Any]:
    """The gpu_state's "timed" span with one more reading (sm_clock_mhz, temperature_c, power_draw_w,
    clock_event_reasons) folded in, as a new dict."""
    reasons = list(span.get("clock_event_reasons") or [])
    reasons += [n for n in reading.get("clock_event_reasons") or [] if n not in reasons]
    clock = reading.get("sm_clock_mhz")
    return {"steps": span.get("steps", 0) + 1,
            "sm_clock_mhz_min": _extreme(min, span.get("sm_clock_mhz_min"), clock),
            "sm_clock_mhz_max": _extreme(max, span.get("sm_clock_mhz_max"), clock),
            "temperature_c_max": _extreme(max, span.get("temperature_c_max"), reading.get("temperature_c")),
            "power_draw_w_max": _extreme(max, span.get("power_draw_w_max"), reading.get("power_draw_w")),
            "clock_event_reasons": reasons}


@dataclass(frozen=True)
class GpuStateSpan:
    """The GPU's state over a set of records (a run): SM clock range (MHz) and the highest max clock, highest
    temperature (deg C), the power limits (W); None where no record said."""

    sm_clock_mhz_min: Optional[int]
    sm_clock_mhz_max: Optional[int]
    sm_clock_max_mhz: Optional[int]
    temperature_c_max: Optional[int]
    power_limits_w: tuple[float, ...]
    cells: int


def _figures(states: list[dict[str, Any]], key: str, parts: tuple[str, ...]) -> list:
    return [v for s in states for part in parts if (v := (s.get(part) or {}).get(key)) is not None]


def gpu_state_span(states: Iterable[Optional[dict[str, Any]]]) -> Optional[GpuStateSpan]:
    """The span of the records' gpu_state dicts: the SM clock of the timed reads (of the snapshots where there
    were none), the highest temperature and max clock anywhere, the power limits; None when no record has one."""
    known = [s for s in states if s]
    if not known:
        return None
    # the clock while training: the timed reads (a snapshot before the first step may find the GPU idling)
    clocks = _figures(known, "sm_clock_mhz_min", ("timed",)) + _figures(known, "sm_clock_mhz_max", ("timed",)) \
        or _figures(known, "sm_clock_mhz", ("start", "end"))
    temps = _figures(known, "temperature_c", ("start", "end")) + _figures(known, "temperature_c_max", ("timed",))
    max_clocks = _figures(known, "sm_clock_max_mhz", ("start", "end"))
    limits = tuple(sorted(set(_figures(known, "power_limit_w", ("start", "end")))))
    return GpuStateSpan(min(clocks, default=None), max(clocks, default=None), max(max_clocks, default=None),
                        max(temps, default=None), limits, len(known))
