"""Pairs: a candidate recipe's cell against the reference recipe's cell of the same configuration, and
the one rule for comparing them.

Cells of one configuration share a pair_key; one recipe among them is the *reference* (the requested
one, default hf-trl, else the first of REFERENCE_FALLBACK that was measured: records from before
recipes have hf-kbit and unsloth only) and every other recipe is a *candidate* compared with it.

A pair is *comparable* only when both sides ran ok and the parity check matched them: same
trainable parameters, same quantisation read back, same first-step loss, and the same training
fingerprint (LoRA scaling and dropout, optimizer and its hyperparameters, the learning rate of every
step both ran, the size of the first update: what the first-step loss cannot see, since LoRA B starts at
zero). Recipes of different precision (16-bit LoRA against QLoRA) differ in quantisation by design:
their parity checks everything else. Every speed-up and memory saving anywhere in the suite is read
from comparable pairs only; a pair whose sides both ran but did not match is *not matched*.

A side is a ResultRecord, or any object carrying one as `.record` (the report's cell entries).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Optional, TypeVar

from bench.analysis import metrics
from bench.schema.record import ResultRecord

T = TypeVar("T")

DEFAULT_REFERENCE = "hf-trl"
#: The reference where the requested one was not measured: what Hugging Face users run, newest first.
REFERENCE_FALLBACK = ("hf-trl", "hf-kbit", "hf-liger", "hf-lora16")
#: Relative difference allowed between the first optimizer update's RMS of two recipes.
UPDATE_RMS_RTOL = 0.25


def record_of(side: Any) -> ResultRecord:
    """The ResultRecord of a pair side (the side itself, or its `.record`)."""
    return side.record if hasattr(side, "record") else side


def reference_for(present: Iterable[str], requested: str = DEFAULT_REFERENCE) -> Optional[str]:
    """The reference recipe among `present`: the requested one, else the first of REFERENCE_FALLBACK."""
    present = set(present)
    if requested in present:
        return requested
    return next((r for r in REFERENCE_FALLBACK if r in present), None)


@dataclass
class Pair(Generic[T]):
    pair_key: str
    reference: Optional[T]
    candidate: Optional[T]

    @property
    def hf(self) -> Optional[T]:
        """The reference side (records from before recipes: the HF cell)."""
        return self.reference

    @property
    def unsloth(self) -> Optional[T]:
        """The candidate side (records from before recipes: the Unsloth cell)."""
        return self.candidate

    @property
    def any(self) -> T:
        return self.reference if self.reference is not None else self.candidate  # type: ignore[return-value]

    @property
    def sides(self) -> list[T]:
        return [s for s in (self.reference, self.candidate) if s is not None]

    @property
    def both_ok(self) -> bool:
        return bool(self.reference is not None and self.candidate is not None
                    and record_of(self.reference).ok and record_of(self.candidate).ok)

    @property
    def matched(self) -> Optional[bool]:
        """The parity verdict (None: not checked, or a side did not finish)."""
        if not self.both_ok:
            return None
        cand, ref = record_of(self.candidate), record_of(self.reference)
        return cand.matched if cand.matched is not None else ref.matched

    @property
    def comparable(self) -> bool:
        """Both ok and parity-matched: the only pairs a speed-up or memory saving is read from."""
        return self.both_ok and self.matched is True

    @property
    def not_matched(self) -> bool:
        """Both ran but the parity check failed or never ran: never compared, never recommended."""
        return self.both_ok and self.matched is not True

    @property
    def speedup(self) -> Optional[float]:
        """Candidate tokens/s over reference tokens/s, for a comparable pair."""
        if not self.comparable:
            return None
        return metrics.speedup(record_of(self.reference).tokens_per_s, record_of(self.candidate).tokens_per_s)

    def memory_reduction(self, metric: str = "peak_device_bytes") -> Optional[float]:
        """Fraction of the reference's peak `metric` (a record field, bytes) the candidate saves (comparable pairs)."""
        if not self.comparable:
            return None
        return metrics.memory_reduction(getattr(record_of(self.reference), metric),
                                        getattr(record_of(self.candidate), metric))

    def parity_reasons(self) -> list[str]:
        for side in (self.candidate, self.reference):
            if side is not None and record_of(side).parity:
                return list(record_of(side).parity.get("reasons") or [])
        return []


def _groups(items: Iterable[T], record: Callable[[T], ResultRecord]) -> dict[str, list[T]]:
    groups: dict[str, list[T]] = {}
    for it in items:
        groups.setdefault(record(it).pair_key, []).append(it)
    return groups


def pair_records(items: Iterable[T], reference: str = DEFAULT_REFERENCE,
                 record: Callable[[T], ResultRecord] = record_of) -> list[Pair[T]]:
    """Pairs of records (or entries carrying one) by pair_key, in first-seen order: each candidate recipe
    against the group's reference; a group with only the reference (or no reference) still gets a pair
    per cell, with the missing side None."""
    pairs: list[Pair[T]] = []
    for key, group in _groups(items, record).items():
        by_recipe = {record(it).recipe: it for it in group}
        ref_name = reference_for(by_recipe, reference)
        ref = by_recipe.get(ref_name) if ref_name else None
        candidates = [it for r, it in by_recipe.items() if r != ref_name]
        if not candidates:
            pairs.append(Pair(key, ref, None))
        pairs += [Pair(key, ref, it) for it in candidates]
    return pairs


def annotate_parity(records: list[ResultRecord], reference: str = DEFAULT_REFERENCE) -> list[ResultRecord]:
    """Set `parity` / `matched` on every record from its pair: a candidate carries its verdict against
    the reference; the reference is matched when all its candidates are. A verdict a record was written
    with (schema version 1: the launcher stored it on the pair's second cell) is kept as measured; records
    whose pair has a side that did not finish keep what they carry."""
    by_ref: dict[int, list[bool]] = {}
    for p in pair_records(records, reference):
        if not p.both_ok:
            continue
        verdict = _stored_verdict(p) or parity_for(p.reference, p.candidate)
        p.candidate.parity, p.candidate.matched = verdict, verdict["matched"]
        by_ref.setdefault(id(p.reference), []).append(verdict["matched"])
        if p.reference.parity is None or not verdict["matched"]:
            p.reference.parity = verdict
    for r in records:
        if id(r) in by_ref:
            r.matched = all(by_ref[id(r)])
    return records


def _stored_verdict(p: Pair) -> Optional[dict]:
    """The verdict a side of this very pair was written with (schema version 1), if any."""
    cells = {p.reference.cell_id, p.candidate.cell_id}
    for side in (p.candidate, p.reference):
        if side.parity and set(side.parity.get("cells") or ()) == cells:
            return side.parity
    return None


def parity_for(reference: ResultRecord, candidate: ResultRecord) -> dict:
    """Parity verdict between two ok records of one configuration (the reference's figures first)."""
    ref, cand = reference, candidate
    precision_differs = bool(ref.quantization) != bool(cand.quantization)
    verdict = metrics.parity(ref.trainable_params, cand.trainable_params,
                             None if precision_differs else ref.loss_first,
                             None if precision_differs else cand.loss_first,
                             check_loss=not precision_differs)
    if precision_differs:
        verdict["precision_differs"] = True
    elif ref.quantization and cand.quantization:
        keys = ("load_in_4bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype")
        diff = [k for k in keys if _norm(ref.quantization.get(k)) != _norm(cand.quantization.get(k))]
        if diff:
            verdict["matched"] = False
            verdict["reasons"].append("quantization differs: " + ", ".join(
                f"{k} {ref.quantization.get(k)} vs {cand.quantization.get(k)}" for k in diff))
    for reason in fingerprint_differences(ref.training_fingerprint, cand.training_fingerprint):
        verdict["matched"] = False
        verdict["reasons"].append(reason)
    verdict["cells"] = [ref.cell_id, cand.cell_id]
    return verdict


def fingerprint_differences(a: Optional[dict], b: Optional[dict]) -> list[str]:
    """What differs between two training fingerprints (bench.run: read back from the live model and
    optimizer); fields one side lacks are not compared."""
    if not a or not b:
        return []
    out = []
    for name in ("lora_scaling", "lora_dropout", "optimizer"):
        if name in a and name in b and a[name] != b[name]:
            out.append(f"{name.replace('_', ' ')} differs: {a[name]} vs {b[name]}")
    step = _first_lr_difference(a.get("lr_per_step"), b.get("lr_per_step"))
    if step is not None:
        out.append(f"learning rate differs from step {step + 1}: {a['lr_per_step'][step]} vs {b['lr_per_step'][step]}")
    rel = metrics.relative_difference(a.get("first_update_rms"), b.get("first_update_rms"))
    if rel is not None and rel > UPDATE_RMS_RTOL:
        out.append(f"first optimizer update differs by {rel:.0%} (RMS {a['first_update_rms']:.3g} vs "
                   f"{b['first_update_rms']:.3g}): learning rate or optimizer state differ")
    return out


def _first_lr_difference(a: Optional[list], b: Optional[list]) -> Optional[int]:
    """The first step (0-based) at which two learning-rate schedules differ, over the steps both ran (the
    timed window runs as many steps as its minimum time needs, so the lists' lengths differ); None if none."""
    for i, (x, y) in enumerate(zip(a or [], b or [])):
        if not math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=1e-12):
            return i
    return None


def _norm(value):
    """'torch.bfloat16' and 'bfloat16' name the same dtype."""
    return value.removeprefix("torch.") if isinstance(value, str) else value
