"""Gate baselines: the figures of one measured run per cell, and the versioned JSON file that pins them.

A baseline file holds, per cell, the gate key (`GATE_FIELDS`: the recipe, driver and data among
them), the peak memory figures (bytes), tokens/s (trained tokens per second), status and parity
verdict of one measured run (against its configuration's reference recipe), plus the environments
the figures came from and the results files they were read from. It is written only by
`save_baseline` (the explicit `bench baseline save`); nothing updates it implicitly.

Each cell also holds `step_rates`: its timed per-step tokens/s grouped by repeat (one list per ok repeat,
bench.schema.record.rate_groups), what the speed gate's interval is read from (bench.analysis.speed).

Versions: 3 is written; 2 (no `step_rates`: the speed gate falls back to the point figures, and says so)
and 1 (before recipes: its keys name a backend only) are still read, version-1 keys filled as the schema
reads version-1 records (recipe from the backend, bench.schema.record.LEGACY_RECIPE; the loop driver;
synthetic data, so data_sha256 and packing None).

`CellFigures` and `Snapshot` are also what the gate compares on the new-results side
(`snapshot_from_records`). Unusable files or cell sets raise `BaselineError` (CLI exit code 2).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Optional

from bench import __version__
from bench.schema.key import GATE_FIELDS, CellKey
from bench.schema.pairs import DEFAULT_REFERENCE, reference_for
from bench.schema.record import SCHEMA_VERSION, STATUSES, ResultRecord, ResultsError, rate_groups

BASELINE_FORMAT = "qlora-bench-baseline"
BASELINE_VERSION = 3
READABLE_BASELINE_VERSIONS = (1, 2, 3)
#: The gate key of a version-1 baseline (before recipes, drivers and data files).
V1_KEY_FIELDS = ("backend", "model", "tier", "mode", "seq_len", "batch_size", "grad_accum", "lora_r", "lora_alpha",
                 "lora_dropout", "target_modules", "optimizer", "gradient_checkpointing", "dtype")
#: Memory metric name (`bench gate --metric`) -> the CellFigures / record field holding it (bytes).
METRICS = {
    "device": "peak_device_bytes",
    "reserved": "peak_reserved_bytes",
    "allocated": "peak_allocated_bytes",
    "rss": "peak_rss_bytes",
}
_CELL_REQUIRED = ("key", "cell_id", "status")


class BaselineError(ResultsError):
    """A baseline file, or a set of cells for one, that cannot be used (CLI exit code 2)."""


@dataclass
class CellFigures:
    """What the gate knows about one measured cell (from a record or a baseline file); bytes, tokens/s."""

    key: dict[str, Any]  # GATE_FIELDS -> value
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
    reference: Optional[str] = None  # the recipe `matched` compares against (None: no other recipe to compare)
    parity_reasons: Optional[list[str]] = None  # why parity failed (None when it did not)
    error: Optional[str] = None
    env_index: int = 0  # into the snapshot's envs
    # timed per-step tokens/s, one list per ok repeat (None: not ok, or a version-2 baseline: no samples)
    step_rates: Optional[list[list[float]]] = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def memory(self, metric: str) -> Optional[int]:
        """The peak of memory metric `metric` (a METRICS name) in bytes, None when not recorded."""
        return getattr(self, METRICS[metric])

    @property
    def recipe(self) -> Optional[str]:
        return self.key.get("recipe")

    @property
    def label(self) -> str:
        """'hf-trl llama-3.1-8b s1024 b1' (+ ' ga4' where gradient accumulation is used)."""
        return CellKey.of(self.key).label


def cell_key(key: dict[str, Any], ignore: Iterable[str] = ()) -> tuple:
    """The hashable matching key of a cell (its GATE_FIELDS), leaving out the `ignore`d fields."""
    return CellKey.of(key).view(GATE_FIELDS, ignore)


def figures_from_record(record: ResultRecord, env_index: int = 0, reference: Optional[str] = None,
                        repeats: Optional[list[ResultRecord]] = None) -> CellFigures:
    """A record's gate figures (`reference`: the recipe its parity verdict is against; `repeats`: the records
    of every repeat of its cell, default the record alone, for `step_rates`); its error cut to the last
    line, 200 characters."""
    groups = rate_groups(repeats or [record]) if record.ok else []
    reasons = list((record.parity or {}).get("reasons") or []) if record.matched is False else None
    return CellFigures(
        key=CellKey.of(record).as_dict(GATE_FIELDS),
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
        reference=reference,
        parity_reasons=reasons,
        error=(record.error or "").strip().splitlines()[-1][:200] if record.error else None,
        env_index=env_index,
        step_rates=groups or None,
    )


@dataclass
class Snapshot:
    """The cells of one side of a gate (a baseline, or new results), with their environments."""

    cells: list[CellFigures]
    envs: list[dict[str, Any]]
    sources: list[str]
    created_at: Optional[str] = None  # ISO 8601, UTC; set when a baseline is made
    path: Optional[str] = None  # the baseline file it was loaded from
    reference: Optional[str] = None  # the reference recipe asked for (None: a version-1 baseline)
    version: int = BASELINE_VERSION  # of the baseline file it was loaded from

    def env_of(self, cell: CellFigures) -> dict[str, Any]:
        return self.envs[cell.env_index] if 0 <= cell.env_index < len(self.envs) else {}

    def references(self, cells: Optional[Iterable[CellFigures]] = None) -> list[str]:
        """The sorted reference recipes the parity verdicts of `cells` (default: all) are against."""
        cells = self.cells if cells is None else cells
        return sorted({c.reference for c in cells if c.reference})

    def gpu_names(self, cells: Optional[Iterable[CellFigures]] = None) -> list[str]:
        """The sorted GPU names `cells` (default: all) ran on; 'none (cpu)' for cells without a GPU."""
        cells = self.cells if cells is None else cells
        return sorted({str(self.env_of(c).get("gpu_name") or "none (cpu)") for c in cells})


def pair_references(records: Iterable[ResultRecord], reference: str = DEFAULT_REFERENCE) -> dict[str, str]:
    """pair_key -> the reference recipe of the configurations measured with more than one recipe (as
    bench.schema.pairs resolves it: `reference` when measured, else the first of REFERENCE_FALLBACK)."""
    recipes: dict[str, set[str]] = {}
    for r in records:
        recipes.setdefault(r.pair_key, set()).add(r.recipe)
    out = {}
    for key, present in recipes.items():
        ref = reference_for(present, reference) if len(present) > 1 else None
        if ref is not None:
            out[key] = ref
    return out


def snapshot_from_records(records: list[ResultRecord], sources: Iterable[str],
                          reference: str = DEFAULT_REFERENCE,
                          repeats: Optional[dict[str, list[ResultRecord]]] = None) -> Snapshot:
    """One side from records, as `bench.schema.store.load(..., reference=reference)` returns them (latest
    per cell, parity against `reference`); `repeats`: cell_id -> the records of every repeat of its latest
    run (bench.schema.store.latest_repeats), default each record alone."""
    envs: list[dict[str, Any]] = []
    env_ids: dict[str, int] = {}
    refs = pair_references(records, reference)
    cells = []
    for record in records:
        env_json = json.dumps(record.env, sort_keys=True, default=str)
        if env_json not in env_ids:
            env_ids[env_json] = len(envs)
            envs.append(record.env)
        cells.append(figures_from_record(record, env_ids[env_json], refs.get(record.pair_key),
                                         (repeats or {}).get(record.cell_id)))
    return Snapshot(cells=cells, envs=envs, sources=[str(s) for s in sources], reference=reference)


def index_by_key(cells: list[CellFigures], ignore: Iterable[str], side: str) -> dict[tuple, CellFigures]:
    """Cells by matching key; BaselineError when two cells of one side share a key (ambiguous)."""
    ignore = tuple(ignore)
    out: dict[tuple, CellFigures] = {}
    for cell in cells:
        k = cell_key(cell.key, ignore)
        if k in out:
            hint = f" once {', '.join(ignore)} {'is' if len(ignore) == 1 else 'are'} ignored" if ignore else ""
            raise BaselineError(
                f"{side}: cells {out[k].cell_id} and {cell.cell_id} have the same key{hint}; "
                f"the gate cannot tell which to compare (use --only to select one)"
            )
        out[k] = cell
    return out


def baseline_from_records(records: list[ResultRecord], sources: Iterable[str], created_at: str,
                          reference: str = DEFAULT_REFERENCE,
                          repeats: Optional[dict[str, list[ResultRecord]]] = None) -> Snapshot:
    """A baseline snapshot made at `created_at` (ISO 8601) from records read with parity against
    `reference` (`repeats` as snapshot_from_records takes them); BaselineError if two records share a key."""
    if not records:
        raise BaselineError("no records to save in a baseline")
    snap = snapshot_from_records(records, sources, reference, repeats)
    index_by_key(snap.cells, (), "results")
    snap.created_at = created_at
    return snap


def baseline_to_dict(snap: Snapshot) -> dict[str, Any]:
    """The baseline file's content (format, version, provenance, envs and cells), in file order."""
    return {
        "format": BASELINE_FORMAT,
        "version": BASELINE_VERSION,
        "created_at": snap.created_at,
        "suite_version": __version__,
        "results_schema_version": SCHEMA_VERSION,
        "reference": snap.reference,
        "key_fields": list(GATE_FIELDS),
        "sources": list(snap.sources),
        "envs": snap.envs,
        "cells": [asdict(c) for c in snap.cells],
    }


def save_baseline(snap: Snapshot, path: Path) -> Path:
    """Write a baseline file (JSON, stable order; replaced atomically) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(baseline_to_dict(snap), indent=2, sort_keys=False, allow_nan=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _cell_from_dict(c: Any, i: int, n_envs: int, where: str, version: int) -> CellFigures:
    if not isinstance(c, dict):
        raise BaselineError(f"{where}: cell {i} is not an object")
    missing = [k for k in _CELL_REQUIRED if k not in c]
    unknown = sorted(set(c) - {f.name for f in fields(CellFigures)})
    if missing or unknown:
        raise BaselineError(f"{where}: cell {i}: " + (f"missing {missing}" if missing else f"unknown fields {unknown}"))
    key = c["key"]
    key_fields = GATE_FIELDS if version >= 2 else V1_KEY_FIELDS
    if not isinstance(key, dict) or any(name not in key for name in key_fields):
        raise BaselineError(f"{where}: cell {i} ({c.get('cell_id')}): key must hold {', '.join(key_fields)}")
    if version == 1:  # read as the schema reads version-1 records: the recipe its backend ran, loop, synthetic
        c = dict(c, key=CellKey.of({n: key[n] for n in V1_KEY_FIELDS}).as_dict(GATE_FIELDS))
    cell = CellFigures(**c)
    if cell.status not in STATUSES:
        raise BaselineError(f"{where}: cell {cell.cell_id}: unknown status {cell.status!r}")
    for name in METRICS.values():
        v = getattr(cell, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise BaselineError(f"{where}: cell {cell.cell_id}: {name} must be a whole number of bytes")
    if not _rate_groups_ok(cell.step_rates):
        raise BaselineError(f"{where}: cell {cell.cell_id}: step_rates must be lists of positive tokens/s, "
                            f"one per repeat")
    if not 0 <= cell.env_index < n_envs:
        raise BaselineError(f"{where}: cell {cell.cell_id}: env_index {cell.env_index} out of range")
    return cell


def _rate_groups_ok(groups: Any) -> bool:
    if groups is None:
        return True
    return isinstance(groups, list) and all(
        isinstance(g, list) and g and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                                          for v in g) for g in groups)


def baseline_from_dict(data: Any, where: str) -> Snapshot:
    """Validate a parsed baseline file (`where`: its path, for messages); BaselineError naming what is wrong."""
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        raise BaselineError(f"{where} is not a qlora-bench baseline (no \"format\": \"{BASELINE_FORMAT}\")")
    version = data.get("version")
    if version not in READABLE_BASELINE_VERSIONS or isinstance(version, bool):
        raise BaselineError(f"{where}: baseline version {version!r}, this qlora-bench reads "
                            f"{', '.join(map(str, READABLE_BASELINE_VERSIONS))}")
    cells_data = data.get("cells")
    envs = data.get("envs")
    if not isinstance(cells_data, list) or not cells_data:
        raise BaselineError(f"{where}: baseline holds no cells")
    if not isinstance(envs, list) or not all(isinstance(e, dict) for e in envs):
        raise BaselineError(f"{where}: \"envs\" must be a list of objects")
    cells = [_cell_from_dict(c, i, len(envs), where, version) for i, c in enumerate(cells_data)]
    snap = Snapshot(cells=cells, envs=envs, sources=[str(s) for s in data.get("sources") or []],
                    created_at=data.get("created_at"), path=where, reference=data.get("reference"), version=version)
    index_by_key(snap.cells, (), f"baseline {where}")
    return snap


def load_baseline(path: Path) -> Snapshot:
    """Read and validate a baseline file; BaselineError (exit 2) when missing or corrupt."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BaselineError(f"baseline {path} not found (create one with `bench baseline save RESULTS --out {path}`)") from None
    except OSError as exc:
        raise BaselineError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"baseline {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return baseline_from_dict(data, str(path))
