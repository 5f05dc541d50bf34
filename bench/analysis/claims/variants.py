"""Claims about one setting (checkpointing, optimizer, LoRA rank): cells alike in everything but it (pure).

`variant_pairs` finds them; `check_variant` reads the rule's quantity between each base cell and its
variant as a measurement (time from the timed steps' per-step rates, bootstrapped; memory from the
peaks of their repeats) and judges them as every numeric rule is (base.judge).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from bench.analysis.claims.base import Inputs, judge, or_default, select_cells
from bench.analysis.claims.evidence import Cell, Span
from bench.analysis.claims.measure import Measurement, pair_memory_reduction, pair_speedup
from bench.analysis.claims.rules import NOT_MEASURED
from bench.analysis.speed import repeats_of
from bench.analysis.stats import Interval
from bench.schema.key import VARIANT_FIELDS, CellKey
from bench.units import GiB


def _variant_key(entry, field: str) -> tuple:
    skip = {field, "lora_alpha"} if field == "lora_r" else {field}
    key = CellKey.of(entry.record)
    targets = key.view(("target_modules",))[0][1] if field != "target_modules" else ()
    return (entry.host, targets) + key.values(f for f in VARIANT_FIELDS if f not in skip)


def variant_pairs(entries: Sequence, field: str, base: Any = None, variant: Any = None) -> list[tuple]:
    """(base entry, variant entry) of ok GPU cells alike in everything but `field` (and alpha, for rank).

    With base/variant None: consecutive values of `field` in ascending order (e.g. r8 -> r16 -> r32).
    """
    groups: dict = {}
    for e in entries:
        if e.record.ok and e.record.mode != "cpu":
            groups.setdefault(_variant_key(e, field), {})[getattr(e.record, field)] = e
    out = []
    for key in sorted(groups, key=repr):
        by_value = groups[key]
        if base is not None:
            if base in by_value and variant in by_value:
                out.append((by_value[base], by_value[variant]))
        else:
            values = sorted(by_value)
            out.extend((by_value[a], by_value[b]) for a, b in zip(values, values[1:]))
    return out


def _variant_measurement(rule: dict, inp: Inputs, b, v) -> Optional[Measurement]:
    """The rule's quantity between a base entry and its variant over their repeats (None when a figure is missing)."""
    rb, rv = repeats_of(b), repeats_of(v)
    quantity = rule["quantity"]
    if quantity == "time_overhead":  # extra time per token: base over variant throughput, minus one
        got = pair_speedup(rv, rb)
    elif quantity == "memory_reduction":
        got = pair_memory_reduction(rb, rv, rule["memory"])
    else:
        mb, mv = getattr(b.record, rule["memory"]), getattr(v.record, rule["memory"])
        if mb is None or mv is None:
            return None
        per = (mb - mv) / GiB if quantity == "memory_saving" else \
            (mv - mb) / (getattr(v.record, rule["field"]) - getattr(b.record, rule["field"]))
        got = per, Interval(per, None, None)
    if got is None:
        return None
    value, iv = got
    if quantity == "time_overhead":
        value, iv = value - 1.0, Interval(iv.estimate - 1.0, *((iv.low - 1.0, iv.high - 1.0) if iv.known else (None, None)))
    field = rule["field"]
    spans = [Cell(b.ref), f" {getattr(b.record, field)} -> ", Cell(v.ref), f" {getattr(v.record, field)}"]
    return Measurement(value, iv, min(len(rb), len(rv)), spans, (b.record, v.record))


VARIANT_UNITS = {"time_overhead": ("signed_percent", "cell pairs (extra time per token)"),
                 "memory_reduction": ("percent", "cell pairs (memory saved)"),
                 "memory_saving": ("GiB", "cell pairs (memory saved)"),
                 "memory_per_unit": ("MB", "cell pairs (memory per unit of rank)")}


def check_variant(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    field = rule["field"]
    cells, why = select_cells(rule, inp)
    ms = [m for b, v in variant_pairs(cells, field, rule.get("base"), rule.get("variant"))
          if (m := _variant_measurement(rule, inp, b, v)) is not None]
    if not ms:
        variants = (f"'{rule['base']}' vs '{rule['variant']}'" if "base" in rule else "several values")
        return NOT_MEASURED, [*or_default(why, f"no two cells alike but for {field.replace('_', ' ')} ({variants})"), "."]
    unit, noun = VARIANT_UNITS[rule["quantity"]]
    return judge(rule, ms, unit, noun)
