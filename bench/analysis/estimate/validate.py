"""The estimator against measured records: per-cell predictions, the accuracy target, fit verdicts.

Memory is bytes throughout. Records are bench.schema.record.ResultRecord; `resolve_config(model
name) -> config dict` turns a record's model into the shapes the estimator reads (it may raise:
the record is then left out and said so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from bench.analysis.calibration import Calibration, Predictor
from bench.analysis.estimate.model import Estimate, estimate_recipe
from bench.analysis.estimate.shapes import EstimateError
from bench.config.recipes import RECIPES
from bench.config.tiers import get_tier, tier_for_gpu_name
from bench.schema.record import ResultRecord
from bench.units import GiB

ResolveConfig = Callable[[str], dict]


def error_bound_bytes(measured_bytes: int) -> int:
    """The accuracy target: max(10 % of the measured peak, 0.5 GiB)."""
    return int(max(0.10 * measured_bytes, 0.5 * GiB))


@dataclass
class ValidationRow:
    cell_id: str
    recipe: str
    driver: str
    model: str
    tier: str
    mode: str
    gpu_name: Optional[str]
    seq_len: int
    batch_size: int
    dtype: str
    gradient_checkpointing: str
    predicted_bytes: int
    measured_bytes: int
    peak_phase: str

    @property
    def error_bytes(self) -> int:
        return self.predicted_bytes - self.measured_bytes

    @property
    def bound_bytes(self) -> int:
        return error_bound_bytes(self.measured_bytes)

    @property
    def within(self) -> bool:
        return abs(self.error_bytes) <= self.bound_bytes


def compute_capability_of(gpu_name: Optional[str]) -> Optional[tuple[int, int]]:
    """The compute capability of a host GPU name via the tier table (None when unknown)."""
    tier = tier_for_gpu_name(gpu_name) if gpu_name else None
    return tier.compute_capability if tier else None


def estimate_for_record(r: ResultRecord, config: dict, calibration: Optional[Calibration] = None) -> Estimate:
    """The estimate for a run record's exact settings (recipe, driver, sizes, training settings), on
    the GPU generation it ran on. A version-1 record reads as hf-kbit / unsloth with the loop driver."""
    return estimate_recipe(config, r.recipe, r.seq_len, r.batch_size, driver=r.driver, model_name=r.model,
                           lora_r=r.lora_r, target_modules=r.target_modules, optimizer=r.optimizer,
                           gradient_checkpointing=r.gradient_checkpointing, dtype=r.dtype,
                           compute_capability=compute_capability_of((r.env or {}).get("gpu_name")),
                           calibration=calibration)


def calibration_predictor(resolve_config: ResolveConfig) -> Predictor:
    """What `bench.analysis.calibration.calibration_from_records` compares records with: the
    allocation model alone for a record's settings, with a given count of Unsloth's backward
    tensors (None when the model does not resolve or the estimator cannot model the record)."""
    def predict(r: ResultRecord, unsloth_backward_i_elems: int) -> Optional[Estimate]:
        try:
            config = resolve_config(r.model)
        except Exception:  # noqa: BLE001 - a model that does not resolve gives no sample
            return None
        try:
            return estimate_for_record(r, config, Calibration.allocation_only(unsloth_backward_i_elems))
        except EstimateError:
            return None

    return predict


def validate_records(records: Iterable[ResultRecord],
                     resolve_config: ResolveConfig) -> tuple[list[ValidationRow], list[str]]:
    """Predict every measured ok GPU record; return rows and the reasons records were left out.

    Records without a device peak (cpu mode) are not GPU measurements and are skipped.
    """
    rows, skipped = [], []
    for r in records:
        if r.status != "ok" or r.peak_device_bytes is None:
            continue
        try:
            config = resolve_config(r.model)
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            skipped.append(f"{r.cell_id}: model {r.model!r} not resolvable ({exc})")
            continue
        try:
            est = estimate_for_record(r, config)
        except EstimateError as exc:
            skipped.append(f"{r.cell_id}: {exc}")
            continue
        rows.append(ValidationRow(
            cell_id=r.cell_id, recipe=r.recipe, driver=r.driver, model=r.model, tier=r.tier, mode=r.mode,
            gpu_name=(r.env or {}).get("gpu_name"), seq_len=r.seq_len, batch_size=r.batch_size, dtype=r.dtype,
            gradient_checkpointing=r.gradient_checkpointing, predicted_bytes=est.total_bytes,
            measured_bytes=int(r.peak_device_bytes), peak_phase=est.peak_phase,
        ))
    return rows, skipped


def validation_summary(rows: list[ValidationRow]) -> dict[str, dict[str, Any]]:
    """Per recipe (in bench.config.recipes order): cells, cells within the bound, largest |error|
    (bytes and % of measured). Recipes without a measured cell are left out (`unmeasured_recipes`)."""
    out: dict[str, dict[str, Any]] = {}
    for b in [name for name in RECIPES if any(r.recipe == name for r in rows)]:
        mine = [r for r in rows if r.recipe == b]
        worst = max(mine, key=lambda r: abs(r.error_bytes))
        out[b] = {
            "cells": len(mine),
            "within": sum(r.within for r in mine),
            "max_abs_error_bytes": abs(worst.error_bytes),
            "max_abs_error_pct": max(abs(r.error_bytes) / r.measured_bytes * 100 for r in mine),
            "mean_abs_error_pct": sum(abs(r.error_bytes) / r.measured_bytes * 100 for r in mine) / len(mine),
        }
    return out


def unmeasured_recipes(rows: list[ValidationRow]) -> list[str]:
    """The recipes (bench.config.recipes order) with no measured cell among `rows`: their estimates
    are formulas from the libraries' source that no measurement has checked yet."""
    measured = {r.recipe for r in rows}
    return [name for name in RECIPES if name not in measured]


def fit_verdicts(records: Iterable[ResultRecord], resolve_config: ResolveConfig) -> list[dict[str, Any]]:
    """For every ok / oom GPU record: the estimator's fits-or-not against the record's tier memory.

    `near_limit`: the prediction lies within the accuracy target of the tier's memory, where a
    verdict either way is within the estimator's stated error (the max-fit search probes there).
    """
    out = []
    for r in records:
        if r.status not in ("ok", "oom") or r.mode == "cpu":
            continue
        try:
            tier = get_tier(r.tier)
            est = estimate_for_record(r, resolve_config(r.model))
        except Exception:  # noqa: BLE001 - a model or tier the estimator cannot resolve: left out
            continue
        usable = r.memory_limit_bytes or tier.usable_vram_bytes
        predicted_fits = est.total_bytes <= usable
        out.append({"recipe": r.recipe, "driver": r.driver, "model": r.model, "tier": r.tier, "mode": r.mode, "seq_len": r.seq_len,
                    "batch_size": r.batch_size, "predicted_bytes": est.total_bytes, "usable_bytes": usable,
                    "predicted_fits": predicted_fits, "measured_status": r.fit_outcome,
                    "agree": predicted_fits == r.fits_tier,
                    "near_limit": abs(est.total_bytes - usable) <= error_bound_bytes(usable)})
    return out
