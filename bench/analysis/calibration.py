"""The estimator's calibrated numbers: computed from measured records, kept in bench/data/calibration.json.

The VRAM estimator (bench.analysis.estimate) is formulas read from the libraries' source, except
for what only a measurement gives (all bytes unless named otherwise):
  * memory outside torch at the peak (CUDA context, kernel modules, library handles) per GPU
    generation for the hf library family, and what `import unsloth` adds to it;
  * the caching allocator's slack over the peak allocation (reserved - allocated), as
    base + fraction x the step's transient allocation, per library family;
  * how many intermediate-size tensors per token Unsloth's layer backward holds.

Values are per library family (a record's `backend`: "hf" | "unsloth", bench.config.recipes.Recipe.family),
so every recipe of a family is calibrated by the family's records (so far hf-kbit and unsloth cells);
the estimator's ASSUMPTIONS say so for the recipes without records.

`calibration_from_records` computes them from ok GPU records (pure; the estimator's per-record
predictions come in through a callable, so this module does not depend on the estimator);
`calibration_document` adds the rounding, the rule and the evidence (results files, cell ids);
`save_calibration` writes it (`bench estimate --calibrate RESULTS... --write`) and `calibrated`
is the one cached loader the estimator reads the values through.
"""

from __future__ import annotations

import functools
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from bench.config.settings import BACKENDS
from bench.config.tiers import tier_for_gpu_name
from bench.schema.record import ResultRecord
from bench.units import MiB

CALIBRATION_PATH = Path(__file__).resolve().parent.parent / "data" / "calibration.json"

#: How the allocator slack is fitted per library family (a modelling choice, not a measurement):
#: - hf: "proportional" (base 0), the median of (peak_reserved - peak_allocated) / transient; HF's
#:   transient is dominated by large logits blocks of several sizes, and its records show one ratio
#:   across their transient sizes.
#: - unsloth: "affine", a least-squares line; its records keep a larger share of small transients
#:   than of large ones, so a single ratio over- or under-shoots one end.
SLACK_MODEL: dict[str, str] = {"hf": "proportional", "unsloth": "affine"}
#: Cells whose reserved memory reached this share of an emulated tier's torch cap are pinned by the
#: cap: there the allocator frees its cache and retries, so their peak measures the cap, not the need.
#: They, and out-of-memory cells, are left out of calibration and of the estimator's error figures.
CAP_PINNED_PRESSURE = 0.97
#: Cells with less transient memory than this give no slack sample (the ratio is noise there).
MIN_SLACK_TRANSIENT_BYTES = 256 * MiB
#: Fewest samples for a least-squares slack line; with fewer the fit falls back to the median ratio.
MIN_LINE_POINTS = 3


class CalibrationError(ValueError):
    """A calibration data file that is missing or malformed."""


@dataclass(frozen=True)
class Calibration:
    """The calibrated values the estimator uses (bytes unless named otherwise)."""

    non_torch_bytes_by_compute_capability: dict[str, int]  # hf family, keyed "major.minor"
    unsloth_extra_non_torch_bytes: int  # added for the unsloth family
    allocator_slack_of_transient: dict[str, float]  # family -> fraction of the transient bytes
    allocator_slack_base_bytes: dict[str, int]  # family -> base bytes
    unsloth_backward_i_elems: int  # intermediate-size tensors per token in Unsloth's layer backward

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> "Calibration":
        try:
            return cls(
                non_torch_bytes_by_compute_capability={
                    k: int(v) for k, v in values["non_torch_bytes_by_compute_capability"].items()},
                unsloth_extra_non_torch_bytes=int(values["unsloth_extra_non_torch_bytes"]),
                allocator_slack_of_transient={k: float(v) for k, v in values["allocator_slack_of_transient"].items()},
                allocator_slack_base_bytes={k: int(v) for k, v in values["allocator_slack_base_bytes"].items()},
                unsloth_backward_i_elems=int(values["unsloth_backward_i_elems"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CalibrationError(f"calibration values lack or mistype {exc}") from None

    @classmethod
    def allocation_only(cls, unsloth_backward_i_elems: int) -> "Calibration":
        """No memory outside torch and no slack: estimates under it are the allocation model alone
        (what `calibration_from_records` compares records with), independent of any data file."""
        return cls({"9.0": 0}, 0, {b: 0.0 for b in BACKENDS}, {b: 0 for b in BACKENDS}, unsloth_backward_i_elems)

    def to_values(self) -> dict[str, Any]:
        return {
            "non_torch_bytes_by_compute_capability": dict(self.non_torch_bytes_by_compute_capability),
            "unsloth_extra_non_torch_bytes": self.unsloth_extra_non_torch_bytes,
            "allocator_slack_of_transient": dict(self.allocator_slack_of_transient),
            "allocator_slack_base_bytes": dict(self.allocator_slack_base_bytes),
            "unsloth_backward_i_elems": self.unsloth_backward_i_elems,
        }

    def non_torch_bytes(self, backend: str, compute_capability: Optional[tuple[int, int]]) -> int:
        """Memory outside torch at the peak on a GPU of `compute_capability`, for library family `backend`.

        A generation the records do not cover takes the figure of the nearest measured one (a
        context on a smaller, older card is usually smaller, so predictions there err on the safe
        side); None takes the newest measured one.
        """
        measured = {_cc_tuple(k): v for k, v in self.non_torch_bytes_by_compute_capability.items()}
        if compute_capability is None:
            base = measured[max(measured)]
        else:
            target = compute_capability[0] * 10 + compute_capability[1]
            base = measured[min(measured, key=lambda cc: (abs(cc[0] * 10 + cc[1] - target), -cc[0], -cc[1]))]
        return base + (self.unsloth_extra_non_torch_bytes if backend == "unsloth" else 0)

    def allocator_slack_bytes(self, backend: str, transient_bytes: int) -> int:
        """Reserved minus allocated at the peak for a step of library family `backend` with
        `transient_bytes` of transient memory."""
        if transient_bytes <= 0:
            return 0
        return int(self.allocator_slack_base_bytes[backend]
                   + self.allocator_slack_of_transient[backend] * transient_bytes)


def _cc_tuple(key: str) -> tuple[int, int]:
    major, minor = key.split(".")
    return int(major), int(minor)


# -- records -> calibration (pure) ------------------------------------------------------------------


#: predict(record, unsloth_backward_i_elems) -> the estimator's Estimate for the record's exact
#: settings with that tensor count (None when it cannot model the record). Only the allocation
#: figures are read (persistent_bytes, phases), which the other calibrated values do not change.
Predictor = Callable[[ResultRecord, int], Any]


def cap_pressure(record: ResultRecord) -> float:
    """peak_reserved_bytes over the emulated tier's torch cap (0..1); 0 for native and cpu records."""
    total = (record.env or {}).get("gpu_memory_bytes")
    if not record.torch_memory_fraction or not total or record.peak_reserved_bytes is None:
        return 0.0
    return record.peak_reserved_bytes / (record.torch_memory_fraction * total)


def cap_pinned_reason(record: ResultRecord) -> Optional[str]:
    """Why a GPU record's peak says "the cap" rather than what the cell needs, or None when it does not:
    an out-of-memory cell (it stopped at the cap), or an ok cell of an emulated tier whose reserved
    memory reached CAP_PINNED_PRESSURE of the torch cap. The one rule calibration and validation use."""
    if record.status == "oom":
        return "out of memory: its peak is where it stopped, not what it needs"
    pressure = cap_pressure(record)
    if record.status == "ok" and pressure >= CAP_PINNED_PRESSURE:
        return (f"pinned by the emulated cap: reserved {pressure * 100:.1f} % of the torch cap "
                f"(>= {CAP_PINNED_PRESSURE * 100:.0f} %), so its peak measures the cap")
    return None


def compute_capability_key(record: ResultRecord) -> Optional[str]:
    """The record's GPU generation "major.minor": as recorded in its env, else from the tier table."""
    env = record.env or {}
    if env.get("compute_capability"):
        return str(env["compute_capability"])
    tier = tier_for_gpu_name(env.get("gpu_name") or "")
    return f"{tier.compute_capability[0]}.{tier.compute_capability[1]}" if tier else None


def _line_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y on x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return my, 0.0
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - slope * mx, slope


def _slack_fit(backend: str, points: list[tuple[float, float]]) -> tuple[float, int]:
    """(fraction, base bytes) of the slack line through (transient, reserved - allocated) points."""
    if SLACK_MODEL.get(backend, "proportional") == "proportional" or len(points) < MIN_LINE_POINTS:
        return statistics.median(y / x for x, y in points), 0
    intercept, slope = _line_fit(points)
    return slope, int(intercept)


def _backward_sample(record: ResultRecord, predict: Predictor) -> Optional[tuple[float, float]]:
    """(bytes of one intermediate-size tensor per token, bytes the measured peak leaves for them)
    for an unsloth record whose measured peak lies in the layer phase, else None."""
    without, with_one = predict(record, 0), predict(record, 1)
    if without is None or with_one is None:
        return None
    if record.peak_allocated_bytes <= max(without.phases["loss"], without.phases["optimizer"]):
        return None  # the measured peak is not the layer backward's
    per_tensor = with_one.phases["layer"] - without.phases["layer"]
    return (per_tensor, record.peak_allocated_bytes - without.phases["layer"]) if per_tensor > 0 else None


def calibration_from_records(records: Iterable[ResultRecord], predict: Predictor) -> dict[str, Any]:
    """The calibrated values as ok GPU records imply them, unrounded, with the cells used.

    Returns {"measured": values (the keys of `Calibration`, floats where a fit gives one),
    "cells": cell ids per value and library family, "left_out": {cell id: reason} of the cells
    `cap_pinned_reason` leaves out (their peak is the cap)}. Memory outside torch: the median of
    peak_device_bytes - peak_reserved_bytes (hf cells per compute capability; unsloth's extra is
    its median minus hf's). Slack: (transient, peak_reserved - peak_allocated) pairs, transient =
    peak_allocated - the estimator's persistent bytes, over cells with more than
    MIN_SLACK_TRANSIENT_BYTES of transient, fitted as SLACK_MODEL says. Unsloth's backward tensor count: the least-squares slope through 0 of the
    bytes the measured peak leaves for them on the bytes of one, over unsloth cells whose measured
    peak lies in the layer phase.
    """
    outside: dict[str, list[tuple[str, int]]] = {}
    outside_hf_by_cc: dict[str, list[int]] = {}
    slack: dict[str, list[tuple[str, tuple[float, float]]]] = {}
    backward: list[tuple[str, tuple[float, float]]] = []
    left_out: dict[str, str] = {}
    for r in records:
        if r.peak_device_bytes is not None and (reason := cap_pinned_reason(r)):
            left_out[r.cell_id] = reason
            continue
        if r.status != "ok" or None in (r.peak_device_bytes, r.peak_reserved_bytes, r.peak_allocated_bytes):
            continue
        outside.setdefault(r.backend, []).append((r.cell_id, r.peak_device_bytes - r.peak_reserved_bytes))
        cc = compute_capability_key(r)
        if r.backend == "hf" and cc:
            outside_hf_by_cc.setdefault(cc, []).append(r.peak_device_bytes - r.peak_reserved_bytes)
        if r.backend == "unsloth":
            sample = _backward_sample(r, predict)
            if sample is not None:
                backward.append((r.cell_id, sample))
        est = predict(r, 0)
        if est is None:
            continue
        transient = r.peak_allocated_bytes - est.persistent_bytes
        if transient > MIN_SLACK_TRANSIENT_BYTES:
            slack.setdefault(r.backend, []).append((r.cell_id, (transient, r.peak_reserved_bytes - r.peak_allocated_bytes)))
    median_outside = {b: statistics.median(v for _, v in pts) for b, pts in sorted(outside.items())}
    fits = {b: _slack_fit(b, [p for _, p in pts]) for b, pts in sorted(slack.items())}
    points = [p for _, p in backward]
    return {
        "measured": {
            "non_torch_bytes_by_compute_capability": {
                cc: int(statistics.median(v)) for cc, v in sorted(outside_hf_by_cc.items())},
            "unsloth_extra_non_torch_bytes": (int(median_outside["unsloth"] - median_outside["hf"])
                                              if {"hf", "unsloth"} <= set(median_outside) else None),
            "allocator_slack_of_transient": {b: f for b, (f, _) in fits.items()},
            "allocator_slack_base_bytes": {b: base for b, (_, base) in fits.items()},
            "unsloth_backward_i_elems": (sum(x * y for x, y in points) / sum(x * x for x, _ in points)
                                         if points else None),
        },
        "cells": {
            "non_torch": {b: [c for c, _ in pts] for b, pts in sorted(outside.items())},
            "allocator_slack": {b: [c for c, _ in pts] for b, pts in sorted(slack.items())},
            "unsloth_backward": [c for c, _ in backward],
        },
        "left_out": left_out,
    }


# -- rounding, rule and evidence: the data file -----------------------------------------------------


def _two_significant(x: float) -> float:
    return float(f"{x:.2g}")


def rounded_values(measured: dict[str, Any]) -> dict[str, Any]:
    """The values the estimator uses: bytes outside torch to whole MiB, slack fractions and bases
    (in MiB) to two significant figures, the backward tensor count to a whole number."""
    def whole_mib(n: float) -> int:
        return int(round(n / MiB)) * MiB

    missing = [k for k, v in measured.items() if v is None or v == {}]
    if missing:
        raise CalibrationError(f"these results do not calibrate {', '.join(missing)} "
                               "(they need ok GPU cells of both library families, hf and unsloth)")
    return {
        "non_torch_bytes_by_compute_capability": {
            cc: whole_mib(v) for cc, v in measured["non_torch_bytes_by_compute_capability"].items()},
        "unsloth_extra_non_torch_bytes": whole_mib(measured["unsloth_extra_non_torch_bytes"]),
        "allocator_slack_of_transient": {
            b: _two_significant(f) for b, f in measured["allocator_slack_of_transient"].items()},
        "allocator_slack_base_bytes": {
            b: int(_two_significant(v / MiB) * MiB) for b, v in measured["allocator_slack_base_bytes"].items()},
        "unsloth_backward_i_elems": int(round(measured["unsloth_backward_i_elems"])),
    }


def calibration_rule() -> dict[str, str]:
    """How each value is computed from the records, in words (recorded in the data file)."""
    slack_models = ", ".join(f"{b}: {m}" for b, m in SLACK_MODEL.items())
    return {
        "left_out": f"out-of-memory cells and emulated cells whose reserved memory reached {CAP_PINNED_PRESSURE} "
                    "of the torch cap: their peak is the cap, not the need",
        "non_torch_bytes_by_compute_capability": "hf cells: median of peak_device_bytes - peak_reserved_bytes per "
                                                 "compute capability, to whole MiB",
        "unsloth_extra_non_torch_bytes": "median of peak_device_bytes - peak_reserved_bytes over unsloth cells minus "
                                         "that over hf cells, to whole MiB",
        "allocator_slack": "per backend, (transient, peak_reserved_bytes - peak_allocated_bytes) over cells with "
                           f"transient > {MIN_SLACK_TRANSIENT_BYTES // MiB} MiB (transient = peak_allocated_bytes - the "
                           f"estimator's persistent bytes); {slack_models} (proportional: median ratio, base 0; "
                           "affine: least-squares line); fraction and base (in MiB) to two significant figures",
        "unsloth_backward_i_elems": "least-squares slope through 0 of (peak_allocated_bytes - the predicted layer "
                                    "phase without these tensors) on the bytes of one, over unsloth cells whose "
                                    "measured peak exceeds the predicted loss and optimizer phases; to a whole "
                                    "number",
    }


def calibration_document(result: dict[str, Any], sources: list[str]) -> dict[str, Any]:
    """The data file's content: the values the estimator uses, the rule, the sources and cells, and
    the unrounded measurements. Deterministic (no timestamps): the same inputs write the same bytes."""
    return {
        "about": "Calibrated values of the VRAM estimator (bench.analysis.estimate); every other number in it "
                 "is a formula. Written by the command below; do not edit by hand.",
        "command": "bench estimate --calibrate " + " ".join(sources) + " --write",
        "sources": list(sources),
        "rule": calibration_rule(),
        "values": rounded_values(result["measured"]),
        "measured": result["measured"],
        "cells": result["cells"],
        "left_out": result.get("left_out", {}),
    }


# -- the data file (IO) -----------------------------------------------------------------------------


def read_calibration_document(path: Path = CALIBRATION_PATH) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"cannot read the estimator's calibration {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("values"), dict):
        raise CalibrationError(f"{path}: no 'values' object")
    return doc


@functools.lru_cache(maxsize=None)
def load_calibration(path: Path = CALIBRATION_PATH) -> Calibration:
    """The calibrated values of a data file (read once per path)."""
    return Calibration.from_values(read_calibration_document(path)["values"])


def calibrated() -> Calibration:
    """The values the estimator uses: bench/data/calibration.json, read once."""
    return load_calibration(CALIBRATION_PATH)


def save_calibration(document: dict[str, Any], path: Path = CALIBRATION_PATH) -> Path:
    """Write a `calibration_document` (indented JSON, trailing newline); later loads see it."""
    Calibration.from_values(document["values"])  # refuse to write what the estimator could not read
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    load_calibration.cache_clear()
    return path
