"""The articles' fallback heuristic (claim F2), kept as a secondary signal beside the trace verdict.

F2: "If VRAM reduction is < 30 %, the model is likely using fallback kernels" (measured with
torch.cuda.max_memory_allocated, i.e. `peak_allocated_bytes`, against the matched HF run). The
suite shows this verdict next to what the trace saw, so a reader can tell when it is wrong.
"""

from __future__ import annotations

import statistics
from typing import Iterable, Mapping, Optional

from kernels_check.classify import count_unsloth_paths

F2_THRESHOLD = 0.30  # memory reduction below which F2 calls it a fallback
F2_METRIC = "peak_allocated_bytes"  # F2 watches torch.cuda.max_memory_allocated()

SUSPECT = "suspect fallback"
LIKELY_FAST = "no fallback suspected"
NO_DATA = "no matched HF run"


def f2_verdict(memory_reduction: Optional[float], threshold: float = F2_THRESHOLD) -> str:
    """F2's call on one memory reduction (fraction of HF's peak saved; 0.6 = 60 % less)."""
    if memory_reduction is None:
        return NO_DATA
    return SUSPECT if memory_reduction < threshold else LIKELY_FAST


def summarize_pairs(rows: list[dict]) -> dict:
    """Median speed-up and memory reduction over a model's pair rows, and F2's verdict on the median.

    Rows are dicts with tier, mode, seq_len, batch_size, memory_reduction (the F2 metric), speedup
    and matched (bench.analysis.fallback.model_pairs builds them from run records).

    Pairs that failed the parity check are left out (their comparison is not matched); if only
    such pairs exist they are used and `unmatched` says so.
    """
    usable = [r for r in rows if r["matched"] is not False] or rows
    reductions = [r["memory_reduction"] for r in usable if r["memory_reduction"] is not None]
    speedups = [r["speedup"] for r in usable if r["speedup"] is not None]
    reduction = statistics.median(reductions) if reductions else None
    return {
        "pairs": len(usable),
        "memory_reduction": reduction,
        "memory_reduction_range": (min(reductions), max(reductions)) if reductions else None,
        "speedup": statistics.median(speedups) if speedups else None,
        "unmatched": bool(usable) and all(r["matched"] is False for r in usable),
        "cells": sorted({f"s{r['seq_len']} b{r['batch_size']}" for r in usable}),
        "f2": f2_verdict(reduction),
    }


def heuristic_vs_trace(f2: str, fast_paths: Optional[Mapping[str, str]]) -> Optional[bool]:
    """Whether F2 agrees with the trace: F2 suspects a fallback exactly when some Unsloth-kernel path fell back.

    None when either side has nothing to say.
    """
    if f2 == NO_DATA or not fast_paths:
        return None
    k, n = count_unsloth_paths(fast_paths)
    if n == 0:
        return None
    return (f2 == SUSPECT) == (k < n)
