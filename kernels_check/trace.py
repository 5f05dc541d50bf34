"""Profile one training step with torch.profiler, and read kernel events from its Chrome trace export.

A kernels-check profiles exactly one optimizer step, after the warm-up steps (so compilation is
done) and outside any timed step (the profiler slows what it records). The export is the
standard `export_chrome_trace` JSON; only kernel name, category and duration are kept, reduced
to one row per kernel name (`KernelStat`), which is also the excerpt format saved as evidence.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from kernels_check.classify import KernelStat

EXCERPT_FORMAT = "qlora-bench-kernel-trace/1"
DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")  # kineto categories of GPU activity
MAX_NAME_CHARS = 4000  # C++ template names can be long; longer ones are cut (the pattern keys are early)


class TraceError(ValueError):
    """An unreadable trace or excerpt (CLI exit code 2)."""


def profile_step(step: Callable[[], Any], device: Optional[str] = None) -> tuple[dict, float]:
    """Run `step` once under torch.profiler; return (Chrome trace dict, step seconds incl. profiler overhead).

    CUDA activity is recorded when CUDA is available (plus CPU ops, which carry the launches);
    on a CPU-only machine the trace holds CPU ops only.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    on_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    if on_cuda:
        torch.cuda.synchronize()
    with profile(activities=activities, record_shapes=False, with_stack=False, profile_memory=False) as prof:
        started = time.perf_counter()
        step()
        if on_cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    fd, path = tempfile.mkstemp(suffix=".json", prefix="qlora-bench-trace-")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        return read_chrome_trace(path), seconds
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def profile_last_step(run: Callable[[Callable[[], None]], Any], warmup: int = 1,
                      device: Optional[str] = None) -> tuple[dict, float]:
    """Profile the last of `warmup + 1` steps that `run` performs; return (Chrome trace, its seconds).

    `run(step_done)` must call `step_done()` after each step. Uses a profiler schedule, so the
    warm-up steps run under the profiler without being recorded (CUPTI start-up lands there).
    """
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    on_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    traces: list[dict] = []
    marks: list[float] = []

    def ready(prof) -> None:
        fd, path = tempfile.mkstemp(suffix=".json", prefix="qlora-bench-trace-")
        os.close(fd)
        try:
            prof.export_chrome_trace(path)
            traces.append(read_chrome_trace(path))
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass

    with profile(activities=activities, schedule=schedule(wait=0, warmup=warmup, active=1, repeat=1),
                 on_trace_ready=ready, record_shapes=False, with_stack=False) as prof:
        def step_done() -> None:
            if on_cuda:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())
            prof.step()

        marks.append(time.perf_counter())
        run(step_done)
    if len(marks) < warmup + 2:
        raise TraceError(f"the profiled run made {len(marks) - 1} steps, {warmup + 1} were needed")
    if not traces:
        raise TraceError("the profiler produced no trace")
    return traces[-1], marks[warmup + 1] - marks[warmup]


def read_json(path: str | Path, what: str = "") -> Any:
    """A JSON file, gzip-compressed or not; TraceError when it cannot be read or parsed."""
    p = Path(path)
    try:
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return json.loads(raw)
    except (OSError, ValueError) as exc:
        raise TraceError(f"cannot read {what + ' ' if what else ''}{p}: {exc}") from exc


def read_chrome_trace(path: str | Path) -> dict:
    """Load a Chrome trace (.json or .json.gz) as written by torch.profiler."""
    p = Path(path)
    data = read_json(p, "trace")
    if isinstance(data, list):  # the bare-array form of the Chrome trace format
        data = {"traceEvents": data}
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise TraceError(f"{p} is not a Chrome trace (no traceEvents list)")
    return data


def trace_events(trace: dict, categories: Iterable[str] = DEVICE_CATEGORIES) -> list[tuple[str, str, float]]:
    """(name, category, duration_us) of every complete event ('ph' X) in `categories`."""
    cats = set(categories)
    out = []
    for e in trace.get("traceEvents", ()):
        if not isinstance(e, dict) or e.get("ph") != "X" or e.get("cat") not in cats:
            continue
        name = e.get("name")
        dur = e.get("dur")
        if not isinstance(name, str) or not isinstance(dur, (int, float)):
            continue
        out.append((name[:MAX_NAME_CHARS], e["cat"], float(dur)))
    return out


def aggregate(events: Iterable[tuple[str, str, float]]) -> list[KernelStat]:
    """One KernelStat per (name, category), largest total time first."""
    total: dict[tuple[str, str], float] = defaultdict(float)
    count: dict[tuple[str, str], int] = defaultdict(int)
    for name, cat, dur in events:
        total[(name, cat)] += dur
        count[(name, cat)] += 1
    stats = [KernelStat(n, total[(n, c)], count[(n, c)], c) for (n, c) in total]
    return sorted(stats, key=lambda k: (-k.total_us, k.name))


def kernel_stats(trace: dict) -> list[KernelStat]:
    """The GPU activity of a Chrome trace, one row per kernel name."""
    return aggregate(trace_events(trace, DEVICE_CATEGORIES))


def make_excerpt(kernels: list[KernelStat], meta: Optional[dict] = None) -> dict:
    """The compact evidence format: kernel name, category, summed duration and launch count."""
    return {"format": EXCERPT_FORMAT, "meta": dict(meta or {}),
            "total_us": round(sum(k.total_us for k in kernels), 3),
            "kernels": [k.to_dict() for k in kernels]}


def kernels_from_document(data: Any, where: str = "input") -> tuple[list[KernelStat], dict]:
    """(kernels, meta) from any of: a kernels-check result, a trace excerpt, or a raw Chrome trace."""
    if isinstance(data, dict) and isinstance(data.get("kernels"), list):
        try:
            stats = [KernelStat.from_dict(k) for k in data["kernels"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise TraceError(f"{where}: malformed kernel row ({exc})") from exc
        meta = dict(data.get("meta") or {})
        for key in ("model", "model_type", "backend"):
            if key in data and key not in meta:
                meta[key] = data[key]
        return stats, meta
    if isinstance(data, list):
        data = {"traceEvents": data}
    events = data.get("traceEvents") if isinstance(data, dict) else None
    if isinstance(events, list) and all(isinstance(e, dict) for e in events):
        return kernel_stats(data), {"source": "chrome trace"}
    raise TraceError(f"{where}: neither a kernels-check result, a kernel excerpt nor a Chrome trace")


def load_kernels(path: str | Path) -> tuple[list[KernelStat], dict]:
    """Kernels of a saved file (result JSON, excerpt, or torch.profiler Chrome trace, .gz allowed)."""
    return kernels_from_document(read_json(path), str(path))
