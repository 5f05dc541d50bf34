"""The estimator against measured records: per-cell predictions, the accuracy target, fit verdicts.

Memory is bytes throughout. Records are bench.schema.record.ResultRecord; `resolve_config(model
name) -> config dict` turns a record's model into the shapes the estimator reads (it may raise:
the record is then left out and said so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from bench.analysis.borderline import memory_cap_bytes
from bench.analysis.calibration import Calibration, Predictor
from bench.analysis.estimate.model import Estimate, estimate_recipe
from bench.analysis.estimate.shapes import EstimateError
from bench.analysis.stats import median
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
    """One measured cell beside the estimator's prediction for it (bytes)."""

    cell_id: str
    recipe: str
    driver: str
    model: str
    architecture: str  # the model config's model_type ("llama", "phi3", ...)
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
    context_tokens: Optional[int] = None  # the model config's max_position_embeddings (its trained context)

    @property
    def error_bytes(self) -> int:
        return self.predicted_bytes - self.measured_bytes

    @property
    def bound_bytes(self) -> int:
        return error_bound_bytes(self.measured_bytes)

    @property
    def within(self) -> bool:
        return abs(self.error_bytes) <= self.bound_bytes

    @property
    def error_pct(self) -> float:
        """(predicted - measured) / measured x 100: negative errs low."""
        return self.error_bytes / self.measured_bytes * 100

    @property
    def errs_low(self) -> bool:
        """The prediction is below the measured peak: the unsafe side for a "fits" verdict."""
        return self.predicted_bytes < self.measured_bytes

    @property
    def family(self) -> str:
        """The recipe's library family ("hf" | "unsloth"; bench.config.recipes)."""
        return RECIPES[self.recipe].family if self.recipe in RECIPES else self.recipe


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


def validate_records(records: Iterable[ResultRecord], resolve_config: ResolveConfig,
                     calibration: Optional[Calibration] = None) -> tuple[list[ValidationRow], list[str]]:
    """Predict every measured ok GPU record under `calibration` (default: bench/data/calibration.json);
    return rows and the reasons records could not be predicted.

    Records without a device peak (cpu mode) are not GPU measurements and are skipped. Cells pinned
    by the cap are predicted like any other: `bench.analysis.estimate.heldout.split_records` leaves
    them out before the error figures.
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
            est = estimate_for_record(r, config, calibration)
        except EstimateError as exc:
            skipped.append(f"{r.cell_id}: {exc}")
            continue
        rows.append(ValidationRow(
            cell_id=r.cell_id, recipe=r.recipe, driver=r.driver, model=r.model,
            architecture=str(config.get("model_type", "?")), tier=r.tier, mode=r.mode,
            gpu_name=(r.env or {}).get("gpu_name"), seq_len=r.seq_len, batch_size=r.batch_size, dtype=r.dtype,
            gradient_checkpointing=r.gradient_checkpointing, predicted_bytes=est.total_bytes,
            measured_bytes=int(r.peak_device_bytes), peak_phase=est.peak_phase,
            context_tokens=config.get("max_position_embeddings"),
        ))
    return rows, skipped


def _worst(rows: list[ValidationRow], low: bool) -> Optional[ValidationRow]:
    """The row that errs furthest on one side (low: prediction < measured), by % of measured."""
    side = [r for r in rows if r.errs_low == low and r.error_bytes != 0]
    return max(side, key=lambda r: abs(r.error_pct)) if side else None


def error_stats(rows: list[ValidationRow]) -> dict[str, Any]:
    """The errors of `rows` (one group): cells, cells within the bound, median / max / mean |error| %
    of measured, max |error| bytes; low errors (prediction < measured, the unsafe side for "fits")
    apart from high ones: how many, how many beyond the bound, and the worst (cell id, bytes, %)."""
    abs_pct = [abs(r.error_pct) for r in rows]
    out: dict[str, Any] = {
        "cells": len(rows), "within": sum(r.within for r in rows),
        "median_abs_error_pct": median(abs_pct) if rows else None,
        "max_abs_error_pct": max(abs_pct) if rows else None,
        "mean_abs_error_pct": sum(abs_pct) / len(rows) if rows else None,
        "max_abs_error_bytes": max((abs(r.error_bytes) for r in rows), default=None),
    }
    for side, low in (("low", True), ("high", False)):
        mine = [r for r in rows if r.errs_low == low and r.error_bytes != 0]
        worst = _worst(rows, low)
        out[side] = {"cells": len(mine), "beyond_bound": sum(not r.within for r in mine),
                     "worst_cell": worst.cell_id if worst else None,
                     "worst_error_bytes": worst.error_bytes if worst else None,
                     "worst_error_pct": worst.error_pct if worst else None}
    return out


def validation_summary(rows: list[ValidationRow]) -> dict[str, dict[str, Any]]:
    """`error_stats` per library family ("hf (all)" / "unsloth (all)") and per recipe, families first,
    recipes in bench.config.recipes order. Recipes without a measured cell are left out
    (`unmeasured_recipes`)."""
    out: dict[str, dict[str, Any]] = {}
    for family in dict.fromkeys(RECIPES[name].family for name in RECIPES):
        mine = [r for r in rows if r.family == family]
        if mine:
            out[f"{family} (all)"] = error_stats(mine)
            for name in [n for n in RECIPES if RECIPES[n].family == family]:
                if any(r.recipe == name for r in mine):
                    out[name] = error_stats([r for r in mine if r.recipe == name])
    return out


def unmeasured_recipes(rows: list[ValidationRow]) -> list[str]:
    """The recipes (bench.config.recipes order) with no measured cell among `rows`: their estimates
    are formulas from the libraries' source that no measurement has checked yet."""
    measured = {r.recipe for r in rows}
    return [name for name in RECIPES if name not in measured]


def fit_verdicts(records: Iterable[ResultRecord], resolve_config: ResolveConfig,
                 calibration: Optional[Calibration] = None) -> list[dict[str, Any]]:
    """For every ok / oom GPU record: the estimator's fits-or-not against the record's tier memory
    (`calibration`: default bench/data/calibration.json). Cap-pinned and OOM cells are kept: a fit
    verdict is about exactly them.

    `near_limit`: the prediction lies within the accuracy target of the tier's memory, where a
    verdict either way is within the estimator's stated error (the max-fit search probes there).
    """
    out = []
    for r in records:
        if r.status not in ("ok", "oom") or r.mode == "cpu":
            continue
        try:
            get_tier(r.tier)  # an unknown tier raises: the cell is left out
            est = estimate_for_record(r, resolve_config(r.model), calibration)
        except Exception:  # noqa: BLE001 - a model or tier the estimator cannot resolve: left out
            continue
        usable = memory_cap_bytes(r)
        predicted_fits = est.total_bytes <= usable
        out.append({"recipe": r.recipe, "driver": r.driver, "model": r.model, "tier": r.tier, "mode": r.mode, "seq_len": r.seq_len,
                    "batch_size": r.batch_size, "predicted_bytes": est.total_bytes, "usable_bytes": usable,
                    "predicted_fits": predicted_fits, "measured_status": r.fit_outcome,
                    "agree": predicted_fits == r.fits_tier,
                    "near_limit": abs(est.total_bytes - usable) <= error_bound_bytes(usable)})
    return out
