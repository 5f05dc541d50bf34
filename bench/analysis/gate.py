"""Regression gates on VRAM and speed: baselines, cell matching and comparisons (pure functions).

A *baseline* is a versioned JSON file holding, per cell key, the peak memory figures, tokens/s,
status and parity verdict of one measured run, plus the environments the figures came from and
the results files they were read from. It is written only by `save_baseline` (the explicit
`bench baseline save`); nothing here updates it.

`run_gate` matches the cells of new results against a baseline by *key* (the configuration
fields in `KEY_FIELDS`: not the cell_id, whose hash also covers steps, seed and learning rate,
which do not change memory) and returns a `GateReport` listing every regression, improvement
and note; `--vram-budget` checks hold each cell against an absolute limit. Unusable input
(missing or corrupt files, unparsable tolerances, sides that cannot be compared) raises
`GateError`, which the CLI turns into exit code 2. The CLI (bench/cli_gate.py) only parses
options and renders.

All memory figures are bytes; tokens/s are trained tokens per second.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Optional

from bench.schema.key import GATE_FIELDS, CellKey, normalised
from bench.schema.record import SCHEMA_VERSION, STATUSES, ResultRecord, ResultsError

BASELINE_FORMAT = "qlora-bench-baseline"
BASELINE_VERSION = 1

# What identifies a cell for the gate: bench.schema.key.GATE_FIELDS (what changes memory and speed;
# not steps / warmup_steps / seed / learning_rate, which are in the cell_id hash).
KEY_FIELDS = GATE_FIELDS
# --metric name -> record field (bytes)
METRICS = {
    "device": "peak_device_bytes",
    "reserved": "peak_reserved_bytes",
    "allocated": "peak_allocated_bytes",
    "rss": "peak_rss_bytes",
}
METRIC_LABELS = {
    "device": "peak device memory (NVML, CUDA context included)",
    "reserved": "peak reserved memory (torch caching allocator)",
    "allocated": "peak allocated memory (torch tensors)",
    "rss": "peak host RSS (a CPU proxy, not GPU memory)",
}
# When a GPU metric is null on a cell (e.g. NVML unavailable), the comparison falls back to the
# next GPU metric present on both sides, and says so. Never to RSS: that is host memory.
GPU_FALLBACK = {"device": ("reserved", "allocated"), "reserved": ("allocated",), "allocated": (), "rss": ()}
DID_NOT_FIT = ("oom", "skipped")  # skipped: dominated by a cell that ran out of memory
CRASHED = ("error", "timeout")

_BINARY = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_DECIMAL = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]+)\s*$")
_PERCENT_RE = re.compile(r"^\s*([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*%\s*$")
_OFF = ("off", "none", "no")


class GateError(ResultsError):
    """Input the gate cannot use (CLI exit code 2)."""


# ---------------------------------------------------------------------------------------------
# parsing


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
    return Tolerance("bytes", float(parse_size(text, option)), str(text).strip())


def parse_slowdown(text: Optional[str], option: str = "--max-slowdown") -> Optional[float]:
    """'10%' -> 0.10 (largest tolerated drop in tokens/s); 'off' / None disables the check."""
    if text is None or str(text).strip().lower() in _OFF:
        return None
    value = parse_percent(text, option)
    if value >= 1.0:
        raise GateError(f"{option} {text!r}: a slowdown of 100% or more would never fail; use off instead")
    return value


@dataclass(frozen=True)
class Budget:
    bytes: int
    label: str  # "15GiB" or "t4 (NVIDIA T4 16GB usable VRAM)"


def parse_budget(text: str, option: str = "--vram-budget") -> Budget:
    """An absolute limit: a size ('15GiB', '16GB', '15360MiB') or a tier name (its usable VRAM)."""
    from bench.config.tiers import TIERS

    key = str(text).strip().lower()
    if key in TIERS:
        tier = TIERS[key]
        return Budget(tier.usable_vram_bytes, f"{tier.name} ({tier.marketing_name}: usable VRAM)")
    try:
        return Budget(parse_size(text, option), str(text).strip())
    except GateError:
        raise GateError(
            f"{option} {text!r}: write a size such as 15GiB, 16GB or 15360MiB, or a tier name "
            f"({', '.join(TIERS)})"
        ) from None


def parse_metric(text: str) -> str:
    key = str(text).strip().lower()
    if key not in METRICS:
        raise GateError(f"--metric {text!r}: use one of {', '.join(METRICS)}")
    return key


def parse_key_fields(values: Iterable[str], option: str = "--ignore-key") -> tuple[str, ...]:
    """Comma lists of key field names -> a tuple (validated against KEY_FIELDS)."""
    out: list[str] = []
    for value in values:
        for name in str(value).split(","):
            name = name.strip().replace("-", "_")
            if not name:
                continue
            if name not in KEY_FIELDS:
                raise GateError(f"{option} {name!r}: not a key field; key fields: {', '.join(KEY_FIELDS)}")
            if name not in out:
                out.append(name)
    return tuple(out)


def parse_filters(values: Iterable[str], option: str = "--only") -> dict[str, tuple[str, ...]]:
    """['backend=hf', 'seq_len=1024,2048'] -> {'backend': ('hf',), 'seq_len': ('1024', '2048')}."""
    out: dict[str, tuple[str, ...]] = {}
    for value in values:
        name, sep, rhs = str(value).partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name or not rhs.strip():
            raise GateError(f"{option} {value!r}: write FIELD=VALUE[,VALUE...], e.g. backend=hf")
        if name not in KEY_FIELDS:
            raise GateError(f"{option} {name!r}: not a key field; key fields: {', '.join(KEY_FIELDS)}")
        wanted = tuple(v.strip() for v in rhs.split(",") if v.strip())
        out[name] = tuple(dict.fromkeys(out.get(name, ()) + wanted))
    return out


# ---------------------------------------------------------------------------------------------
# cells, snapshots and baselines


@dataclass
class CellFigures:
    """What the gate knows about one measured cell (from a record or a baseline file)."""

    key: dict[str, Any]  # KEY_FIELDS -> value
    cell_id: str
    status: str
    run_id: Optional[str] = None
    peak_allocated_bytes: Optional[int] = None
    peak_reserved_bytes: Optional[int] = None
    peak_device_bytes: Optional[int] = None
    peak_rss_bytes: Optional[int] = None
    device_memory_source: Optional[str] = None
    tokens_per_s: Optional[float] = None
    matched: Optional[bool] = None
    error: Optional[str] = None
    env_index: int = 0  # into the snapshot's envs

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def memory(self, metric: str) -> Optional[int]:
        return getattr(self, METRICS[metric])

    @property
    def label(self) -> str:
        return cell_label(self.key)


def cell_key(key: dict[str, Any], ignore: Iterable[str] = ()) -> tuple:
    """The hashable matching key of a cell, leaving out the `ignore`d fields."""
    return CellKey.of(key).view(KEY_FIELDS, ignore)


def cell_label(key: dict[str, Any]) -> str:
    """'hf llama-3.1-8b s1024 b1' (+ ' ga4' where gradient accumulation is used)."""
    return CellKey.of(key).label


def figures_from_record(record: ResultRecord, env_index: int = 0) -> CellFigures:
    return CellFigures(
        key=CellKey.of(record).as_dict(KEY_FIELDS),
        cell_id=record.cell_id,
        status=record.status,
        run_id=record.run_id,
        peak_allocated_bytes=record.peak_allocated_bytes,
        peak_reserved_bytes=record.peak_reserved_bytes,
        peak_device_bytes=record.peak_device_bytes,
        peak_rss_bytes=record.peak_rss_bytes,
        device_memory_source=record.device_memory_source,
        tokens_per_s=record.tokens_per_s,
        matched=record.matched,
        error=(record.error or "").strip().splitlines()[-1][:200] if record.error else None,
        env_index=env_index,
    )


@dataclass
class Snapshot:
    """The cells of one side of a gate (a baseline, or new results), with their environments."""

    cells: list[CellFigures]
    envs: list[dict[str, Any]]
    sources: list[str]
    created_at: Optional[str] = None
    path: Optional[str] = None  # the baseline file it was loaded from

    def env_of(self, cell: CellFigures) -> dict[str, Any]:
        return self.envs[cell.env_index] if 0 <= cell.env_index < len(self.envs) else {}


def snapshot_from_records(records: list[ResultRecord], sources: Iterable[str]) -> Snapshot:
    """One side from records (as `bench.schema.store.load` returns them: latest per cell, parity propagated)."""
    envs: list[dict[str, Any]] = []
    env_ids: dict[str, int] = {}
    cells = []
    for record in records:
        env_json = json.dumps(record.env, sort_keys=True, default=str)
        if env_json not in env_ids:
            env_ids[env_json] = len(envs)
            envs.append(record.env)
        cells.append(figures_from_record(record, env_ids[env_json]))
    return Snapshot(cells=cells, envs=envs, sources=[str(s) for s in sources])


def index_by_key(cells: list[CellFigures], ignore: Iterable[str], side: str) -> dict[tuple, CellFigures]:
    """Cells by matching key; GateError when two cells of one side share a key (ambiguous)."""
    ignore = tuple(ignore)
    out: dict[tuple, CellFigures] = {}
    for cell in cells:
        k = cell_key(cell.key, ignore)
        if k in out:
            hint = f" once {', '.join(ignore)} {'is' if len(ignore) == 1 else 'are'} ignored" if ignore else ""
            raise GateError(
                f"{side}: cells {out[k].cell_id} and {cell.cell_id} have the same key{hint}; "
                f"the gate cannot tell which to compare (use --only to select one)"
            )
        out[k] = cell
    return out


def baseline_from_records(records: list[ResultRecord], sources: Iterable[str]) -> Snapshot:
    """A baseline snapshot; GateError if two records share a key (say, two seeds of one cell)."""
    if not records:
        raise GateError("no records to save in a baseline")
    snap = snapshot_from_records(records, sources)
    index_by_key(snap.cells, (), "results")
    snap.created_at = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    return snap


def baseline_to_dict(snap: Snapshot) -> dict[str, Any]:
    import bench

    return {
        "format": BASELINE_FORMAT,
        "version": BASELINE_VERSION,
        "created_at": snap.created_at,
        "suite_version": bench.__version__,
        "results_schema_version": SCHEMA_VERSION,
        "key_fields": list(KEY_FIELDS),
        "sources": list(snap.sources),
        "envs": snap.envs,
        "cells": [asdict(c) for c in snap.cells],
    }


def save_baseline(snap: Snapshot, path: Path) -> Path:
    """Write a baseline file (JSON, stable order) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(baseline_to_dict(snap), indent=2, sort_keys=False, allow_nan=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


_CELL_REQUIRED = ("key", "cell_id", "status")


def baseline_from_dict(data: Any, where: str) -> Snapshot:
    """Validate a parsed baseline file; GateError naming what is wrong."""
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        raise GateError(f"{where} is not a qlora-bench baseline (no \"format\": \"{BASELINE_FORMAT}\")")
    version = data.get("version")
    if version != BASELINE_VERSION:
        raise GateError(f"{where}: baseline version {version!r}, this qlora-bench reads {BASELINE_VERSION}")
    cells_data = data.get("cells")
    envs = data.get("envs")
    if not isinstance(cells_data, list) or not cells_data:
        raise GateError(f"{where}: baseline holds no cells")
    if not isinstance(envs, list) or not all(isinstance(e, dict) for e in envs):
        raise GateError(f"{where}: \"envs\" must be a list of objects")
    known = {f for f in CellFigures.__dataclass_fields__}
    cells = []
    for i, c in enumerate(cells_data):
        if not isinstance(c, dict):
            raise GateError(f"{where}: cell {i} is not an object")
        missing = [k for k in _CELL_REQUIRED if k not in c]
        unknown = sorted(set(c) - known)
        if missing or unknown:
            raise GateError(f"{where}: cell {i}: " + (f"missing {missing}" if missing else f"unknown fields {unknown}"))
        key = c["key"]
        if not isinstance(key, dict) or any(name not in key for name in KEY_FIELDS):
            raise GateError(f"{where}: cell {i} ({c.get('cell_id')}): key must hold {', '.join(KEY_FIELDS)}")
        cell = CellFigures(**c)
        if cell.status not in STATUSES:
            raise GateError(f"{where}: cell {cell.cell_id}: unknown status {cell.status!r}")
        for metric in METRICS.values():
            v = getattr(cell, metric)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise GateError(f"{where}: cell {cell.cell_id}: {metric} must be a whole number of bytes")
        if not 0 <= cell.env_index < len(envs):
            raise GateError(f"{where}: cell {cell.cell_id}: env_index {cell.env_index} out of range")
        cells.append(cell)
    snap = Snapshot(cells=cells, envs=envs, sources=[str(s) for s in data.get("sources") or []],
                    created_at=data.get("created_at"), path=where)
    index_by_key(snap.cells, (), f"baseline {where}")
    return snap


def load_baseline(path: Path) -> Snapshot:
    """Read and validate a baseline file; GateError (exit 2) when missing or corrupt."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GateError(f"baseline {path} not found (create one with `bench baseline save RESULTS --out {path}`)") from None
    except OSError as exc:
        raise GateError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GateError(f"baseline {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return baseline_from_dict(data, str(path))


# ---------------------------------------------------------------------------------------------
# filters and environments


def _value_matches(actual: Any, wanted: str) -> bool:
    if isinstance(actual, (list, tuple)):
        return ",".join(actual) == wanted or wanted in actual
    if str(actual) == wanted:
        return True
    try:
        return float(actual) == float(wanted)
    except (TypeError, ValueError):
        return False


def filter_cells(cells: list[CellFigures], filters: dict[str, tuple[str, ...]]) -> list[CellFigures]:
    """Cells whose key matches every filter (any of a field's values)."""
    return [c for c in cells if all(any(_value_matches(c.key.get(f), w) for w in ws) for f, ws in filters.items())]


def _gpu_names(snap: Snapshot, cells: list[CellFigures]) -> list[str]:
    return sorted({str(snap.env_of(c).get("gpu_name") or "none (cpu)") for c in cells})


def _versions(snap: Snapshot, cells: list[CellFigures]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for c in cells:
        env = snap.env_of(c)
        for name, version in (env.get("packages") or {}).items():
            out.setdefault(name, set()).add(str(version) if version is not None else "absent")
        for name in ("driver", "cuda", "python"):
            if name in env:
                out.setdefault(name, set()).add(str(env[name]) if env[name] is not None else "absent")
    return out


def env_differences(base: Snapshot, base_cells: list[CellFigures], new: Snapshot,
                    new_cells: list[CellFigures]) -> tuple[Optional[str], list[str]]:
    """(GPU mismatch line or None, library/driver difference lines) between the two sides."""
    gpu_line = None
    base_gpus, new_gpus = _gpu_names(base, base_cells), _gpu_names(new, new_cells)
    if base_gpus != new_gpus:
        gpu_line = f"GPU differs: baseline {' / '.join(base_gpus)}, results {' / '.join(new_gpus)}"
    libs = []
    base_v, new_v = _versions(base, base_cells), _versions(new, new_cells)
    for name in sorted(set(base_v) | set(new_v)):
        b, n = base_v.get(name, {"absent"}), new_v.get(name, {"absent"})
        if b != n:
            libs.append(f"{name} {'/'.join(sorted(b))} → {'/'.join(sorted(n))}")
    return gpu_line, libs


# ---------------------------------------------------------------------------------------------
# the gate


@dataclass(frozen=True)
class GateSettings:
    metric: str = "device"
    max_vram_increase: Optional[Tolerance] = None
    max_slowdown: Optional[float] = None  # fraction of baseline tokens/s
    budget: Optional[Budget] = None
    ignore_key: tuple[str, ...] = ()
    only: dict[str, tuple[str, ...]] = field(default_factory=dict)
    allow_env_mismatch: bool = False


@dataclass
class Finding:
    severity: str  # "regression" | "improvement" | "info"
    kind: str  # vram | slowdown | status | crashed | missing | parity | budget | new | note
    cell_id: str
    label: str
    message: str


@dataclass
class CellRow:
    """One line of the gate's table: a baseline cell, a new cell, or both matched by key."""

    label: str
    cell_id: str  # the new cell's id, or the baseline's for a missing cell
    baseline: Optional[CellFigures]
    new: Optional[CellFigures]
    metric: Optional[str] = None  # metric actually compared (after any fallback)
    baseline_bytes: Optional[int] = None
    new_bytes: Optional[int] = None
    baseline_tokens_per_s: Optional[float] = None
    new_tokens_per_s: Optional[float] = None
    key_differences: list[str] = field(default_factory=list)  # ignored key fields that differ
    findings: list[Finding] = field(default_factory=list)

    @property
    def memory_change(self) -> Optional[float]:
        if self.baseline_bytes and self.new_bytes is not None:
            return self.new_bytes / self.baseline_bytes - 1.0
        return None

    @property
    def speed_change(self) -> Optional[float]:
        if self.baseline_tokens_per_s and self.new_tokens_per_s is not None:
            return self.new_tokens_per_s / self.baseline_tokens_per_s - 1.0
        return None

    @property
    def verdict(self) -> str:
        if any(f.severity == "regression" for f in self.findings):
            return "regression"
        if any(f.severity == "improvement" for f in self.findings):
            return "improvement"
        return "ok"


@dataclass
class GateReport:
    settings: GateSettings
    rows: list[CellRow]
    warnings: list[str]
    results_sources: list[str]
    baseline_path: Optional[str] = None
    baseline_created_at: Optional[str] = None
    baseline_cells: int = 0
    results_cells: int = 0
    gpus: list[str] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return [f for row in self.rows for f in row.findings]

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "regression"]

    @property
    def improvements(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "improvement"]

    @property
    def passed(self) -> bool:
        return not self.regressions

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "passed": self.passed,
            "exit_code": self.exit_code,
            "metric": s.metric,
            "metric_label": METRIC_LABELS[s.metric],
            "max_vram_increase": s.max_vram_increase.text if s.max_vram_increase else None,
            "max_slowdown": s.max_slowdown,
            "vram_budget": {"bytes": s.budget.bytes, "label": s.budget.label} if s.budget else None,
            "ignored_key_fields": list(s.ignore_key),
            "only": {k: list(v) for k, v in s.only.items()},
            "allow_env_mismatch": s.allow_env_mismatch,
            "baseline": None if self.baseline_path is None else {
                "path": self.baseline_path, "created_at": self.baseline_created_at, "cells": self.baseline_cells},
            "results": {"paths": self.results_sources, "cells": self.results_cells},
            "gpus": self.gpus,
            "warnings": self.warnings,
            "regressions": [asdict(f) for f in self.regressions],
            "improvements": [asdict(f) for f in self.improvements],
            "cells": [
                {
                    "label": r.label, "cell_id": r.cell_id,
                    "baseline_cell_id": r.baseline.cell_id if r.baseline else None,
                    "baseline_status": r.baseline.status if r.baseline else None,
                    "status": r.new.status if r.new else None,
                    "metric": r.metric, "baseline_bytes": r.baseline_bytes, "new_bytes": r.new_bytes,
                    "memory_change": r.memory_change,
                    "baseline_tokens_per_s": r.baseline_tokens_per_s, "new_tokens_per_s": r.new_tokens_per_s,
                    "speed_change": r.speed_change, "key_differences": r.key_differences,
                    "verdict": r.verdict, "findings": [asdict(f) for f in r.findings],
                }
                for r in self.rows
            ],
        }


def format_bytes(n: Optional[float]) -> str:
    """Bytes for people: '9.12 GiB', '512 MiB'."""
    if n is None:
        return "-"
    sign = "-" if n < 0 else ""
    n = abs(n)
    if n >= 1024**3:
        return f"{sign}{n / 1024**3:.2f} GiB"
    if n >= 1024**2:
        return f"{sign}{n / 1024**2:.0f} MiB"
    if n >= 1024:
        return f"{sign}{n / 1024:.0f} KiB"
    return f"{sign}{n:.0f} B"


def format_change(fraction: Optional[float]) -> str:
    return "-" if fraction is None else f"{fraction * 100:+.1f}%"


def _pick_metric(base: CellFigures, new: CellFigures, metric: str) -> Optional[tuple[str, int, int]]:
    for name in (metric, *GPU_FALLBACK[metric]):
        b, n = base.memory(name), new.memory(name)
        if b is not None and n is not None:
            return name, b, n
    return None


def _no_memory_error(cell: CellFigures, metric: str, disable: str = "--max-vram-increase off") -> GateError:
    field_name = METRICS[metric]
    why = "cpu-mode records carry no GPU memory figures" if cell.key.get("mode") == "cpu" else \
        "the record has no GPU memory figure"
    hint = "pass --metric rss to gate on peak host RSS (a CPU proxy)" if metric != "rss" else "re-run the cell"
    return GateError(f"cell {cell.cell_id} has no {field_name} ({why}): {hint}, or {disable}")


def _compare_cell(row: CellRow, s: GateSettings) -> None:
    base, new = row.baseline, row.new
    add = row.findings.append
    if new is None:
        add(Finding("regression", "missing", row.cell_id, row.label,
                    f"in the baseline ({base.status}) but missing from the results"))
        return
    if base is None:
        add(Finding("info", "new", row.cell_id, row.label, "new cell: not in the baseline, nothing to compare"))
    if new.status in CRASHED:
        was = f"{base.status} in the baseline, now " if base else ""
        detail = f": {new.error}" if new.error else ""
        add(Finding("regression", "crashed", row.cell_id, row.label, f"{was}{new.status}{detail}"))
    if base is not None:
        if base.ok and new.status in DID_NOT_FIT:
            add(Finding("regression", "status", row.cell_id, row.label,
                        f"ok in the baseline, now {new.status}" + (" (out of memory)" if new.status == "oom" else
                                                                 " (dominated by an out-of-memory cell)")))
        elif not base.ok and new.ok:
            add(Finding("improvement", "status", row.cell_id, row.label,
                        f"{base.status} in the baseline, now ok (no figures to compare against)"))
        if base.ok and new.ok:
            _compare_figures(row, s)
    if new.matched is False:
        also = " (already failing in the baseline)" if base is not None and base.matched is False else ""
        add(Finding("regression", "parity", row.cell_id, row.label,
                    f"parity check failed: the hf/unsloth comparison of this cell is not matched{also}"))


def _compare_figures(row: CellRow, s: GateSettings) -> None:
    base, new = row.baseline, row.new
    assert base is not None and new is not None
    add = row.findings.append
    picked = _pick_metric(base, new, s.metric)
    if picked is None:
        if s.max_vram_increase is not None:
            raise _no_memory_error(new if new.memory(s.metric) is None else base, s.metric)
    else:
        row.metric, row.baseline_bytes, row.new_bytes = picked
        if row.metric != s.metric:
            add(Finding("info", "note", row.cell_id, row.label,
                        f"{METRICS[s.metric]} not recorded on both sides: compared on {METRICS[row.metric]}"))
        tol = s.max_vram_increase
        if tol is not None:
            b, n = row.baseline_bytes, row.new_bytes
            what = f"{format_bytes(b)} → {format_bytes(n)} ({format_change(row.memory_change)}) on {row.metric}"
            if tol.exceeded(b, n):
                add(Finding("regression", "vram", row.cell_id, row.label,
                            f"VRAM increase {format_bytes(n - b)}: {what}, over the {tol.text} tolerance"
                            if row.metric != "rss" else
                            f"peak RSS increase {format_bytes(n - b)}: {what}, over the {tol.text} tolerance"))
            elif tol.improved(b, n):
                add(Finding("improvement", "vram", row.cell_id, row.label, f"memory down: {what}"))
    row.baseline_tokens_per_s, row.new_tokens_per_s = base.tokens_per_s, new.tokens_per_s
    if s.max_slowdown is not None:
        if not base.tokens_per_s or new.tokens_per_s is None:
            missing = base if not base.tokens_per_s else new
            raise GateError(f"cell {missing.cell_id} is ok but has no tokens_per_s: cannot gate on speed")
        change = row.speed_change
        what = f"{base.tokens_per_s:,.0f} → {new.tokens_per_s:,.0f} tokens/s ({format_change(change)})"
        if -change > s.max_slowdown:
            add(Finding("regression", "slowdown", row.cell_id, row.label,
                        f"slowdown: {what}, over the {s.max_slowdown * 100:g}% tolerance"))
        elif change > s.max_slowdown:
            add(Finding("improvement", "slowdown", row.cell_id, row.label, f"faster: {what}"))


def _check_budget(row: CellRow, budget: Budget, metric: str) -> None:
    new = row.new
    if new is None:
        return
    add = row.findings.append
    if new.status in DID_NOT_FIT:
        add(Finding("regression", "budget", row.cell_id, row.label,
                    f"{new.status}: does not fit the {budget.label} budget"))
        return
    if not new.ok:
        return  # crashed: already a regression of its own
    value, used = None, metric
    for name in (metric, *GPU_FALLBACK[metric]):
        if new.memory(name) is not None:
            value, used = new.memory(name), name
            break
    if value is None:
        raise _no_memory_error(new, metric, disable="drop --vram-budget")
    if row.new_bytes is None:
        row.metric, row.new_bytes = used, value
    note = "" if used == metric else f" ({METRICS[metric]} not recorded: {METRICS[used]} used)"
    if value > budget.bytes:
        add(Finding("regression", "budget", row.cell_id, row.label,
                    f"{used} peak {format_bytes(value)} is over the {budget.label} budget "
                    f"({format_bytes(budget.bytes)}) by {format_bytes(value - budget.bytes)}{note}"))


def _key_differences(base: CellFigures, new: CellFigures, ignore: tuple[str, ...]) -> list[str]:
    out = []
    for name in ignore:
        b, n = normalised(name, base.key.get(name)), normalised(name, new.key.get(name))
        if b != n:
            fmt = (lambda v: ",".join(v)) if name == "target_modules" else str
            out.append(f"{name} {fmt(b)} → {fmt(n)}")
    return out


def _no_overlap_error(base_cells: list[CellFigures], new_cells: list[CellFigures], ignore: tuple[str, ...]) -> GateError:
    differing = []
    for name in KEY_FIELDS:
        if name in ignore:
            continue
        b = {repr(normalised(name, c.key.get(name))) for c in base_cells}
        n = {repr(normalised(name, c.key.get(name))) for c in new_cells}
        if not b & n:
            show = lambda vs: "/".join(sorted(v.strip("'") for v in vs))  # noqa: E731
            differing.append((name, f"{name} (baseline {show(b)}; results {show(n)})"))
    if differing:
        names = ",".join(name for name, _ in differing)
        return GateError(
            f"none of the {len(new_cells)} result cells matches one of the {len(base_cells)} baseline cells: "
            f"they differ in {'; '.join(text for _, text in differing)}. To compare a changed recipe with the "
            f"baseline, pass --ignore-key {names}; otherwise gate against a baseline of this configuration"
        )
    return GateError(f"none of the {len(new_cells)} result cells matches one of the {len(base_cells)} baseline "
                     f"cells by key ({', '.join(KEY_FIELDS)})")


def run_gate(new: Snapshot, baseline: Optional[Snapshot], settings: GateSettings) -> GateReport:
    """Compare `new` with `baseline` (if any) and/or a budget; GateError on unusable input."""
    s = settings
    if baseline is None and s.budget is None:
        raise GateError("nothing to gate: give --baseline FILE and/or --vram-budget SIZE")
    new_cells = filter_cells(new.cells, s.only)
    only_text = " ".join(f"{k}={','.join(v)}" for k, v in s.only.items())
    if not new_cells:
        raise GateError(f"no result cell matches --only {only_text}")
    report = GateReport(settings=s, rows=[], warnings=[], results_sources=list(new.sources),
                        results_cells=len(new_cells), gpus=_gpu_names(new, new_cells))
    if baseline is not None:
        base_cells = filter_cells(baseline.cells, s.only)
        if not base_cells:
            raise GateError(f"no baseline cell matches --only {only_text}")
        report.baseline_path, report.baseline_created_at = baseline.path, baseline.created_at
        report.baseline_cells = len(base_cells)
        gpu_line, libs = env_differences(baseline, base_cells, new, new_cells)
        if gpu_line and not s.allow_env_mismatch:
            raise GateError(f"{gpu_line}: memory and speed are not comparable across GPUs; "
                            f"pass --allow-env-mismatch to compare anyway")
        if gpu_line:
            report.warnings.append(f"{gpu_line} (compared anyway: --allow-env-mismatch)")
        if libs:
            report.warnings.append("library versions differ from the baseline: " + "; ".join(libs))
        base_index = index_by_key(base_cells, s.ignore_key, f"baseline {baseline.path or ''}".strip())
        new_index = index_by_key(new_cells, s.ignore_key, "results")
        if not set(base_index) & set(new_index):
            raise _no_overlap_error(base_cells, new_cells, s.ignore_key)
        for k, base in base_index.items():
            cell = new_index.get(k)
            row = CellRow(label=base.label, cell_id=cell.cell_id if cell else base.cell_id, baseline=base, new=cell)
            if cell is not None and s.ignore_key:
                row.key_differences = _key_differences(base, cell, s.ignore_key)
                row.label = cell.label
            report.rows.append(row)
        for k, cell in new_index.items():
            if k not in base_index:
                report.rows.append(CellRow(label=cell.label, cell_id=cell.cell_id, baseline=None, new=cell))
        for row in report.rows:
            _compare_cell(row, s)
    else:
        for cell in new_cells:
            row = CellRow(label=cell.label, cell_id=cell.cell_id, baseline=None, new=cell)
            if cell.status in CRASHED:
                row.findings.append(Finding("regression", "crashed", cell.cell_id, cell.label,
                                            f"{cell.status}" + (f": {cell.error}" if cell.error else "")))
            if cell.matched is False:
                row.findings.append(Finding("regression", "parity", cell.cell_id, cell.label,
                                            "parity check failed: the hf/unsloth comparison is not matched"))
            report.rows.append(row)
    if s.budget is not None:
        for row in report.rows:
            _check_budget(row, s.budget, s.metric)
    if s.metric == "rss":
        report.warnings.append("gating on peak host RSS (--metric rss): a CPU proxy, not GPU memory")
    return report


# ---------------------------------------------------------------------------------------------
# markdown


_VERDICT_MD = {"regression": "FAIL", "improvement": "better", "ok": "ok"}


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def header_lines(report: GateReport) -> list[str]:
    """Plain-text lines that say what was compared with what (shared by terminal and markdown)."""
    s = report.settings
    lines = []
    if report.baseline_path is not None:
        lines.append(f"baseline {report.baseline_path} ({report.baseline_cells} cells"
                     + (f", saved {report.baseline_created_at}" if report.baseline_created_at else "") + ")")
    lines.append(f"results {', '.join(report.results_sources)} ({report.results_cells} cells"
                 + (f", GPU {' / '.join(report.gpus)}" if report.gpus else "") + ")")
    checks = [f"metric: {METRIC_LABELS[s.metric]}"]
    if report.baseline_path is not None:
        checks.append(f"max VRAM increase: {s.max_vram_increase.text if s.max_vram_increase else 'off'}")
        checks.append(f"max slowdown: {f'{s.max_slowdown * 100:g}%' if s.max_slowdown is not None else 'off'}")
    if s.budget is not None:
        checks.append(f"VRAM budget: {format_bytes(s.budget.bytes)} = {s.budget.label}")
    lines.append("; ".join(checks))
    if s.ignore_key:
        lines.append(f"cells matched ignoring: {', '.join(s.ignore_key)}")
    if s.only:
        lines.append("gated subset: " + " ".join(f"{k}={','.join(v)}" for k, v in s.only.items()))
    return lines


def render_markdown(report: GateReport) -> str:
    """The gate's verdict, settings, warnings, table and findings as GitHub-flavoured markdown."""
    n_reg, n_imp = len(report.regressions), len(report.improvements)
    verdict = "PASS" if report.passed else f"FAIL ({n_reg} regression{'s' if n_reg != 1 else ''})"
    out = [f"### qlora-bench gate: {verdict}", ""]
    out += [f"- {_md_escape(line)}" for line in header_lines(report)]
    out.append("")
    for w in report.warnings:
        out.append(f"> **warning:** {_md_escape(w)}")
        out.append("")
    with_baseline = report.baseline_path is not None
    metric_name = report.settings.metric
    if with_baseline:
        out.append(f"| cell | status | {metric_name} baseline → new | change | tokens/s baseline → new | change | verdict |")
        out.append("|---|---|---|---:|---|---:|---|")
    else:
        out.append(f"| cell | status | {metric_name} peak | verdict |")
        out.append("|---|---|---|---|")
    for row in report.rows:
        cell = f"{_md_escape(row.label)}<br>`{row.cell_id}`"
        if row.key_differences:
            cell += "<br>" + _md_escape("; ".join(row.key_differences))
        status_new = row.new.status if row.new else "missing"
        metric_note = "" if row.metric in (None, metric_name) else f" ({row.metric})"
        verdict_text = _VERDICT_MD[row.verdict]
        kinds = sorted({f.kind for f in row.findings if f.severity == row.verdict})
        if kinds and row.verdict != "ok":
            verdict_text += ": " + ", ".join(kinds)
        if with_baseline:
            status = f"{row.baseline.status if row.baseline else 'new'} → {status_new}"
            tps = "-" if row.baseline_tokens_per_s is None and row.new_tokens_per_s is None else \
                f"{_num(row.baseline_tokens_per_s)} → {_num(row.new_tokens_per_s)}"
            out.append(f"| {cell} | {status} | {format_bytes(row.baseline_bytes)} → {format_bytes(row.new_bytes)}"
                       f"{metric_note} | {format_change(row.memory_change)} | {tps} | {format_change(row.speed_change)} "
                       f"| {verdict_text} |")
        else:
            out.append(f"| {cell} | {status_new} | {format_bytes(row.new_bytes)}{metric_note} | {verdict_text} |")
    out.append("")
    if report.regressions:
        out.append("**Regressions**")
        out.append("")
        out += [f"- `{f.cell_id}` ({f.kind}): {_md_escape(f.message)}" for f in report.regressions]
        out.append("")
    if n_imp:
        out.append("**Improvements**")
        out.append("")
        out += [f"- `{f.cell_id}` ({f.kind}): {_md_escape(f.message)}" for f in report.improvements]
        out.append("")
    notes = [f for f in report.findings if f.severity == "info"]
    if notes:
        out.append("**Notes**")
        out.append("")
        out += [f"- `{f.cell_id}`: {_md_escape(f.message)}" for f in notes]
        out.append("")
    return "\n".join(out) + "\n"


def _num(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:,.0f}"
