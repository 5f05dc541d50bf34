"""What every check shares: its inputs, the claim's pairs, and the verdict over measurements (pure).

Inputs are the report's entries (objects with `.record`, `.ref`, `.host` and the cell's `.repeat_records`, as
bench.analysis.results.Entry; bench.analysis.speed.repeats_of reads a cell's repeats from them), grouped by
environment for pairing, and the kernels evidence (kernels-check results, the kernel micro-benchmarks)
passed in explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from bench.analysis.against import pairs_against
from bench.analysis.claims.evidence import Figure, Span, joined, rule_spans
from bench.analysis.claims.measure import Measurement, aggregate_interval, interval_verdict, too_little
from bench.analysis.claims.conditions import select
from bench.analysis.claims.rules import FAILS, HOLDS, INCONCLUSIVE, candidate_of, recipe_matches
from bench.schema.pairs import Pair

VERDICT_OF = {True: HOLDS, False: FAILS, None: INCONCLUSIVE}


@dataclass(frozen=True)
class Inputs:
    entries: Sequence  # every entry of the evidence
    groups: Sequence[Sequence]  # the GPU entries of each environment group (pairs never cross groups)
    unmatched: Sequence[Pair]  # pairs whose parity check failed: their sides never count as cells
    params: dict[str, int]  # base-model parameters per model
    kernels: Sequence[tuple[str, dict]] = ()  # (source label, kernels-check result) of kernels_check
    benchmark: Optional[tuple[str, dict]] = None  # (source label, pytest-benchmark JSON) of the kernel tests


def candidate_record(pair: Pair):
    return pair.candidate.record


def entry_record(entry):
    return entry.record


def claim_pairs(rule: dict, inp: Inputs) -> tuple[list[Pair], list[Pair], list[Span]]:
    """(comparable pairs, pairs not matched, absent) of the rule's candidate against its baseline over
    every GPU group; `absent` names the recipe that was not measured (then there are no pairs)."""
    baseline, candidate = rule["baseline"], candidate_of(rule)
    measured = {e.record.recipe for g in inp.groups for e in g}
    missing = [r for r in (baseline, candidate) if r not in measured]
    if missing:
        return [], [], [f"no GPU cell of {' or '.join(missing)} was measured (the claim compares {candidate} "
                        f"with {baseline})"]
    seen, pairs = set(), []
    for p in (p for g in inp.groups for p in pairs_against(g, baseline, candidate)):
        key = (p.candidate.host if p.candidate else None, p.pair_key)
        if key not in seen:  # one pair per cell: its repeats are the pair's, not more pairs
            seen.add(key)
            pairs.append(p)
    return [p for p in pairs if p.comparable], [p for p in pairs if p.not_matched], []


def pairs_noun(rule: dict) -> str:
    return f"matched pairs of {candidate_of(rule)} against {rule['baseline']}"


def memory_label(field_name: str) -> str:
    return {"peak_device_bytes": "peak device memory", "peak_allocated_bytes": "peak allocated memory"}.get(
        field_name, field_name)


def counted(n: int, noun: str) -> str:
    """'3 matched pairs (...)', '1 matched pair (...)'."""
    if n == 1:
        noun = noun.replace("pairs", "pair", 1).replace("cells", "cell", 1)
    return f"{n} {noun}"


def or_default(reason: list[Span], default: str) -> list[Span]:
    return reason or [default]


def where_label(records: Sequence) -> str:
    """'h100 native', 't4 emulated': the tiers and modes of a measurement's records."""
    return ", ".join(dict.fromkeys(f"{r.tier} {r.mode}" for r in records))


def interval_spans(m_or_iv: Any, unit: str) -> list[Span]:
    """' [1.30x to 1.45x]' for a known interval, '' otherwise."""
    iv = getattr(m_or_iv, "interval", m_or_iv)
    return [" [", Figure(iv.low, unit), " to ", Figure(iv.high, unit), "]"] if iv.known else []


def measurement_spans(m: Measurement, unit: str) -> list[Span]:
    """'1.39x [1.30x to 1.45x] (c1/c2, h100 native, 2 repeats)'."""
    reps = f", {m.units} repeats" if m.units > 1 else ""
    return [Figure(m.value, unit), *interval_spans(m, unit), " (", *m.spans,
            f"{', ' if m.records else ''}{where_label(m.records)}{reps})"]


def judge(rule: dict, ms: list[Measurement], unit: str, noun: str) -> tuple[str, list[Span]]:
    """The verdict over measurements: too little evidence (measure.too_little) is inconclusive; else the
    aggregate's interval (the median's, or the envelope of all for "each", the largest for "max")
    against the rule's band: inside holds, outside does not hold, straddling a bound is inconclusive."""
    refs = joined((measurement_spans(m, unit) for m in ms), "; ")
    few = too_little(ms, rule.get("min_pairs", 1))
    if few:
        return INCONCLUSIVE, [f"too little evidence: {few}: ", *refs, ". Rule: ", *rule_spans(rule, unit), "."]
    aggregate = rule.get("aggregate", "each")
    own = [interval_verdict(m.interval, rule) for m in ms]
    if aggregate == "max":
        ok = True if True in own else (False if all(v is False for v in own) else None)
        head = [f"largest of {counted(len(ms), noun)}: "]
    else:
        iv = aggregate_interval(ms, aggregate)
        ok = interval_verdict(iv, rule)
        if aggregate == "each" and False in own:
            ok = False
        what = "median" if aggregate == "median" else "all"
        head = [f"{what} ", Figure(iv.estimate, unit), *interval_spans(iv, unit), f" over {counted(len(ms), noun)}: "]
    text = [*head, *refs, ". Rule: ", *rule_spans(rule, unit), "."]
    if ok is None:
        text.append(" The 95 % interval is not clear of the rule's bounds.")
    return VERDICT_OF[ok], text


def gpu_cells(inp: Inputs, rule: dict) -> list:
    """GPU cells of the rule's recipe and family, leaving out the sides of pairs that are not matched."""
    excluded = {id(e) for pair in inp.unmatched for e in pair.sides}
    return [e for e in inp.entries if e.record.mode != "cpu" and id(e) not in excluded
            and recipe_matches(rule, e.record.recipe, e.record.backend)]


def cells_noun(rule: dict) -> str:
    """'GPU cells', 'GPU unsloth cells', 'GPU hf-family cells': what a cell rule reads."""
    recipe, family = rule.get("recipe", "any"), rule.get("backend", "any")
    if recipe != "any":
        return f"GPU {recipe if isinstance(recipe, str) else ' / '.join(recipe)} cells"
    return "GPU cells" if family == "any" else f"GPU {family}-family cells"


def select_cells(rule: dict, inp: Inputs) -> tuple[list, list[Span]]:
    return select(gpu_cells(inp, rule), rule.get("where", {}), entry_record, cells_noun(rule), inp.params)
