"""The gate's comparison: new cells against a baseline and/or a budget, as structured findings.

`run_gate` matches the cells of new results against a baseline by *key* (`GATE_FIELDS`: not the
cell_id, whose hash also covers steps, seed and learning rate, which do not change memory) and
returns a `GateReport`: one `CellRow` per cell with its `Finding`s (regressions, improvements,
notes). A finding holds the figures it is about (`facts`); bench.render.gate words it.

Speed (`--max-slowdown`): where both sides carry per-step samples (`CellFigures.step_rates`), a cell's
tokens/s is its median per-step rate and the rule reads the 95 % interval of new / baseline
(bench.analysis.speed.ratio_of_rates): a slowdown fails only when the whole interval lies below
1 - max_slowdown (an improvement: above 1 + max_slowdown), so run-to-run noise of an unchanged recipe
passes and a real slowdown fails. Without samples on a side (a version-2 baseline, a cell with one timed
step) the point rule on tokens/s applies, and the report says so.

Pure: no file IO, no clock. Memory figures are bytes; tokens/s are trained tokens per second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from bench.analysis.gate.options import GateError, GateSettings, filters_text
from bench.analysis.speed import median_of_rates, ratio_of_rates
from bench.analysis.stats import Interval
from bench.schema.baseline import METRICS, CellFigures, Snapshot, index_by_key
from bench.schema.key import GATE_FIELDS, normalised

# When a GPU metric is null on a cell (e.g. NVML unavailable), the comparison falls back to the
# next GPU metric present on both sides, and says so. Never to RSS: that is host memory.
GPU_FALLBACK = {"device": ("reserved", "allocated"), "reserved": ("allocated",), "allocated": (), "rss": ()}
DID_NOT_FIT = ("oom", "skipped")  # skipped: dominated by a cell that ran out of memory
CRASHED = ("error", "timeout")


@dataclass
class Finding:
    """One thing the gate found about a cell.

    `facts` holds what the message states, by kind (bytes, tokens/s, fractions):
    missing: baseline_status; crashed: baseline_status (None without one), status, error;
    status: status (regression) or baseline_status (improvement); parity: recipe, reference (the
    recipe it was compared with; the cell is the reference when they are equal), reasons, baseline_unmatched;
    note: metric, used; vram: metric, baseline_bytes, new_bytes, change, tolerance (text);
    slowdown: baseline_tokens_per_s, new_tokens_per_s, change, tolerance (fraction), rule ("interval" |
    "point"), low / high (the change's 95 % interval, interval rule) or why_point (point rule); severity
    "info": the point change is past the tolerance but the interval reaches within it (noise, not a regression);
    budget: status (did not fit) or metric, used, bytes, budget_bytes; and budget (its label).
    """

    severity: str  # "regression" | "improvement" | "info"
    kind: str  # vram | slowdown | status | crashed | missing | parity | budget | new | note
    cell_id: str
    label: str
    facts: dict[str, Any] = field(default_factory=dict)


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
    baseline_tokens_per_s: Optional[float] = None  # median per-step rate (interval rule), else the record's
    new_tokens_per_s: Optional[float] = None
    speed_ratio: Optional[Interval] = None  # new / baseline median per-step tokens/s and its 95 % interval
    speed_rule: Optional[str] = None  # "interval" | "point" (no samples on a side: tokens/s compared as figures)
    why_point: Optional[str] = None  # why the point rule was used
    key_differences: list[str] = field(default_factory=list)  # ignored key fields that differ
    findings: list[Finding] = field(default_factory=list)

    def add(self, severity: str, kind: str, **facts: Any) -> None:
        self.findings.append(Finding(severity, kind, self.cell_id, self.label, facts))

    @property
    def memory_change(self) -> Optional[float]:
        """new / baseline - 1 of the compared memory figure."""
        if self.baseline_bytes and self.new_bytes is not None:
            return self.new_bytes / self.baseline_bytes - 1.0
        return None

    @property
    def speed_change(self) -> Optional[float]:
        """new / baseline - 1 of tokens/s (of the median per-step rates under the interval rule)."""
        if self.speed_ratio is not None and self.speed_ratio.estimate is not None:
            return self.speed_ratio.estimate - 1.0
        if self.baseline_tokens_per_s and self.new_tokens_per_s is not None:
            return self.new_tokens_per_s / self.baseline_tokens_per_s - 1.0
        return None

    @property
    def speed_change_interval(self) -> Optional[tuple[float, float]]:
        """(low, high) of new / baseline - 1 under the interval rule, else None."""
        r = self.speed_ratio
        return (r.low - 1.0, r.high - 1.0) if r is not None and r.known else None

    @property
    def verdict(self) -> str:
        if any(f.severity == "regression" for f in self.findings):
            return "regression"
        if any(f.severity == "improvement" for f in self.findings):
            return "improvement"
        return "ok"


@dataclass
class GateReport:
    """What one gate run compared and found; passes when no finding is a regression."""

    settings: GateSettings
    rows: list[CellRow]
    warnings: list[str]
    results_sources: list[str]
    baseline_path: Optional[str] = None
    baseline_created_at: Optional[str] = None
    baseline_cells: int = 0
    results_cells: int = 0
    gpus: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)  # the reference recipes the results' parity is against

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


# ---------------------------------------------------------------------------------------------
# filters and environments


def _value_matches(name: str, actual: Any, wanted: str) -> bool:
    """Whether key field `name`'s value `actual` is the `--only` text `wanted` (see options.parse_filters)."""
    if actual is None:
        return wanted.lower() in ("none", "null") or (name == "data_sha256" and wanted.lower() == "synthetic")
    if isinstance(actual, bool):
        return wanted.lower() == str(actual).lower()
    if isinstance(actual, (list, tuple)):
        return ",".join(actual) == wanted or wanted in actual
    if name == "data_sha256":
        return len(wanted) >= 8 and str(actual).startswith(wanted.lower())
    if str(actual) == wanted:
        return True
    try:
        return float(actual) == float(wanted)
    except (TypeError, ValueError):
        return False


def filter_cells(cells: list[CellFigures], filters: dict[str, tuple[str, ...]]) -> list[CellFigures]:
    """Cells whose key matches every filter (any of a field's values)."""
    return [c for c in cells
            if all(any(_value_matches(f, c.key.get(f), w) for w in ws) for f, ws in filters.items())]


def show_value(name: str, value: Any) -> str:
    """A key value as messages write it: target modules comma-joined, a data hash shortened to 12
    characters, no data file as 'synthetic'."""
    if name == "target_modules":
        return ",".join(value or ())
    if name == "data_sha256":
        return "synthetic" if value is None else str(value)[:12]
    return str(value)


def _versions(snap: Snapshot, cells: list[CellFigures]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for c in cells:
        env = snap.env_of(c)
        for name, version in (env.get("packages") or {}).items():
            out.setdefault(name, set()).add(str(version) if version is not None else "absent")
        for name, label in (("driver", "GPU driver"), ("cuda", "cuda"), ("python", "python")):
            if name in env:
                out.setdefault(label, set()).add(str(env[name]) if env[name] is not None else "absent")
    return out


def env_differences(base: Snapshot, base_cells: list[CellFigures], new: Snapshot,
                    new_cells: list[CellFigures]) -> tuple[Optional[str], list[str]]:
    """(GPU mismatch line or None, library/driver difference lines) between the two sides."""
    gpu_line = None
    base_gpus, new_gpus = base.gpu_names(base_cells), new.gpu_names(new_cells)
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
# checks of one row


def recorded_metric(metric: str, *cells: CellFigures) -> Optional[str]:
    """`metric`, or the first of its GPU fallbacks, recorded on every one of `cells`; None if none is."""
    for name in (metric, *GPU_FALLBACK[metric]):
        if all(c.memory(name) is not None for c in cells):
            return name
    return None


def _no_memory_error(cell: CellFigures, metric: str, disable: str = "--max-vram-increase off") -> GateError:
    why = "cpu-mode records carry no GPU memory figures" if cell.key.get("mode") == "cpu" else \
        "the record has no GPU memory figure"
    hint = "pass --metric rss to gate on peak host RSS (a CPU proxy)" if metric != "rss" else "re-run the cell"
    return GateError(f"cell {cell.cell_id} has no {METRICS[metric]} ({why}): {hint}, or {disable}")


def _check_outcome(row: CellRow) -> None:
    """A crashed new cell, and a failed parity check: regressions with or without a baseline."""
    base, new = row.baseline, row.new
    if new.status in CRASHED:
        row.add("regression", "crashed", baseline_status=base.status if base else None, status=new.status,
                error=new.error)
    if new.matched is False:
        row.add("regression", "parity", recipe=new.recipe, reference=new.reference, reasons=new.parity_reasons or [],
                baseline_unmatched=base is not None and base.matched is False)


def _compare_memory(row: CellRow, s: GateSettings) -> None:
    base, new = row.baseline, row.new
    used = recorded_metric(s.metric, base, new)
    if used is None:
        if s.max_vram_increase is not None:
            raise _no_memory_error(new if new.memory(s.metric) is None else base, s.metric)
        return
    row.metric, row.baseline_bytes, row.new_bytes = used, base.memory(used), new.memory(used)
    if used != s.metric:
        row.add("info", "note", metric=s.metric, used=used)
    tol = s.max_vram_increase
    if tol is None:
        return
    facts = dict(metric=used, baseline_bytes=row.baseline_bytes, new_bytes=row.new_bytes,
                 change=row.memory_change, tolerance=tol.text)
    if tol.exceeded(row.baseline_bytes, row.new_bytes):
        row.add("regression", "vram", **facts)
    elif tol.improved(row.baseline_bytes, row.new_bytes):
        row.add("improvement", "vram", **facts)


def _why_point(base: CellFigures, new: CellFigures) -> str:
    if not base.step_rates:
        return "the baseline holds no per-step samples of this cell"
    if not new.step_rates:
        return "the results hold no per-step samples of this cell"
    return "fewer than two timed steps a side: no interval"


def _speed_figures(row: CellRow) -> None:
    """The row's tokens/s and, where both sides carry per-step samples, the ratio's interval."""
    base, new = row.baseline, row.new
    ratio = ratio_of_rates(new.step_rates or [], base.step_rates or [])
    if ratio.known:
        row.speed_rule, row.speed_ratio = "interval", ratio
        row.baseline_tokens_per_s = median_of_rates(base.step_rates)
        row.new_tokens_per_s = median_of_rates(new.step_rates)
    else:
        row.speed_rule, row.why_point = "point", _why_point(base, new)
        row.baseline_tokens_per_s, row.new_tokens_per_s = base.tokens_per_s, new.tokens_per_s


def _compare_speed(row: CellRow, s: GateSettings) -> None:
    base, new = row.baseline, row.new
    _speed_figures(row)
    if s.max_slowdown is None:
        return
    if not row.baseline_tokens_per_s or row.new_tokens_per_s is None:
        missing = base if not row.baseline_tokens_per_s else new
        raise GateError(f"cell {missing.cell_id} is ok but has no tokens_per_s: cannot gate on speed")
    change, tol = row.speed_change, s.max_slowdown
    facts = dict(baseline_tokens_per_s=row.baseline_tokens_per_s, new_tokens_per_s=row.new_tokens_per_s,
                 change=change, tolerance=tol, rule=row.speed_rule)
    if row.speed_rule == "interval":
        facts["low"], facts["high"] = row.speed_change_interval
        if row.speed_ratio.below(1.0 - tol):
            row.add("regression", "slowdown", **facts)
        elif row.speed_ratio.above(1.0 + tol):
            row.add("improvement", "slowdown", **facts)
        elif abs(change) > tol:
            row.add("info", "slowdown", **facts)
        return
    facts["why_point"] = row.why_point
    if -change > tol:
        row.add("regression", "slowdown", **facts)
    elif change > tol:
        row.add("improvement", "slowdown", **facts)


def _compare_cell(row: CellRow, s: GateSettings) -> None:
    base, new = row.baseline, row.new
    if new is None:
        row.add("regression", "missing", baseline_status=base.status)
        return
    if base is None:
        row.add("info", "new")
    else:
        if base.ok and new.status in DID_NOT_FIT:
            row.add("regression", "status", status=new.status)
        elif not base.ok and new.ok:
            row.add("improvement", "status", baseline_status=base.status)
        if base.ok and new.ok:
            _compare_memory(row, s)
            _compare_speed(row, s)
    _check_outcome(row)


def _check_budget(row: CellRow, s: GateSettings) -> None:
    new, budget = row.new, s.budget
    if new is None:
        return
    if new.status in DID_NOT_FIT:
        row.add("regression", "budget", status=new.status, budget=budget.label)
        return
    if not new.ok:
        return  # crashed: already a regression of its own
    used = recorded_metric(s.metric, new)
    if used is None:
        raise _no_memory_error(new, s.metric, disable="drop --vram-budget")
    value = new.memory(used)
    if row.new_bytes is None:
        row.metric, row.new_bytes = used, value
    if value > budget.bytes:
        row.add("regression", "budget", metric=s.metric, used=used, bytes=value, budget_bytes=budget.bytes,
                budget=budget.label)


# ---------------------------------------------------------------------------------------------
# matching


def _key_differences(base: CellFigures, new: CellFigures, ignore: tuple[str, ...]) -> list[str]:
    out = []
    for name in ignore:
        b, n = normalised(name, base.key.get(name)), normalised(name, new.key.get(name))
        if b != n:
            out.append(f"{name} {show_value(name, b)} → {show_value(name, n)}")
    return out


def _no_overlap_error(base_cells: list[CellFigures], new_cells: list[CellFigures], ignore: tuple[str, ...]) -> GateError:
    differing = []
    for name in GATE_FIELDS:
        if name in ignore:
            continue
        b = {show_value(name, normalised(name, c.key.get(name))) for c in base_cells}
        n = {show_value(name, normalised(name, c.key.get(name))) for c in new_cells}
        if not b & n:
            differing.append((name, f"{name} (baseline {'/'.join(sorted(b))}; results {'/'.join(sorted(n))})"))
    if differing:
        names = ",".join(name for name, _ in differing)
        return GateError(
            f"none of the {len(new_cells)} result cells matches one of the {len(base_cells)} baseline cells: "
            f"they differ in {'; '.join(text for _, text in differing)}. To compare a changed setting with the "
            f"baseline, pass --ignore-key {names}; otherwise gate against a baseline of this configuration"
        )
    return GateError(f"none of the {len(new_cells)} result cells matches one of the {len(base_cells)} baseline "
                     f"cells by key ({', '.join(GATE_FIELDS)})")


def _matched_rows(baseline: Snapshot, base_cells: list[CellFigures], new_cells: list[CellFigures],
                  s: GateSettings) -> list[CellRow]:
    """Rows of baseline cells (matched to a new cell by key, or missing), then of new cells without one."""
    base_index = index_by_key(base_cells, s.ignore_key, f"baseline {baseline.path or ''}".strip())
    new_index = index_by_key(new_cells, s.ignore_key, "results")
    if not set(base_index) & set(new_index):
        raise _no_overlap_error(base_cells, new_cells, s.ignore_key)
    rows = []
    for k, base in base_index.items():
        cell = new_index.get(k)
        row = CellRow(label=base.label, cell_id=cell.cell_id if cell else base.cell_id, baseline=base, new=cell)
        if cell is not None and s.ignore_key:
            row.key_differences = _key_differences(base, cell, s.ignore_key)
            row.label = cell.label
        rows.append(row)
    rows += [CellRow(label=cell.label, cell_id=cell.cell_id, baseline=None, new=cell)
             for k, cell in new_index.items() if k not in base_index]
    return rows


def _against_baseline(report: GateReport, baseline: Snapshot, new: Snapshot, new_cells: list[CellFigures]) -> None:
    s = report.settings
    base_cells = filter_cells(baseline.cells, s.only)
    if not base_cells:
        raise GateError(f"no baseline cell matches --only {filters_text(s.only)}")
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
    base_refs = baseline.references(base_cells)
    if base_refs and report.references and base_refs != report.references:
        report.warnings.append(f"parity verdicts are against {'/'.join(report.references)} in these results, "
                               f"against {'/'.join(base_refs)} in the baseline")
    report.rows = _matched_rows(baseline, base_cells, new_cells, s)
    for row in report.rows:
        _compare_cell(row, s)
    point = [row for row in report.rows if row.speed_rule == "point"]
    if s.max_slowdown is not None and point:
        report.warnings.append(_point_rule_warning(baseline, point))


def _point_rule_warning(baseline: Snapshot, rows: list[CellRow]) -> str:
    """Why the speed of `rows` was gated on point figures, without an interval."""
    if baseline.version < 3:
        why = (f"baseline {baseline.path or ''} is version {baseline.version}: it holds no per-step tokens/s "
               f"samples (re-save it with `bench baseline save` to gate speed on intervals)").replace("  ", " ")
    else:
        why = "; ".join(sorted({row.why_point for row in rows if row.why_point}))
    return (f"speed of {len(rows)} cell{'s' if len(rows) != 1 else ''} gated on point tokens/s, without an "
            f"interval (a noisy run can fail it): {why}")


def run_gate(new: Snapshot, baseline: Optional[Snapshot], settings: GateSettings) -> GateReport:
    """Compare `new` with `baseline` (if any) and/or a budget; GateError (or BaselineError for two
    cells of one side sharing a key) on unusable input."""
    s = settings
    if baseline is None and s.budget is None:
        raise GateError("nothing to gate: give --baseline FILE and/or --vram-budget SIZE")
    new_cells = filter_cells(new.cells, s.only)
    if not new_cells:
        raise GateError(f"no result cell matches --only {filters_text(s.only)}")
    report = GateReport(settings=s, rows=[], warnings=[], results_sources=list(new.sources),
                        results_cells=len(new_cells), gpus=new.gpu_names(new_cells),
                        references=new.references(new_cells))
    if baseline is not None:
        _against_baseline(report, baseline, new, new_cells)
    else:
        report.rows = [CellRow(label=cell.label, cell_id=cell.cell_id, baseline=None, new=cell) for cell in new_cells]
        for row in report.rows:
            _check_outcome(row)
    if s.budget is not None:
        for row in report.rows:
            _check_budget(row, s)
    if s.metric == "rss":
        report.warnings.append("gating on peak host RSS (--metric rss): a CPU proxy, not GPU memory")
    return report
