"""The estimator validated out of sample: measured cells split into a calibration set and a held-out
set, the calibrated values fitted on the first alone, the errors reported on both.

The split is deterministic: a cell's set depends only on the file it came from and its own fields.
  * cells of the held-out files (`bench estimate --validate CAL... --validate-on FILE`) are held out;
  * cells of the calibration files that match any `SplitRule` (`--hold-out KEY=V1,V2`, `KEY>=N`,
    `KEY<=N`) are held out too; every other cell of the calibration files calibrates.
Before any fit or error figure (`split_records`):
  * out-of-memory cells and cells pinned by an emulated tier's cap
    (bench.analysis.calibration.cap_pinned_reason) are left out of both sets: their peak is the cap;
  * a held-out cell whose memory configuration (bench.schema.key.GATE_FIELDS) is also in the
    calibration set is left out of the held-out set: it is not out of sample;
  * records without a device peak (cpu mode) or that did not finish (error, timeout, skipped) are
    not GPU measurements and are not counted.
`out_of_sample` then fits the calibration on the calibration set only (the held-out records never
reach `calibration_from_records`) and predicts both sets with it. Memory is bytes throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from bench.analysis.calibration import (
    Calibration,
    cap_pinned_reason,
    calibration_from_records,
    rounded_values,
)
from bench.analysis.estimate.validate import ResolveConfig, ValidationRow, calibration_predictor, validate_records
from bench.schema.key import GATE_FIELDS, CellKey
from bench.schema.record import ResultRecord

#: Keys a `SplitRule` may name: record fields compared as text, and numeric ones (`tokens` is
#: seq_len x batch_size; `architecture` the model config's model_type; `family` the recipe's library
#: family; `gpu` the host GPU's name).
TEXT_KEYS = ("model", "architecture", "recipe", "family", "tier", "mode", "driver", "dtype", "optimizer", "gpu")
NUMERIC_KEYS = ("seq_len", "batch_size", "tokens", "lora_r")
OPERATORS = (">=", "<=", "=")  # in the order they are looked for in a rule's text


class SplitRuleError(ValueError):
    """A hold-out rule that cannot be read (CLI exit code 2)."""


@dataclass(frozen=True)
class SplitRule:
    """Hold out the cells whose `key` is one of `values` (op "=") or at least / at most a number."""

    key: str
    op: str
    values: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.key}{self.op}{','.join(self.values)}"

    def holds_out(self, record: ResultRecord, architecture: str) -> bool:
        value = _field(record, self.key, architecture)
        if self.key in NUMERIC_KEYS:
            bound = int(self.values[0])
            return value in map(int, self.values) if self.op == "=" else (
                value >= bound if self.op == ">=" else value <= bound)
        return str(value) in self.values


def _field(record: ResultRecord, key: str, architecture: str) -> Any:
    if key == "architecture":
        return architecture
    if key == "family":
        return record.backend
    if key == "gpu":
        return (record.env or {}).get("gpu_name")
    if key == "tokens":
        return record.seq_len * record.batch_size
    return getattr(record, key)


def parse_split_rule(text: str) -> SplitRule:
    """'seq_len>=8192' / 'model=llama-3.2-1b,phi-3-mini' -> a SplitRule; SplitRuleError otherwise."""
    for op in OPERATORS:
        if op in text:
            key, _, rest = text.partition(op)
            key, values = key.strip(), tuple(v.strip() for v in rest.split(",") if v.strip())
            break
    else:
        raise SplitRuleError(f"hold-out rule {text!r}: write KEY=V1,V2, KEY>=N or KEY<=N")
    if key not in TEXT_KEYS + NUMERIC_KEYS:
        raise SplitRuleError(f"hold-out rule {text!r}: unknown key {key!r}; "
                             f"known: {', '.join(TEXT_KEYS + NUMERIC_KEYS)}")
    if not values:
        raise SplitRuleError(f"hold-out rule {text!r}: no value")
    if key in NUMERIC_KEYS and not all(v.isdigit() for v in values):
        raise SplitRuleError(f"hold-out rule {text!r}: {key} takes whole numbers")
    if op != "=" and (key not in NUMERIC_KEYS or len(values) != 1):
        raise SplitRuleError(f"hold-out rule {text!r}: {op} takes one number of {', '.join(NUMERIC_KEYS)}")
    return SplitRule(key, op, values)


@dataclass(frozen=True)
class LeftOut:
    """A measured cell kept out of both fit and error figures, and why."""

    cell_id: str
    recipe: str
    set: str  # the set it would have been in: "calibration" | "held-out"
    kind: str  # "oom" | "cap" | "in calibration set"
    reason: str


@dataclass
class Split:
    """The two sets of GPU records and what was left out (`split_records`)."""

    calibration: list[ResultRecord]
    held_out: list[ResultRecord]
    left_out: list[LeftOut]
    rules: tuple[SplitRule, ...] = ()

    def left_out_counts(self) -> dict[str, int]:
        """kind -> how many cells were left out for it."""
        out: dict[str, int] = {}
        for x in self.left_out:
            out[x.kind] = out.get(x.kind, 0) + 1
        return out


def _is_gpu_measurement(r: ResultRecord) -> bool:
    return r.status in ("ok", "oom") and r.peak_device_bytes is not None and r.mode != "cpu"


def split_records(calibration_records: Iterable[ResultRecord], held_out_records: Iterable[ResultRecord],
                  rules: Iterable[SplitRule] = (), architecture_of: Callable[[str], str] = lambda _: "?") -> Split:
    """The deterministic split of the module docstring. `architecture_of(model name)` -> model_type
    (read by rules on `architecture`)."""
    rules = tuple(rules)
    calibration, held_out, left_out = [], [], []
    sets = [("held-out", r) for r in held_out_records if _is_gpu_measurement(r)]
    for r in (r for r in calibration_records if _is_gpu_measurement(r)):
        arch = architecture_of(r.model)
        sets.append(("held-out" if any(rule.holds_out(r, arch) for rule in rules) else "calibration", r))
    for name, r in sets:
        reason = cap_pinned_reason(r)
        if reason:
            left_out.append(LeftOut(r.cell_id, r.recipe, name, "oom" if r.status == "oom" else "cap", reason))
        else:
            (held_out if name == "held-out" else calibration).append(r)
    in_sample = {CellKey.of(r).view(GATE_FIELDS) for r in calibration}
    kept = []
    for r in held_out:
        if CellKey.of(r).view(GATE_FIELDS) in in_sample:
            left_out.append(LeftOut(r.cell_id, r.recipe, "held-out", "in calibration set",
                                    "its memory configuration is also measured in the calibration set: not out of "
                                    "sample"))
        else:
            kept.append(r)
    return Split(calibration, kept, left_out, rules)


@dataclass
class OutOfSample:
    """Errors of an estimator calibrated on `split.calibration` alone: in sample and held out."""

    split: Split
    calibration: Calibration  # fitted on split.calibration, rounded as bench/data/calibration.json is
    fitted: dict[str, Any]  # calibration_from_records's result (unrounded values, cells used)
    in_sample: list[ValidationRow]
    held_out: list[ValidationRow]
    skipped: list[str] = field(default_factory=list)  # cells the estimator cannot model, with why


def out_of_sample(split: Split, resolve_config: ResolveConfig) -> OutOfSample:
    """Fit the calibrated values on the calibration set only, then predict both sets with them.
    Raises bench.analysis.calibration.CalibrationError when the calibration set cannot calibrate a
    value (it needs ok GPU cells of both library families)."""
    fitted = calibration_from_records(split.calibration, calibration_predictor(resolve_config))
    calibration = Calibration.from_values(rounded_values(fitted["measured"]))
    in_sample, skipped_in = validate_records(split.calibration, resolve_config, calibration)
    held_out, skipped_out = validate_records(split.held_out, resolve_config, calibration)
    return OutOfSample(split, calibration, fitted, in_sample, held_out, skipped_in + skipped_out)


def architecture_resolver(resolve_config: ResolveConfig) -> Callable[[str], str]:
    """model name -> its config's model_type ("?" when the model does not resolve)."""
    def architecture_of(model: str) -> str:
        try:
            return str(resolve_config(model).get("model_type", "?"))
        except Exception:  # noqa: BLE001 - an unresolvable model has no architecture; validation says why
            return "?"

    return architecture_of


# -- coverage against the requirement ----------------------------------------------------------

#: What the estimator's validation should cover (issue 11): at least this many architectures ...
MIN_ARCHITECTURES = 3
#: ... and Unsloth's QLoRA recipe from this many tokens per sequence up to the second figure, or up to the
#: architecture's context (its models' largest max_position_embeddings) where that is shorter: Phi-3-mini
#: is trained at 4k, and a sequence past a model's context is not a run anyone makes.
UNSLOTH_SEQ_SPAN = (2048, 30_000)
UNSLOTH_RECIPE = "unsloth"


def coverage(rows: list[ValidationRow]) -> dict[str, Any]:
    """What `rows` cover: architectures -> models, recipe -> cells, seq_len and batch_size ranges."""
    archs: dict[str, list[str]] = {}
    for r in rows:
        archs.setdefault(r.architecture, [])
        if r.model not in archs[r.architecture]:
            archs[r.architecture].append(r.model)
    recipes = {}
    for name in dict.fromkeys(r.recipe for r in rows):
        mine = [r for r in rows if r.recipe == name]
        recipes[name] = {"cells": len(mine), "architectures": sorted({r.architecture for r in mine}),
                         "seq_len": (min(r.seq_len for r in mine), max(r.seq_len for r in mine)),
                         "batch_size": (min(r.batch_size for r in mine), max(r.batch_size for r in mine))}
    return {"architectures": {a: sorted(m) for a, m in sorted(archs.items())}, "recipes": recipes}


def _unsloth_span_gap(rows: list[ValidationRow], arch: str) -> Optional[str]:
    """What the Unsloth sequence span on `arch` lacks in `rows` (None when both ends are measured)."""
    low, high = UNSLOTH_SEQ_SPAN
    contexts = [r.context_tokens for r in rows if r.architecture == arch and r.context_tokens]
    if contexts and max(contexts) < high:
        high = max(contexts)
    seqs = [r.seq_len for r in rows if r.recipe == UNSLOTH_RECIPE and r.architecture == arch]
    lacks = []
    if not any(s <= low for s in seqs):
        lacks.append(f"<= {low}")
    if not any(s >= high for s in seqs):
        lacks.append(f">= {high:,}" + (" (its context)" if high < UNSLOTH_SEQ_SPAN[1] else ""))
    if not lacks:
        return None
    have = f"measured {min(seqs)}..{max(seqs)}" if seqs else "no cell"
    return f"{UNSLOTH_RECIPE} on {arch} at seq_len {' and '.join(lacks)} ({have})"


def coverage_gaps(result: OutOfSample) -> list[str]:
    """'not covered: ...' lines: what the requirement (MIN_ARCHITECTURES architectures; Unsloth from
    UNSLOTH_SEQ_SPAN[0] to UNSLOTH_SEQ_SPAN[1] tokens per sequence, or to the architecture's context, on
    each) still lacks, over all usable cells and over the held-out ones (what is only in the calibration
    set is not validated out of sample)."""
    gaps = []
    for label, rows in (("not covered", result.in_sample + result.held_out),
                        ("not covered out of sample", result.held_out)):
        archs = sorted({r.architecture for r in rows})
        if len(archs) < MIN_ARCHITECTURES:
            gaps.append(f"{label}: {MIN_ARCHITECTURES} architectures (measured {len(archs)}: "
                        f"{', '.join(archs) or 'none'})")
        for arch in archs:
            gap = _unsloth_span_gap(rows, arch)
            if gap:
                gaps.append(f"{label}: {gap}")
    measured = dict.fromkeys(r.recipe for r in result.in_sample + result.held_out)
    held = {r.recipe for r in result.held_out}
    gaps += [f"not covered out of sample: {name} (no held-out cell)" for name in measured if name not in held]
    return gaps
