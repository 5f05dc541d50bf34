"""Pairs of hf / unsloth records of one configuration, and their comparison (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from bench.analysis import metrics as measure
from bench.schema.store import ResultRecord


@dataclass
class Pair:
    pair_key: str
    hf: Optional[ResultRecord]
    unsloth: Optional[ResultRecord]

    @property
    def any(self) -> ResultRecord:
        return self.hf or self.unsloth  # type: ignore[return-value]

    @property
    def both_ok(self) -> bool:
        return bool(self.hf and self.unsloth and self.hf.ok and self.unsloth.ok)

    @property
    def speedup(self) -> Optional[float]:
        """Unsloth tokens/s over HF tokens/s."""
        if not self.both_ok:
            return None
        return measure.speedup(self.hf.tokens_per_s, self.unsloth.tokens_per_s)

    def memory_reduction(self, metric: str = "peak_device_bytes") -> Optional[float]:
        """Fraction of HF's peak memory that Unsloth saves, on `metric`."""
        if not self.both_ok:
            return None
        return measure.memory_reduction(getattr(self.hf, metric), getattr(self.unsloth, metric))


def pair_records(records: list[ResultRecord]) -> list[Pair]:
    """Group records by pair_key, in first-seen order."""
    pairs: dict[str, Pair] = {}
    for r in records:
        p = pairs.setdefault(r.pair_key, Pair(r.pair_key, None, None))
        if r.backend == "hf":
            p.hf = r
        elif r.backend == "unsloth":
            p.unsloth = r
    return list(pairs.values())


def parity_for(record: ResultRecord, partner: ResultRecord) -> dict:
    """Parity verdict between two ok records of one pair (hf first in the lists)."""
    hf, un = (record, partner) if record.backend == "hf" else (partner, record)
    verdict = measure.parity(hf.trainable_params, un.trainable_params, hf.loss_first, un.loss_first)
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
