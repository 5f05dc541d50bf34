"""Run records -> the rows the F2 fallback heuristic (kernels_check.heuristic) reads."""

from __future__ import annotations

from typing import Iterable

from bench.schema.pairs import DEFAULT_REFERENCE, pair_records
from bench.schema.record import ResultRecord
from kernels_check.heuristic import F2_METRIC

#: The recipe whose kernels F2 is about.
F2_CANDIDATE = "unsloth"


def model_pairs(records: Iterable[ResultRecord], model: str, reference: str = DEFAULT_REFERENCE,
                candidate: str = F2_CANDIDATE) -> list[dict]:
    """The model's `candidate` cells against the reference (the requested one, else the first fallback
    measured: bench.schema.pairs.pair_records) whose sides both ran ok: cell size, the two recipes,
    memory reduction on F2's metric (peak allocated), speed-up and parity. Reduction and speed-up are
    None for a pair that is not matched (the one comparable rule, bench.schema.pairs)."""
    rows = []
    for p in pair_records([r for r in records if r.model == model], reference):
        if not p.both_ok or p.candidate.recipe != candidate:
            continue
        r = p.candidate
        rows.append({"tier": r.tier, "mode": r.mode, "seq_len": r.seq_len, "batch_size": r.batch_size,
                     "reference": p.reference.recipe, "candidate": r.recipe,
                     "memory_reduction": p.memory_reduction(F2_METRIC), "speedup": p.speedup,
                     "matched": p.matched})
    return rows
