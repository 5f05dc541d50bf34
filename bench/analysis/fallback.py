"""Run records -> the rows the F2 fallback heuristic (kernels_check.heuristic) reads."""

from __future__ import annotations

from typing import Iterable

from bench.schema.pairs import pair_records
from bench.schema.record import ResultRecord
from kernels_check.heuristic import F2_METRIC


def model_pairs(records: Iterable[ResultRecord], model: str) -> list[dict]:
    """The model's pairs whose sides both ran ok: cell size, memory reduction on F2's metric
    (peak allocated), speed-up and parity. Reduction and speed-up are None for a pair that is not
    matched (the one comparable rule, bench.schema.pairs)."""
    rows = []
    for p in pair_records([r for r in records if r.model == model]):
        if not p.both_ok:
            continue
        r = p.unsloth
        rows.append({"tier": r.tier, "mode": r.mode, "seq_len": r.seq_len, "batch_size": r.batch_size,
                     "memory_reduction": p.memory_reduction(F2_METRIC), "speedup": p.speedup,
                     "matched": r.matched})
    return rows
