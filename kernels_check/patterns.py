"""The kernel-name table (kernel_patterns.json): load, validate, and match one name (pure).

The table's `patterns` list is what is read: per entry `id`, `regex`, `origin` (one of ORIGINS),
`fast_path` (one of TRACE_FAST_PATHS) and `source` (where the name comes from) are required,
`comment` and `examples` (names the entry must match, tests/integration/test_kernels_check.py) are optional.
Its `format` and `about` are for people reading the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

PATTERNS_FILE = Path(__file__).with_name("kernel_patterns.json")

# unsloth, liger: the kernel libraries the recipes opt into (unsloth, hf-liger); trl: TRL's own loss
# kernels, launched by every SFTTrainer run of an HF model (never counted as Liger's).
ORIGINS = ("unsloth", "liger", "trl", "inductor", "bitsandbytes", "cublas", "cudnn", "flash", "mem_efficient", "aten",
           "memcpy", "other")
# Fast paths a kernel can be attributed to from its name. `lora_matmul` is not among them: the
# LoRA GEMMs are ordinary cuBLAS kernels, so whether Unsloth's fused LoRA ran comes from the static check.
TRACE_FAST_PATHS = ("norm", "rope", "mlp_act", "nf4_dequant", "matmul", "attention", "cross_entropy", "optimizer",
                    "other")


class PatternError(ValueError):
    """A malformed kernel pattern table."""


@dataclass(frozen=True)
class KernelPattern:
    id: str
    regex: re.Pattern
    origin: str
    fast_path: str
    source: str  # file:line in the installed library the name comes from
    comment: str
    examples: tuple[str, ...]

    def matches(self, kernel_name: str) -> bool:
        return self.regex.search(kernel_name) is not None


def parse_patterns(data: dict) -> tuple[KernelPattern, ...]:
    """Validate a pattern table (the JSON's dict) and compile its regexes; raise PatternError."""
    entries = data.get("patterns")
    if not isinstance(entries, list) or not entries:
        raise PatternError("pattern table has no 'patterns' list")
    out, seen = [], set()
    for i, e in enumerate(entries):
        where = f"pattern #{i} ({e.get('id', '?')})"
        for key in ("id", "regex", "origin", "fast_path", "source"):
            if not isinstance(e.get(key), str) or not e[key]:
                raise PatternError(f"{where}: missing {key!r}")
        if e["id"] in seen:
            raise PatternError(f"{where}: duplicate id")
        seen.add(e["id"])
        if e["origin"] not in ORIGINS:
            raise PatternError(f"{where}: unknown origin {e['origin']!r} (known: {', '.join(ORIGINS)})")
        if e["fast_path"] not in TRACE_FAST_PATHS:
            raise PatternError(f"{where}: unknown fast path {e['fast_path']!r} (known: {', '.join(TRACE_FAST_PATHS)})")
        try:
            rx = re.compile(e["regex"])
        except re.error as exc:
            raise PatternError(f"{where}: bad regex: {exc}") from exc
        out.append(KernelPattern(e["id"], rx, e["origin"], e["fast_path"], e["source"], e.get("comment", ""),
                                 tuple(e.get("examples", ()))))
    return tuple(out)


@lru_cache(maxsize=1)
def load_patterns(path: Optional[str] = None) -> tuple[KernelPattern, ...]:
    """The shipped table (or `path`), parsed once."""
    p = Path(path) if path else PATTERNS_FILE
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PatternError(f"cannot read kernel pattern table {p}: {exc}") from exc
    return parse_patterns(data)


def match_kernel(kernel_name: str, patterns: Optional[tuple[KernelPattern, ...]] = None) -> Optional[KernelPattern]:
    """The first pattern matching `kernel_name`, or None (an unknown kernel)."""
    for p in patterns if patterns is not None else load_patterns():
        if p.matches(kernel_name):
            return p
    return None
