"""Pairs against a named baseline recipe, whatever the report's reference is.

The report compares every candidate with its reference (bench.analysis.results; parity annotated
against it when records are read). Some readings need another baseline: a claim made against 16-bit
LoRA (hf-lora16), the verdict "unsloth against hf-trl", a step of the ladder (hf-kbit -> hf-trl).
`pairs_against` forms those pairs with bench.schema.pairs.pair_records, keeps only the ones whose
reference really is the baseline (never a fallback) and whose candidate is the one asked for, and
gives each the parity verdict between exactly these two cells: the one a record carries for them
(written by the run, or annotated when read), else bench.schema.pairs.parity_for. The comparable rule
is Pair's own: both ok and parity-matched.

Sides are `Side`s: the entry (`.ref`, `.host`, `.path` pass through) with a copy of its record that
carries this pair's verdict, so the entries' own records are never changed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from bench.schema.pairs import Pair, pair_records, parity_for, record_of
from bench.schema.record import ResultRecord


@dataclass
class Side:
    """One side of a pair against a baseline: the report entry and its record with this pair's verdict."""

    entry: Any  # a report entry (bench.analysis.results.Entry) or a bare ResultRecord
    record: ResultRecord

    @property
    def ref(self) -> str:
        return getattr(self.entry, "ref", "")

    @property
    def host(self) -> Optional[str]:
        return getattr(self.entry, "host", None)

    @property
    def path(self):
        return getattr(self.entry, "path", None)

    @property
    def repeat_records(self) -> list[ResultRecord]:
        """The records of every repeat of the entry's cell (bench.analysis.speed reads its speed from them)."""
        return list(getattr(self.entry, "repeat_records", None) or [])


def verdict_between(a: ResultRecord, b: ResultRecord) -> dict:
    """The parity verdict between two ok records of one configuration (`a` the baseline): the verdict
    either record carries for exactly these two cells, else one computed by parity_for."""
    cells = {a.cell_id, b.cell_id}
    for r in (b, a):
        if r.parity and set(r.parity.get("cells") or ()) == cells:
            return r.parity
    return parity_for(a, b)


def pair_between(pair_key: str, baseline: Any, candidate: Any) -> Pair[Side]:
    """A Pair of two entries (either may be None) whose `matched` is the verdict between exactly these two."""
    a = record_of(baseline) if baseline is not None else None
    b = record_of(candidate) if candidate is not None else None
    verdict = verdict_between(a, b) if (a is not None and b is not None and a.ok and b.ok) else None
    matched = None if verdict is None else verdict["matched"]

    def side(entry, record):
        if entry is None:
            return None
        return Side(entry, dataclasses.replace(record, matched=matched, parity=verdict) if verdict else record)

    return Pair(pair_key, side(baseline, a), side(candidate, b))


def pairs_against(entries: Sequence[Any], baseline: str, candidate: Optional[str] = None) -> list[Pair[Side]]:
    """Pairs of `candidate` (every other recipe when None) against exactly `baseline`, over entries of one
    environment group, in first-seen order. Configurations without a `baseline` cell give no pair."""
    out = []
    for p in pair_records(entries, reference=baseline):
        if p.reference is None or p.candidate is None or record_of(p.reference).recipe != baseline:
            continue
        if candidate is not None and record_of(p.candidate).recipe != candidate:
            continue
        out.append(pair_between(p.pair_key, p.reference, p.candidate))
    return out
