"""What the gate checks: tolerances, sizes, budgets, metrics, key fields and filters, parsed from text.

Every parser raises `GateError` (CLI exit code 2) naming the option and what to write instead.
Sizes are bytes; percentages are fractions (0.05 for 5%).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

from bench.config.recipes import DRIVERS, RECIPES
from bench.config.tiers import TIERS
from bench.schema.baseline import METRICS
from bench.schema.key import GATE_FIELDS
from bench.schema.pairs import DEFAULT_REFERENCE
from bench.schema.record import LEGACY_RECIPE, ResultsError

METRIC_LABELS = {
    "device": "peak device memory (NVML, CUDA context included)",
    "reserved": "peak reserved memory (torch caching allocator)",
    "allocated": "peak allocated memory (torch tensors)",
    "rss": "peak host RSS (a CPU proxy, not GPU memory)",
}

_BINARY = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_DECIMAL = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]+)\s*$")
_PERCENT_RE = re.compile(r"^\s*([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*%\s*$")
_OFF = ("off", "none", "no")


class GateError(ResultsError):
    """Input the gate cannot use (CLI exit code 2)."""


@dataclass(frozen=True)
class Tolerance:
    """How much a figure may grow: a fraction of the baseline ("percent") or absolute bytes."""

    kind: str  # "percent" | "bytes"
    value: float  # fraction (0.05 for 5%) or bytes
    text: str  # as the user wrote it

    def allowed(self, baseline_value: float) -> float:
        """The largest increase over `baseline_value` that still passes (same unit)."""
        return self.value * baseline_value if self.kind == "percent" else self.value

    def exceeded(self, baseline_value: float, new_value: float) -> bool:
        return new_value - baseline_value > self.allowed(baseline_value)

    def improved(self, baseline_value: float, new_value: float) -> bool:
        """A decrease larger than the tolerance (shown as an improvement)."""
        return baseline_value - new_value > self.allowed(baseline_value)


@dataclass(frozen=True)
class Budget:
    """An absolute memory limit in bytes, and how to name it ('15GiB', 't4 (NVIDIA T4 16GB: torch's total on the card)')."""

    bytes: int
    label: str


@dataclass(frozen=True)
class GateSettings:
    """Every check of one gate run; None / empty turns a check off."""

    metric: str = "device"  # a METRICS name
    max_vram_increase: Optional[Tolerance] = None
    max_slowdown: Optional[float] = None  # fraction of baseline tokens/s
    budget: Optional[Budget] = None
    ignore_key: tuple[str, ...] = ()  # GATE_FIELDS left out when matching cells
    only: dict[str, tuple[str, ...]] = field(default_factory=dict)  # field -> accepted values
    allow_env_mismatch: bool = False
    reference: str = DEFAULT_REFERENCE  # the recipe parity verdicts are against (bench.schema.pairs falls back)


def parse_percent(text: str, option: str) -> float:
    """'10%' -> 0.10; GateError for anything else (negative, missing %, not a number)."""
    m = _PERCENT_RE.match(str(text))
    if not m:
        raise GateError(f"{option} {text!r}: write a percentage such as 10%")
    value = float(m.group(1))
    if not math.isfinite(value) or value < 0:
        raise GateError(f"{option} {text!r}: must be a percentage >= 0")
    return value / 100.0


def parse_size(text: str, option: str = "size") -> int:
    """'15GiB' / '16GB' / '15360MiB' / '512MB' / '1024B' -> bytes (binary units for *iB, decimal else)."""
    raw = str(text)
    if raw.strip().startswith("-"):
        raise GateError(f"{option} {text!r}: a size cannot be negative")
    m = _SIZE_RE.match(raw)
    if not m:
        raise GateError(f"{option} {text!r}: write a size with a unit, such as 15GiB, 16GB or 512MiB")
    number, unit = float(m.group(1)), m.group(2).lower()
    factor = _BINARY.get(unit) or _DECIMAL.get(unit)
    if factor is None:
        raise GateError(f"{option} {text!r}: unknown unit {m.group(2)!r} (use B, KB, MB, GB, KiB, MiB, GiB)")
    if not math.isfinite(number):
        raise GateError(f"{option} {text!r}: not a finite size")
    return int(round(number * factor))


def parse_vram_tolerance(text: Optional[str], option: str = "--max-vram-increase") -> Optional[Tolerance]:
    """'5%' or an absolute size ('512MiB'); 'off' / None disables the check."""
    if text is None or str(text).strip().lower() in _OFF:
        return None
    if "%" in str(text):
        return Tolerance("percent", parse_percent(text, option), str(text).strip())
    try:
        float(str(text).strip())
    except ValueError:
        return Tolerance("bytes", float(parse_size(text, option)), str(text).strip())
    raise GateError(f"{option} {str(text).strip()!r}: a bare number is ambiguous: write {str(text).strip()}% for "
                    f"a percentage of the baseline, or a size such as 512MiB")


def parse_slowdown(text: Optional[str], option: str = "--max-slowdown") -> Optional[float]:
    """'10%' -> 0.10 (largest tolerated drop in tokens/s); 'off' / None disables the check."""
    if text is None or str(text).strip().lower() in _OFF:
        return None
    value = parse_percent(text, option)
    if value >= 1.0:
        raise GateError(f"{option} {text!r}: a slowdown of 100% or more would never fail; use off instead")
    return value


def parse_budget(text: str, option: str = "--vram-budget") -> Budget:
    """An absolute limit: a size ('15GiB', '16GB', '15360MiB') or a tier name (torch's total on a real card of
    that tier: what a process can allocate, bench.config.tiers.GpuTier.memory_cap_bytes)."""
    key = str(text).strip().lower()
    if key in TIERS:
        tier = TIERS[key]
        return Budget(tier.memory_cap_bytes, f"{tier.name} ({tier.marketing_name}: torch's total on the card)")
    try:
        return Budget(parse_size(text, option), str(text).strip())
    except GateError:
        raise GateError(
            f"{option} {text!r}: write a size such as 15GiB, 16GB or 15360MiB, or a tier name "
            f"({', '.join(TIERS)})"
        ) from None


def parse_metric(text: str) -> str:
    """A memory metric name (a METRICS key), case-insensitive."""
    key = str(text).strip().lower()
    if key not in METRICS:
        raise GateError(f"--metric {text!r}: use one of {', '.join(METRICS)}")
    return key


def parse_key_fields(values: Iterable[str], option: str = "--ignore-key") -> tuple[str, ...]:
    """Comma lists of key field names -> a tuple (validated against GATE_FIELDS)."""
    out: list[str] = []
    for value in values:
        for name in str(value).split(","):
            name = name.strip().replace("-", "_")
            if not name:
                continue
            if name not in GATE_FIELDS:
                raise GateError(f"{option} {name!r}: not a key field; key fields: {', '.join(GATE_FIELDS)}")
            if name not in out:
                out.append(name)
    return tuple(out)


#: Key fields whose values are names the suite knows: a misspelt one is refused, not matched to nothing.
_KNOWN_VALUES = {"recipe": tuple(RECIPES), "driver": DRIVERS, "backend": tuple(LEGACY_RECIPE)}


def parse_filters(values: Iterable[str], option: str = "--only") -> dict[str, tuple[str, ...]]:
    """['recipe=unsloth', 'seq_len=1024,2048'] -> {'recipe': ('unsloth',), 'seq_len': ('1024', '2048')}.

    Values are compared as the key holds them; packing takes true / false / none, data_sha256 a hash
    prefix of at least 8 characters or `synthetic` (no data file)."""
    out: dict[str, tuple[str, ...]] = {}
    for value in values:
        name, sep, rhs = str(value).partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name or not rhs.strip():
            raise GateError(f"{option} {value!r}: write FIELD=VALUE[,VALUE...], e.g. recipe=unsloth")
        if name not in GATE_FIELDS:
            raise GateError(f"{option} {name!r}: not a key field; key fields: {', '.join(GATE_FIELDS)}")
        wanted = tuple(v.strip() for v in rhs.split(",") if v.strip())
        unknown = [v for v in wanted if name in _KNOWN_VALUES and v not in _KNOWN_VALUES[name]]
        if unknown:
            raise GateError(f"{option} {name}={','.join(unknown)}: unknown {name}; known: "
                            f"{', '.join(_KNOWN_VALUES[name])}")
        out[name] = tuple(dict.fromkeys(out.get(name, ()) + wanted))
    return out


def parse_reference(text: str, option: str = "--reference") -> str:
    """A recipe name (bench.config.recipes) for parity verdicts to be against."""
    key = str(text).strip().lower()
    if key not in RECIPES:
        raise GateError(f"{option} {text!r}: not a recipe; recipes: {', '.join(RECIPES)}")
    return key


def filters_text(filters: dict[str, tuple[str, ...]]) -> str:
    """{'backend': ('hf',), 'seq_len': ('1024',)} -> 'backend=hf seq_len=1024' (as --only takes them)."""
    return " ".join(f"{k}={','.join(v)}" for k, v in filters.items())
