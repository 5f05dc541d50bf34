"""Pairs: the hf and unsloth cells of one configuration, and the one rule for comparing them.

A pair is *comparable* only when both sides ran ok and the parity check matched them (same
trainable parameters, same quantisation read back, same first-step loss). Every speed-up and
memory saving anywhere in the suite (console, report, claims, F2 heuristic) is read from comparable
pairs only; a pair whose sides both ran but did not match is *not matched* and is named as such.

A side is a ResultRecord, or any object carrying one as `.record` (the report's cell entries), so
the same Pair serves every stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Optional, TypeVar

from bench.analysis import metrics
from bench.schema.record import ResultRecord

T = TypeVar("T")


def record_of(side: Any) -> ResultRecord:
    """The ResultRecord of a pair side (the side itself, or its `.record`)."""
    return side.record if hasattr(side, "record") else side


@dataclass
class Pair(Generic[T]):
    pair_key: str
    hf: Optional[T]
    unsloth: Optional[T]

    @property
    def any(self) -> T:
        return self.hf if self.hf is not None else self.unsloth  # type: ignore[return-value]

    @property
    def sides(self) -> list[T]:
        return [s for s in (self.hf, self.unsloth) if s is not None]

    @property
    def both_ok(self) -> bool:
        return bool(self.hf is not None and self.unsloth is not None
                    and record_of(self.hf).ok and record_of(self.unsloth).ok)

    @property
    def matched(self) -> Optional[bool]:
        """The parity verdict (None: not checked, or a side did not finish)."""
        if not self.both_ok:
            return None
        un, hf = record_of(self.unsloth), record_of(self.hf)
        return un.matched if un.matched is not None else hf.matched

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
        """Unsloth tokens/s over HF tokens/s, for a comparable pair."""
        if not self.comparable:
            return None
        return metrics.speedup(record_of(self.hf).tokens_per_s, record_of(self.unsloth).tokens_per_s)

    def memory_reduction(self, metric: str = "peak_device_bytes") -> Optional[float]:
        """Fraction of HF's peak `metric` (a record field, bytes) that Unsloth saves, for a comparable pair."""
        if not self.comparable:
            return None
        return metrics.memory_reduction(getattr(record_of(self.hf), metric), getattr(record_of(self.unsloth), metric))

    def parity_reasons(self) -> list[str]:
        for side in (self.unsloth, self.hf):
            if side is not None and record_of(side).parity:
                return list(record_of(side).parity.get("reasons") or [])
        return []


def pair_records(items: Iterable[T], record: Callable[[T], ResultRecord] = record_of) -> list[Pair[T]]:
    """Group records (or entries carrying one) by pair_key, in first-seen order."""
    pairs: dict[str, Pair[T]] = {}
    for it in items:
        r = record(it)
        p = pairs.setdefault(r.pair_key, Pair(r.pair_key, None, None))
        if r.backend == "hf":
            p.hf = it
        elif r.backend == "unsloth":
            p.unsloth = it
    return list(pairs.values())


def partner_cell_id(record: ResultRecord) -> str:
    """The cell_id of the other side of `record`'s pair."""
    return record.pair_key + ("-unsloth" if record.backend == "hf" else "-hf")


def parity_for(record: ResultRecord, partner: ResultRecord) -> dict:
    """Parity verdict between two ok records of one pair (hf first in the lists)."""
    hf, un = (record, partner) if record.backend == "hf" else (partner, record)
    verdict = metrics.parity(hf.trainable_params, un.trainable_params, hf.loss_first, un.loss_first)
    if hf.quantization and un.quantization:
        keys = ("load_in_4bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype")
        diff = [k for k in keys if _norm(hf.quantization.get(k)) != _norm(un.quantization.get(k))]
        if diff:
            verdict["matched"] = False
            verdict["reasons"].append(
                "quantization differs: " + ", ".join(f"{k} {hf.quantization.get(k)} vs {un.quantization.get(k)}" for k in diff))
    verdict["cells"] = [hf.cell_id, un.cell_id]
    return verdict


def _norm(value):
    """'torch.bfloat16' and 'bfloat16' name the same dtype."""
    return value.removeprefix("torch.") if isinstance(value, str) else value
