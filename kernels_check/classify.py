"""Profiler kernel events -> per fast path: which origin ran and its share of the step's GPU time (pure).

Input is one profiled training step reduced to one row per kernel name (`KernelStat`). Every
kernel is matched against the pattern table; a kernel no pattern matches is kept in `unknown`
(with its time), never dropped. Shares are of the summed kernel time of the step (kernels on
different streams can overlap, so this is GPU busy time, not wall time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

from kernels_check.patterns import KernelPattern, load_patterns, match_kernel

# What an origin is called in a compact fast-path summary (run records, console, coverage table).
ORIGIN_LABEL = {
    "unsloth": "unsloth",
    "liger": "liger",
    "trl": "trl",
    "inductor": "compiled",
    "aten": "eager",
    "bitsandbytes": "bitsandbytes",
    "cublas": "cublas",
    "cudnn": "cudnn",
    "flash": "flash",
    "mem_efficient": "mem_efficient",
    "memcpy": "memcpy",
    "other": "other",
}
# Fast paths reported in a summary (trace ones; `other` is leftovers and stays out of summaries).
SUMMARY_PATHS = ("norm", "rope", "mlp_act", "nf4_dequant", "matmul", "attention", "cross_entropy", "optimizer")
# Fast paths for which Unsloth ships a hand-written kernel: the n of "fast paths k/n".
UNSLOTH_KERNEL_PATHS = ("norm", "rope", "mlp_act", "nf4_dequant", "lora_matmul", "cross_entropy")
# Fast paths the hf-liger recipe runs on Liger's kernels: the n of "Liger kernel paths k/n". Liger also
# has cross-entropy kernels, but TRL turns its fused linear CE off and transformers' integration leaves
# plain CE off (docs/notes/recipes-research.md section 6): counting that path would call every hf-liger
# run a fallback.
LIGER_KERNEL_PATHS = ("norm", "rope", "mlp_act")
# The kernel libraries a recipe opts into (origins of kernels_check.patterns) -> the paths they count.
KERNEL_PATHS = {"unsloth": UNSLOTH_KERNEL_PATHS, "liger": LIGER_KERNEL_PATHS}
# What each kernel library is called where a k/n count is printed.
KERNEL_COUNT_LABEL = {"unsloth": "fast paths", "liger": "Liger kernel paths"}
# Which kernel library a recipe (bench.config.recipes) runs; results and records without a recipe are Unsloth's.
RECIPE_KERNELS = {"unsloth": "unsloth", "unsloth-lora16": "unsloth", "hf-liger": "liger"}
# A fast path counts as a kernel library's when its kernels take at least this share of its time, even
# if another origin takes more: on torch >= 2.11 Unsloth runs its SwiGLU forward kernel but lets
# Inductor compile the backward (unsloth/kernels/swiglu.py:141), and that path did not fall back.
KERNEL_MIN_SHARE = 0.05
UNSLOTH_MIN_SHARE = KERNEL_MIN_SHARE


@dataclass(frozen=True)
class KernelStat:
    """All launches of one kernel name in the profiled step."""

    name: str
    total_us: float  # summed GPU duration (microseconds)
    count: int  # launches
    category: str = "kernel"  # kineto category: kernel | gpu_memcpy | gpu_memset

    def to_dict(self) -> dict:
        return {"name": self.name, "category": self.category, "total_us": round(self.total_us, 3),
                "count": self.count}

    @classmethod
    def from_dict(cls, d: Mapping) -> "KernelStat":
        return cls(str(d["name"]), float(d["total_us"]), int(d["count"]), str(d.get("category", "kernel")))


@dataclass
class PathSummary:
    fast_path: str
    total_us: float = 0.0
    share: float = 0.0  # of the step's summed kernel time, 0..1
    by_origin: dict[str, float] = field(default_factory=dict)  # origin -> microseconds
    kernels: list[tuple[str, str, float]] = field(default_factory=list)  # (name, origin, us), largest first

    @property
    def dominant(self) -> str:
        """The origin that spent the most time on this fast path."""
        return max(self.by_origin.items(), key=lambda kv: (kv[1], kv[0]))[0] if self.by_origin else "none"

    @property
    def verdict(self) -> str:
        """The kernel library (unsloth, then liger) whose kernels ran a real part of this path
        (KERNEL_MIN_SHARE), else the dominant origin."""
        for library in KERNEL_PATHS:
            if self.total_us > 0 and self.by_origin.get(library, 0.0) / self.total_us >= KERNEL_MIN_SHARE:
                return library
        return self.dominant

    def origin_shares(self) -> dict[str, float]:
        """origin -> fraction of this fast path's time, largest first."""
        if self.total_us <= 0:
            return {}
        return dict(sorted(((o, us / self.total_us) for o, us in self.by_origin.items()), key=lambda kv: -kv[1]))


@dataclass
class Classification:
    total_us: float
    paths: dict[str, PathSummary]
    by_origin: dict[str, float]  # origin -> microseconds over all paths
    unknown: list[KernelStat]  # no pattern matched, largest first
    kernel_count: int  # distinct kernel names

    @property
    def unknown_us(self) -> float:
        return sum(k.total_us for k in self.unknown)

    @property
    def unknown_share(self) -> float:
        return self.unknown_us / self.total_us if self.total_us > 0 else 0.0


def classify(kernels: Iterable[KernelStat], patterns: Optional[tuple[KernelPattern, ...]] = None) -> Classification:
    """Attribute every kernel to (origin, fast path) by the first matching pattern."""
    pats = patterns if patterns is not None else load_patterns()
    stats = list(kernels)
    total = sum(k.total_us for k in stats)
    paths: dict[str, PathSummary] = {}
    by_origin: dict[str, float] = {}
    unknown: list[KernelStat] = []
    for k in stats:
        p = match_kernel(k.name, pats)
        if p is None:
            unknown.append(k)
            continue
        s = paths.setdefault(p.fast_path, PathSummary(p.fast_path))
        s.total_us += k.total_us
        s.by_origin[p.origin] = s.by_origin.get(p.origin, 0.0) + k.total_us
        s.kernels.append((k.name, p.origin, k.total_us))
        by_origin[p.origin] = by_origin.get(p.origin, 0.0) + k.total_us
    for s in paths.values():
        s.share = s.total_us / total if total > 0 else 0.0
        s.kernels.sort(key=lambda t: -t[2])
    unknown.sort(key=lambda k: -k.total_us)
    return Classification(total, paths, by_origin, unknown, len({k.name for k in stats}))


def trace_fast_paths(c: Classification) -> dict[str, str]:
    """Compact summary from the trace alone: fast path -> label of the origin that ran it."""
    return {p: ORIGIN_LABEL[c.paths[p].verdict] for p in SUMMARY_PATHS if p in c.paths and c.paths[p].total_us > 0}


def merge_fast_paths(trace: Optional[Mapping[str, str]], static: Optional[Mapping[str, str]]) -> dict[str, str]:
    """The record's `fast_paths`: trace verdicts where measured, static ones for the rest.

    `_source` says where the values came from ("trace", "trace+static", "static").
    `lora_matmul` always comes from the static check (its GEMMs are plain cuBLAS in a trace).
    """
    out: dict[str, str] = {}
    if trace:
        out.update({k: v for k, v in trace.items() if not k.startswith("_")})
    used_static = False
    for k, v in (static or {}).items():
        if k.startswith("_") or k in out:
            continue
        out[k] = v
        used_static = True
    out["_source"] = ("trace+static" if used_static else "trace") if trace else "static"
    return out


def kernel_origin(fast_paths: Optional[Mapping[str, str]]) -> str:
    """The kernel library a summary counts: its `_origin` (set by summarize_fast_paths / analyse), else
    liger where a path ran Liger's kernels and none Unsloth's, else unsloth (summaries before Liger)."""
    fast_paths = fast_paths or {}
    origin = fast_paths.get("_origin")
    if origin in KERNEL_PATHS:
        return origin
    values = {v for k, v in fast_paths.items() if not k.startswith("_")}
    return "liger" if "liger" in values and "unsloth" not in values else "unsloth"


def count_kernel_paths(fast_paths: Mapping[str, str], origin: Optional[str] = None) -> tuple[int, int]:
    """(k, n): of the fast paths kernel library `origin` (default: kernel_origin) counts and the summary
    covers, how many ran its kernels."""
    origin = origin or kernel_origin(fast_paths)
    present = [p for p in KERNEL_PATHS[origin] if p in fast_paths]
    return sum(1 for p in present if fast_paths[p] == origin), len(present)


def count_unsloth_paths(fast_paths: Mapping[str, str]) -> tuple[int, int]:
    """(k, n): of the fast paths Unsloth has a kernel for and the summary covers, how many ran Unsloth's."""
    return count_kernel_paths(fast_paths, "unsloth")


def format_fast_paths(fast_paths: Optional[Mapping[str, str]], detail: bool = False,
                      origin: Optional[str] = None) -> str:
    """Console text: "fast paths 6/6" (Unsloth) or "Liger kernel paths 3/3", with detail the paths that
    ran other code, e.g. "fast paths 1/6 (norm compiled, ...)"; `origin` defaults to kernel_origin."""
    origin = origin or kernel_origin(fast_paths)
    label = KERNEL_COUNT_LABEL[origin]
    if not fast_paths:
        return f"{label} -"
    k, n = count_kernel_paths(fast_paths, origin)
    if n == 0:  # e.g. {"_error": ...}: the summary itself failed
        return f"{label} -" + (" (error)" if any(key.endswith("error") for key in fast_paths) else "")
    text = f"{label} {k}/{n}"
    if fast_paths.get("_source") == "static":
        text += " (static check)"
    if detail:
        fell = [f"{p} {fast_paths[p]}" for p in KERNEL_PATHS[origin] if p in fast_paths and fast_paths[p] != origin]
        if fell:
            text += " (" + ", ".join(fell) + ")"
    return text


def compare_static_trace(expected: Mapping[str, str], observed: Mapping[str, str]) -> dict[str, dict]:
    """Per fast path both sides know: {"expected", "observed", "agree"}."""
    out = {}
    for p in UNSLOTH_KERNEL_PATHS + SUMMARY_PATHS:
        if p in out or p not in expected or p not in observed:
            continue
        out[p] = {"expected": expected[p], "observed": observed[p], "agree": expected[p] == observed[p]}
    return out
