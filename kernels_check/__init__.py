"""kernels_check: which Unsloth (or Liger) kernels ran on a model, which fell back, and what that costs.

A detection library: it imports nothing from `bench` (bench depends on it, one way) and is
importable without torch or unsloth (trace.py imports torch inside the profiling functions).
Library API for the run integration (bench/run/worker.py):

- `summarize_fast_paths(model, profile_step, log_text=None)`: profile one call of `profile_step`
  (one training step) and return the compact `fast_paths` dict of a run record, e.g.
  {"norm": "unsloth", "rope": "unsloth", "attention": "flash", ..., "_source": "trace+static",
  "_origin": "unsloth"}; `_origin` names the kernel library the summary counts (unsloth, or liger for
  a model Liger patched). A profiler failure falls back to the static check (`_source` "static",
  `_profile_error` set).
- `static_fast_paths(model, log_text=None)`: the same dict from the static check only (no profiler).
- `count_kernel_paths(fast_paths, origin=None)`: (k, n) of the paths that library has kernels for
  (`count_unsloth_paths` for Unsloth's).
- `format_fast_paths(fast_paths)`: "fast paths k/n" (Unsloth) or "Liger kernel paths k/n" for the console.

Modules: patterns (kernel-name table, kernel_patterns.json), classify (pure classification),
trace (torch.profiler and Chrome-trace reading), static (installed patches, Unsloth's messages),
heuristic (claim F2), result (a `bench kernels-check` result and its analysis), benchmarks (the
kernel tests' pytest-benchmark JSON and log), reference (plain-PyTorch references of the kernels,
needs torch). The runner is bench/run/kernels.py, the report bench/render/kernels.py.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from kernels_check import static, trace
from kernels_check.classify import (KERNEL_PATHS, LIGER_KERNEL_PATHS, UNSLOTH_KERNEL_PATHS, classify,
                                    count_kernel_paths, count_unsloth_paths, format_fast_paths, kernel_origin,
                                    merge_fast_paths, trace_fast_paths)

__all__ = ["summarize_fast_paths", "static_fast_paths", "format_fast_paths", "count_kernel_paths",
           "count_unsloth_paths", "kernel_origin", "KERNEL_PATHS", "LIGER_KERNEL_PATHS", "UNSLOTH_KERNEL_PATHS"]


def static_fast_paths(model: Any, log_text: Optional[str] = None) -> dict[str, str]:
    """fast_paths from the installed patches alone (what they should run); `_source` is "static"."""
    return static.static_fast_paths(static.inspect_model(model, log_text=log_text))


def summarize_fast_paths(model: Any, profile_step: Callable[[], Any], log_text: Optional[str] = None) -> dict[str, str]:
    """Profile one call of `profile_step` and return the run record's `fast_paths`.

    Call it after a cell's timed steps and memory readings (the profiler slows the step and
    allocates). Trace verdicts win; the static check fills `lora_matmul` and any path the trace
    did not show. Never raises for a profiler problem: it degrades to the static check and says
    so in `_profile_error`.
    """
    report = static.inspect_model(model, log_text=log_text)
    expected = static.expected_fast_paths(report)
    try:
        chrome_trace, _ = trace.profile_step(profile_step)
        kernels = trace.kernel_stats(chrome_trace)
        if not kernels:
            raise RuntimeError("the profiler recorded no GPU kernels")
        out = merge_fast_paths(trace_fast_paths(classify(kernels)), expected)
    except Exception as exc:  # noqa: BLE001 - a run must not fail because the profiler did
        out = merge_fast_paths(None, expected)
        out["_profile_error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]
    library = static.kernel_library(report)
    out["_origin"] = library if library != "unsloth" else kernel_origin(out)
    return out
