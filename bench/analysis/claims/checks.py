"""The checks: one per rule kind, each a pure function (rule, inputs) -> (verdict, evidence).

A rule comparing two recipes (rules.PAIR_KINDS) reads the candidate's cells against exactly the
baseline recipe it names (bench.analysis.against.pairs_against): comparable pairs speak to the claim,
pairs that are not matched are named as excluded and never used; where the baseline (or the candidate)
was not measured the claim is "not measured", saying so. Cells that are sides of a pair that is not
matched never count as cells either. A claim whose conditions no cell meets is "not measured", with
the first condition none met. Numeric rules judge measurements with intervals (bench.analysis.claims.
measure, base.judge): fewer than two independent measurements (pairs or repeats), or an interval not
clear of the rule's bounds, is "inconclusive". Checks of variants live in `variants`, of kernels (F1,
F2, M4) in `kernel_checks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from bench.analysis.claims.base import (Inputs, candidate_record, claim_pairs, counted, entry_record, judge, memory_label,
                                        or_default, pairs_noun, select_cells)
from bench.analysis.claims.conditions import base_params, select
from bench.analysis.claims.evidence import Cell, Evidence, Figure, Span, evidence, joined, pair_cells, rule_spans
from bench.analysis.claims.kernel_checks import check_fallback, check_fast_path_coverage, check_kernel_speedup
from bench.analysis.claims.measure import MIN_UNITS, Measurement, pair_memory_reduction, pair_speedup, values_interval
from bench.analysis.claims.rules import (FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, Claim, candidate_of,
                                         compare)
from bench.analysis.claims.variants import check_variant
from bench.analysis.borderline import fits_clearly, is_borderline, memory_cap_bytes
from bench.analysis.speed import repeats_of
from bench.analysis.stats import Interval
from bench.schema.pairs import Pair
from bench.units import GiB


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: str  # HOLDS | FAILS | NOT_MEASURED | INCONCLUSIVE
    evidence: Evidence  # what was measured, with cell references


def check_claims(claims: Sequence[Claim], entries: Sequence, groups: Sequence[Sequence],
                 unmatched: Sequence[Pair] = (), kernels: Sequence[tuple[str, dict]] = (),
                 benchmark: Optional[tuple[str, dict]] = None) -> list[ClaimResult]:
    """One result per claim, in the claims file's order. `groups`: the GPU entries of each environment
    group; `unmatched`: pairs that are not matched; `kernels`: (source, kernels-check result) pairs;
    `benchmark`: (source, the kernel tests' pytest-benchmark JSON)."""
    inp = Inputs(entries, groups, [p for p in unmatched if p.not_matched], base_params(entries),
                 tuple(kernels), benchmark)
    out = []
    for claim in claims:
        verdict, spans = CHECKS[claim.rule["kind"]](claim.rule, inp)
        out.append(ClaimResult(claim, verdict, evidence(spans)))
    return out


def _pair_measurement(rule: dict, pair: Pair, inp: Inputs) -> Optional[Measurement]:
    ref, cand = repeats_of(pair.reference), repeats_of(pair.candidate)
    if rule["metric"] == "speedup":
        got = pair_speedup(ref, cand)
    else:
        got = pair_memory_reduction(ref, cand, rule["memory"])
    if got is None:
        return None
    return Measurement(got[0], got[1], min(len(ref), len(cand)), [pair_cells(pair)],
                       (pair.reference.record, pair.candidate.record))


def _check_pair_metric(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    where = rule.get("where", {})
    pairs, unmatched, absent = claim_pairs(rule, inp)
    if absent:
        return NOT_MEASURED, [*absent, "."]
    kept, why = select(pairs, where, candidate_record, pairs_noun(rule), inp.params)
    excluded, _ = select(unmatched, where, candidate_record, "pairs", inp.params)
    note = [f" Excluded: {len(excluded)} pair(s) meeting the conditions failed the parity check (NOT MATCHED: ",
            *joined(([pair_cells(p)] for p in excluded), ", "), ")."] if excluded else []
    ms = [m for p in kept if (m := _pair_measurement(rule, p, inp)) is not None]
    if not ms:
        return NOT_MEASURED, [*or_default(why, "the matched pairs lack the figures"), ".", *note]
    baseline, candidate = rule["baseline"], candidate_of(rule)
    if rule["metric"] == "speedup":
        unit, noun = "ratio", f"matched pairs ({candidate} over {baseline}: median per-step tokens/s)"
    else:
        unit, noun = "percent", f"matched pairs ({memory_label(rule['memory'])} saved by {candidate} against {baseline})"
    verdict, text = judge(rule, ms, unit, noun)
    return verdict, text + note



def _cell_measurement(rule: dict, entry, inp: Inputs) -> Optional[Measurement]:
    """A cell's figure over its repeats (GiB): their median and, with two or more, their interval."""
    reps = [r for r in repeats_of(entry) if getattr(r, rule["field"]) is not None]
    if not reps:
        return None
    values = [getattr(r, rule["field"]) / GiB for r in reps]
    iv = values_interval(values) if len(values) > 1 else Interval(values[0], None, None)
    return Measurement(iv.estimate, iv, len(values), [Cell(entry.ref)], (entry.record,))


def _check_cell_value(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    cells, why = select_cells(rule, inp)
    ms, oom_over, seen = [], [], set()
    for e in cells:
        if (e.host, e.record.cell_id) in seen:
            continue
        seen.add((e.host, e.record.cell_id))
        if e.record.ok and (m := _cell_measurement(rule, e, inp)) is not None:
            ms.append(m)
        elif e.record.status == "oom" and rule["op"] == "at_most":
            cap = memory_cap_bytes(e.record)
            if cap and cap / GiB >= rule["threshold"]:
                oom_over.append((cap / GiB, Cell(e.ref)))
    if not ms and not oom_over:
        return NOT_MEASURED, [*or_default(why, "no cell meeting the conditions finished"), "."]
    label = memory_label(rule["field"])
    if oom_over:  # out of memory under a cap above the claimed bound: the peak exceeded it, beyond doubt
        text = joined((["out of memory at a ", Figure(v, "GiB"), " cap (", cell, ")"] for v, cell in oom_over), "; ")
        if ms:
            text += ["; ", *joined(([Figure(m.value, "GiB"), " (", *m.spans, ")"] for m in ms), "; ")]
        return FAILS, [f"{label}: ", *text, ". Rule: ", *rule_spans(rule, "GiB"), "."]
    return judge(rule, ms, "GiB", f"cells ({label})")


def _check_cell_points(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    cells, why = select_cells(rule, inp)
    parts, bad, measured_points = [], 0, 0
    for point in rule["points"]:
        hits = [e for e in cells if e.record.model == point["model"] and e.record.batch_size == point["batch_size"]
                and e.record.ok and getattr(e.record, rule["field"]) is not None]
        if not hits:
            continue
        measured_points += 1
        for e in hits:
            v = getattr(e.record, rule["field"]) / GiB
            ok = compare(v, rule, target=point["target"])
            bad += not ok
            parts.append([f"{point['model']} b{point['batch_size']}: ", Figure(v, "GiB"), " vs ",
                          Figure(point["target"], "number"), " (", Figure(v / point["target"] - 1, "signed_percent"),
                          f"{'' if ok else ', outside'}) (", Cell(e.ref), ")"])
    if not parts:
        return NOT_MEASURED, [*or_default(why, "none of the stated model and batch-size points was measured"), "."]
    if len(parts) < MIN_UNITS:
        return INCONCLUSIVE, [f"too little evidence: {counted(len(parts), 'cells')}, a verdict needs at least "
                              f"{MIN_UNITS}: ", *joined(parts, "; "), "."]
    text = [f"{measured_points} of {len(rule['points'])} stated points measured, {counted(len(parts), 'cells')} "
            f"({memory_label(rule['field'])}): ", *joined(parts, "; "), ". Rule: ", *rule_spans(rule, "GiB"), "."]
    return (FAILS if bad else HOLDS), text


def _check_fits(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    cells, why = select_cells(rule, inp)
    finished = [e for e in cells if e.record.status in ("ok", "oom", "skipped")]
    if not finished:
        extra = f" ({len(cells)} failed with errors, not memory)" if cells else ""
        return NOT_MEASURED, [*or_default(why, "no cell meeting the conditions finished"), extra + "."]
    parts, fits_any, barely_all = [], False, True
    for e in finished:
        reps = [x for x in repeats_of(e) if x.status in ("ok", "oom", "skipped")] or [e.record]  # errors say nothing
        # a cell fits as its worst repeat does: one that did not fit, else the one with the highest device peak
        r = next((x for x in reps if not x.fits_tier), None) or max(reps, key=lambda x: x.peak_device_bytes or 0)
        of = f", the highest of {len(reps)} repeats" if len(reps) > 1 else ""
        usable = memory_cap_bytes(r)
        if r.fits_tier:
            fits_any |= fits_clearly(r)  # a borderline cell is no evidence that it fits (bench.analysis.borderline)
            frac = r.peak_device_bytes / usable if (usable and r.peak_device_bytes) else None
            barely = frac is not None and frac >= rule.get("barely_fraction", 0.8)
            barely_all &= barely
            use = [", device peak ", Figure(r.peak_device_bytes, "bytes"), " of ", Figure(usable, "bytes"),
                   " GiB (", Figure(frac, "percent"), ")"] if frac is not None else []
            label = "borderline" if is_borderline(r) else "fits"
            parts.append([f"{r.recipe} s{r.seq_len} b{r.batch_size} {label}", *use, " (", Cell(e.ref), of, ")"])
        else:
            barely_all = False
            what = {"ok": "exceeded the tier's memory outside the allocator cap", "oom": "out of memory",
                    "skipped": "not run: a smaller cell ran out of memory"}[r.status]
            parts.append([f"{r.recipe} s{r.seq_len} b{r.batch_size} {what} (", Cell(e.ref),
                          f", {sum(not x.fits_tier for x in reps)} of {len(reps)} repeats" if len(reps) > 1 else "", ")"])
    text = joined(parts, "; ")
    units = sum(len(repeats_of(e)) for e in finished)
    if units < MIN_UNITS:  # one peak is one reading, as for every other rule (bench.analysis.claims.measure)
        return INCONCLUSIVE, [f"too little evidence: {units} measurement{'s' if units != 1 else ''} (cells or repeats), a "
                              f"verdict needs at least {MIN_UNITS}: ", *text, "."]
    if rule.get("expect") == "barely":
        frac = rule.get("barely_fraction", 0.8)
        return (HOLDS if barely_all else FAILS), \
            [*text, ". Rule: fits with a device peak of at least ", Figure(frac, "percent"),
             " of the memory a real card of the tier gives a process."]
    return (HOLDS if fits_any else FAILS), [*text, ". Rule: at least one cell fits."]


def _check_exact(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    field = rule["field"]
    cells = [e for e in inp.entries if getattr(e.record, field) is not None]
    cells, why = select(cells, rule.get("where", {}), entry_record, f"cells reporting {field}", inp.params)
    if not cells:
        return NOT_MEASURED, [*why, "."]
    by_value: dict = {}
    for e in cells:
        by_value.setdefault(getattr(e.record, field), []).append(e)
    text = joined(([Figure(v, "count"), " (", *joined(([Cell(e.ref)] for e in es), ", "), ")"]
                   for v, es in sorted(by_value.items())), "; ")
    ok = set(by_value) == {rule["value"]}
    return (HOLDS if ok else FAILS), \
        [f"{field.replace('_', ' ')}: ", *text, ". Rule: exactly ", Figure(rule["value"], "count"), "."]


def _check_consistency(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    pairs, _, absent = claim_pairs(rule, inp)
    if absent:
        return NOT_MEASURED, [*absent, "."]
    kept, why = select(pairs, rule.get("where", {}), candidate_record, pairs_noun(rule), inp.params)
    by_config: dict = {}
    for p in kept:
        r = p.candidate.record
        v = p.memory_reduction(rule["memory"])
        if v is None:
            continue
        key = (r.model, r.seq_len, r.batch_size, r.lora_r, r.optimizer, r.gradient_checkpointing, r.grad_accum)
        by_config.setdefault(key, []).append((r.tier, v, p))
    multi = {k: vs for k, vs in sorted(by_config.items(), key=lambda kv: repr(kv[0])) if len({t for t, _, _ in vs}) > 1}
    if not multi:
        return NOT_MEASURED, [*or_default(why, "no model, seq_len and batch size measured as matched pairs on two or more "
                                        "tiers"), "."]
    parts, bad = [], 0
    for (model, seq, batch, *_), vs in multi.items():
        spread = max(v for _, v, _ in vs) - min(v for _, v, _ in vs)
        bad += spread > rule["max_spread"]
        each = joined(([f"{t} ", Figure(v, "percent"), " (", pair_cells(p), ")"]
                       for t, v, p in sorted(vs, key=lambda x: x[0])), ", ")
        parts.append([f"{model} s{seq} b{batch}: ", *each, ", spread ", Figure(spread, "points"), " points"])
    text = [*joined(parts, "; "), f". Rule: {memory_label(rule['memory'])} saved differs by at most ",
            Figure(rule["max_spread"], "points"), " percentage points across tiers."]
    return (FAILS if bad else HOLDS), text




#: The check of each rule kind (bench.analysis.claims.rules.RULE_KINDS).
CHECKS: dict[str, Callable[[dict, Inputs], tuple[str, list[Span]]]] = {
    "pair_metric": _check_pair_metric,
    "cell_value": _check_cell_value,
    "cell_points": _check_cell_points,
    "fits": _check_fits,
    "exact": _check_exact,
    "variant": check_variant,
    "consistency_across_tiers": _check_consistency,
    "fast_path_coverage": check_fast_path_coverage,
    "fallback_heuristic": check_fallback,
    "kernel_speedup": check_kernel_speedup,
}
