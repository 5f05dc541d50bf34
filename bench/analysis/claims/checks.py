"""The checks: one per rule kind, each a pure function (rule, inputs) -> (verdict, evidence).

Inputs are the report's entries (objects with `.record`, `.ref` and `.host`, as
bench.analysis.results.Entry), grouped by environment for pairing. A rule comparing two recipes
(rules.PAIR_KINDS) reads the candidate's cells against exactly the baseline recipe it names
(bench.analysis.against.pairs_against): comparable pairs speak to the claim, pairs that are not
matched are named as excluded and never used; where the baseline (or the candidate) was not
measured the claim is "not measured", saying so. Cells that are sides of a pair that is not matched
(against the report's reference) never count as cells either. A claim whose conditions no cell
meets is "not measured", with the first condition none met; fewer pairs or cells than the rule's
`min_pairs` is "inconclusive".
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from bench.analysis import metrics
from bench.analysis.against import pairs_against
from bench.analysis.claims.conditions import (base_params, fell_back, model_fast_path, model_family,
                                              ran_unsloth_kernels, select)
from bench.analysis.claims.evidence import (Cell, Evidence, Figure, Span, evidence, joined, pair_cells,
                                            rule_spans)
from bench.analysis.claims.rules import (FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, Claim, candidate_of, compare,
                                         recipe_matches)
from bench.config.tiers import TIERS
from bench.schema.key import VARIANT_FIELDS, CellKey
from bench.schema.pairs import Pair
from bench.units import GiB


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: str  # HOLDS | FAILS | NOT_MEASURED | INCONCLUSIVE
    evidence: Evidence  # what was measured, with cell references


@dataclass(frozen=True)
class Inputs:
    entries: Sequence  # every entry of the report
    groups: Sequence[Sequence]  # the GPU entries of each environment group (pairs never cross groups)
    unmatched: Sequence[Pair]  # report pairs whose parity check failed: their sides never count as cells
    params: dict[str, int]  # base-model parameters per model


def check_claims(claims: Sequence[Claim], entries: Sequence, groups: Sequence[Sequence],
                 unmatched: Sequence[Pair] = ()) -> list[ClaimResult]:
    """One result per claim, in the claims file's order. `groups`: the GPU entries of each environment
    group; `unmatched`: the report's pairs that are not matched."""
    inp = Inputs(entries, groups, [p for p in unmatched if p.not_matched], base_params(entries))
    out = []
    for claim in claims:
        verdict, spans = CHECKS[claim.rule["kind"]](claim.rule, inp)
        out.append(ClaimResult(claim, verdict, evidence(spans)))
    return out


def _candidate_record(pair: Pair):
    return pair.candidate.record


def _entry_record(entry):
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
    pairs = [p for g in inp.groups for p in pairs_against(g, baseline, candidate)]
    return [p for p in pairs if p.comparable], [p for p in pairs if p.not_matched], []


def _pairs_noun(rule: dict) -> str:
    return f"matched pairs of {candidate_of(rule)} against {rule['baseline']}"


def _too_few(rule: dict, n: int, noun: str) -> Optional[list[Span]]:
    """Evidence for "inconclusive" when `n` is below the rule's min_pairs; None otherwise."""
    need = rule.get("min_pairs", 1)
    if n >= need:
        return None
    return [f"too little evidence: {_counted(n, noun)}, the rule needs at least {need}"]


def _pair_value(rule: dict, pair: Pair) -> Optional[float]:
    if rule["metric"] == "speedup":
        return pair.speedup
    return pair.memory_reduction(rule["memory"])


def _memory_label(field: str) -> str:
    return {"peak_device_bytes": "peak device memory", "peak_allocated_bytes": "peak allocated memory"}.get(field, field)


def _counted(n: int, noun: str) -> str:
    """'3 matched pairs (...)', '1 matched pair (...)'."""
    if n == 1:
        noun = noun.replace("pairs", "pair", 1).replace("cells", "cell", 1)
    return f"{n} {noun}"


def _or(reason: list[Span], default: str) -> list[Span]:
    return reason or [default]


def _aggregate_verdict(rule: dict, values: list[tuple[float, list[Span]]], unit: str, noun: str
                       ) -> tuple[str, list[Span]]:
    """Verdict over (value, cells) items: the median against the rule, or each item."""
    nums = [v for v, _ in values]
    refs = joined(([Figure(v, unit), " (", *cells, ")"] for v, cells in values), "; ")
    noun = _counted(len(nums), noun)
    if rule.get("aggregate", "each") == "median" and len(nums) > 1:
        med = statistics.median(nums)
        ok = compare(med, rule)
        text = ["median ", Figure(med, unit), f" over {noun}, range ", Figure(min(nums), unit), " to ",
                Figure(max(nums), unit), ": ", *refs]
    elif rule.get("aggregate", "each") == "median":
        ok = compare(nums[0], rule)
        text = [f"{noun}: ", *refs]
    else:
        failing = [v for v in nums if not compare(v, rule)]
        ok = not failing
        text = [f"{noun}: ", *refs]
        if failing:
            text.append(f"; {len(failing)} outside the rule")
    return (HOLDS if ok else FAILS), [*text, ". Rule: ", *rule_spans(rule, unit), "."]


def _check_pair_metric(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    where = rule.get("where", {})
    pairs, unmatched, absent = claim_pairs(rule, inp)
    if absent:
        return NOT_MEASURED, [*absent, "."]
    kept, why = select(pairs, where, _candidate_record, _pairs_noun(rule), inp.params)
    excluded, _ = select(unmatched, where, _candidate_record, "pairs", inp.params)
    note = [f" Excluded: {len(excluded)} pair(s) meeting the conditions failed the parity check (NOT MATCHED: ",
            *joined(([pair_cells(p)] for p in excluded), ", "), ")."] if excluded else []
    values = [(v, [pair_cells(p)]) for p in kept if (v := _pair_value(rule, p)) is not None]
    if not values:
        return NOT_MEASURED, [*_or(why, "the matched pairs lack the figures"), ".", *note]
    baseline, candidate = rule["baseline"], candidate_of(rule)
    if rule["metric"] == "speedup":
        unit, noun = "ratio", f"matched pairs ({candidate} tokens/s over {baseline})"
    else:
        unit, noun = "percent", f"matched pairs ({_memory_label(rule['memory'])} saved by {candidate} against {baseline})"
    few = _too_few(rule, len(values), noun)
    if few is not None:
        refs = joined(([Figure(v, unit), " (", *cells, ")"] for v, cells in values), "; ")
        return INCONCLUSIVE, [*few, ": ", *refs, ".", *note]
    verdict, text = _aggregate_verdict(rule, values, unit, noun)
    return verdict, text + note


def _gpu_cells(inp: Inputs, rule: dict) -> list:
    """GPU cells of the rule's recipe and family, leaving out the sides of pairs that are not matched."""
    excluded = {id(e) for pair in inp.unmatched for e in pair.sides}
    return [e for e in inp.entries if e.record.mode != "cpu" and id(e) not in excluded
            and recipe_matches(rule, e.record.recipe, e.record.backend)]


def _cap_bytes(record) -> Optional[int]:
    """The memory an OOM cell ran out of: the emulation cap, else the native tier's usable memory."""
    if record.memory_limit_bytes:
        return record.memory_limit_bytes
    tier = TIERS.get(record.tier)
    return tier.usable_vram_bytes if tier else None


def _cells_noun(rule: dict) -> str:
    """'GPU cells', 'GPU unsloth cells', 'GPU hf-family cells': what a cell rule reads."""
    recipe, family = rule.get("recipe", "any"), rule.get("backend", "any")
    if recipe != "any":
        return f"GPU {recipe if isinstance(recipe, str) else ' / '.join(recipe)} cells"
    return "GPU cells" if family == "any" else f"GPU {family}-family cells"


def _select_cells(rule: dict, inp: Inputs) -> tuple[list, list[Span]]:
    return select(_gpu_cells(inp, rule), rule.get("where", {}), _entry_record, _cells_noun(rule), inp.params)


def _check_cell_value(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    cells, why = _select_cells(rule, inp)
    values, oom_over = [], []
    for e in cells:
        v = getattr(e.record, rule["field"])
        if e.record.ok and v is not None:
            values.append((v / GiB, [Cell(e.ref)]))
        elif e.record.status == "oom" and rule["op"] == "at_most":
            cap = _cap_bytes(e.record)
            if cap and cap / GiB >= rule["threshold"]:
                oom_over.append((cap / GiB, Cell(e.ref)))
    if not values and not oom_over:
        return NOT_MEASURED, [*_or(why, "no cell meeting the conditions finished"), "."]
    label = _memory_label(rule["field"])
    if oom_over:
        text = joined((["out of memory at a ", Figure(v, "GiB"), " cap (", cell, ")"] for v, cell in oom_over), "; ")
        if values:
            text += ["; ", *joined(([Figure(v, "GiB"), " (", *cells, ")"] for v, cells in values), "; ")]
        return FAILS, [f"{label}: ", *text, ". Rule: ", *rule_spans(rule, "GiB"), "."]
    return _aggregate_verdict(rule, values, "GiB", f"cells ({label})")


def _check_cell_points(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    cells, why = _select_cells(rule, inp)
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
        return NOT_MEASURED, [*_or(why, "none of the stated model and batch-size points was measured"), "."]
    text = [f"{measured_points} of {len(rule['points'])} stated points measured, {_counted(len(parts), 'cells')} "
            f"({_memory_label(rule['field'])}): ", *joined(parts, "; "), ". Rule: ", *rule_spans(rule, "GiB"), "."]
    return (FAILS if bad else HOLDS), text


def _check_fits(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    cells, why = _select_cells(rule, inp)
    finished = [e for e in cells if e.record.status in ("ok", "oom", "skipped")]
    if not finished:
        extra = f" ({len(cells)} failed with errors, not memory)" if cells else ""
        return NOT_MEASURED, [*_or(why, "no cell meeting the conditions finished"), extra + "."]
    parts, fits_any, barely_all = [], False, True
    for e in finished:
        r = e.record
        tier = TIERS.get(r.tier)
        usable = tier.usable_vram_bytes if tier else None
        if r.fits_tier:
            fits_any = True
            frac = r.peak_device_bytes / usable if (usable and r.peak_device_bytes) else None
            barely = frac is not None and frac >= rule.get("barely_fraction", 0.8)
            barely_all &= barely
            use = [", device peak ", Figure(r.peak_device_bytes, "bytes"), " of ", Figure(usable, "bytes"),
                   " GiB (", Figure(frac, "percent"), ")"] if frac is not None else []
            parts.append([f"{r.recipe} s{r.seq_len} b{r.batch_size} fits", *use, " (", Cell(e.ref), ")"])
        else:
            barely_all = False
            what = {"ok": "exceeded the tier's memory outside the allocator cap", "oom": "out of memory",
                    "skipped": "not run: a smaller cell ran out of memory"}[r.status]
            parts.append([f"{r.recipe} s{r.seq_len} b{r.batch_size} {what} (", Cell(e.ref), ")"])
    text = joined(parts, "; ")
    if rule.get("expect") == "barely":
        frac = rule.get("barely_fraction", 0.8)
        return (HOLDS if barely_all else FAILS), \
            [*text, ". Rule: fits with a device peak of at least ", Figure(frac, "percent"),
             " of the tier's usable memory."]
    return (HOLDS if fits_any else FAILS), [*text, ". Rule: at least one cell fits."]


def _check_exact(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    field = rule["field"]
    cells = [e for e in inp.entries if getattr(e.record, field) is not None]
    cells, why = select(cells, rule.get("where", {}), _entry_record, f"cells reporting {field}", inp.params)
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


def _variant_value(rule: dict, rb, rv) -> Optional[float]:
    """The rule's quantity between a base record and its variant (None when a figure is missing)."""
    quantity = rule["quantity"]
    if quantity == "time_overhead":
        ratio = metrics.speedup(rb.tokens_per_s, rv.tokens_per_s)  # variant over base throughput
        return 1.0 / ratio - 1.0 if ratio else None
    mb, mv = getattr(rb, rule["memory"]), getattr(rv, rule["memory"])
    if mb is None or mv is None:
        return None
    if quantity == "memory_reduction":
        return metrics.memory_reduction(mb, mv)
    if quantity == "memory_saving":
        return (mb - mv) / GiB
    return (mv - mb) / (getattr(rv, rule["field"]) - getattr(rb, rule["field"]))  # memory_per_unit


VARIANT_UNITS = {"time_overhead": ("signed_percent", "cell pairs (extra time per token)"),
                 "memory_reduction": ("percent", "cell pairs (memory saved)"),
                 "memory_saving": ("GiB", "cell pairs (memory saved)"),
                 "memory_per_unit": ("MB", "cell pairs (memory per unit of rank)")}


def _check_variant(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    field = rule["field"]
    cells, why = _select_cells(rule, inp)
    values = []
    for b, v in variant_pairs(cells, field, rule.get("base"), rule.get("variant")):
        x = _variant_value(rule, b.record, v.record)
        if x is not None:
            values.append((x, [Cell(b.ref), f" {getattr(b.record, field)} -> ", Cell(v.ref),
                               f" {getattr(v.record, field)}"]))
    if not values:
        variants = (f"'{rule['base']}' vs '{rule['variant']}'" if "base" in rule else "several values")
        return NOT_MEASURED, [*_or(why, f"no two cells alike but for {field.replace('_', ' ')} ({variants})"), "."]
    unit, noun = VARIANT_UNITS[rule["quantity"]]
    return _aggregate_verdict(rule, values, unit, noun)


def _check_consistency(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    pairs, _, absent = claim_pairs(rule, inp)
    if absent:
        return NOT_MEASURED, [*absent, "."]
    kept, why = select(pairs, rule.get("where", {}), _candidate_record, _pairs_noun(rule), inp.params)
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
        return NOT_MEASURED, [*_or(why, "no model, seq_len and batch size measured as matched pairs on two or more "
                                        "tiers"), "."]
    parts, bad = [], 0
    for (model, seq, batch, *_), vs in multi.items():
        spread = max(v for _, v, _ in vs) - min(v for _, v, _ in vs)
        bad += spread > rule["max_spread"]
        each = joined(([f"{t} ", Figure(v, "percent"), " (", pair_cells(p), ")"]
                       for t, v, p in sorted(vs, key=lambda x: x[0])), ", ")
        parts.append([f"{model} s{seq} b{batch}: ", *each, ", spread ", Figure(spread, "points"), " points"])
    text = [*joined(parts, "; "), f". Rule: {_memory_label(rule['memory'])} saved differs by at most ",
            Figure(rule["max_spread"], "points"), " percentage points across tiers."]
    return (FAILS if bad else HOLDS), text


def _check_fast_path_coverage(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    # the unsloth library family: Unsloth's kernels (hf-liger's records classify Liger's as their own origin)
    cells = [e for e in inp.entries if e.record.backend == "unsloth" and fell_back(e.record.fast_paths) is not None]
    if not cells:
        return NOT_MEASURED, ["no Unsloth record carries a fast-path summary (fast_paths, from kernels_check)."]
    parts, bad = [], 0
    for e in cells:
        family = model_family(e.record.model)
        if family is None:
            continue
        k, n = ran_unsloth_kernels(e.record.fast_paths)
        expected = family in rule["families"]
        ok = fell_back(e.record.fast_paths) is not expected
        bad += not ok
        parts.append([f"{e.record.model} ({family}, {'listed' if expected else 'not listed'}): "
                      f"{k}/{n} fast paths on Unsloth kernels{'' if ok else ' (contradicts)'} (", Cell(e.ref), ")"])
    if not parts:
        return NOT_MEASURED, ["fast-path summaries only for architectures the suite does not ship."]
    return (FAILS if bad else HOLDS), \
        [*joined(parts, "; "), ". Rule: a listed architecture ran Unsloth's kernel on every fast path that has one; "
                               "any other fell back on at least one."]


def _check_fallback(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    pairs, _, absent = claim_pairs(rule, inp)
    if absent:
        return NOT_MEASURED, [*absent, "."]
    kept, why = select(pairs, rule.get("where", {}), _candidate_record, _pairs_noun(rule), inp.params)
    parts, bad, classes, sources = [], 0, set(), set()
    for p in kept:
        v = p.memory_reduction(rule["memory"])
        if v is None:
            continue
        un = p.candidate.record
        traced = fell_back(un.fast_paths)
        if traced is not None:
            fallback, source = traced, "fast_paths"
        elif model_fast_path(un.model) is not None:
            fallback, source = not model_fast_path(un.model), "unsloth_fast_path flag"
        else:
            continue
        ok = (v < rule["threshold"]) == fallback
        bad += not ok
        classes.add(fallback)
        sources.add(source)
        parts.append([f"{un.model} s{un.seq_len} b{un.batch_size}: ", Figure(v, "percent"),
                      f" saved, {'fallback' if fallback else 'fast path'} per {source}"
                      f"{'' if ok else ' (heuristic wrong)'} (", pair_cells(p), ")"])
    if not parts:
        return NOT_MEASURED, [*_or(why, "no matched pair of an architecture whose fast-path state is known"), "."]
    text = [*joined(parts, "; "), ". Rule: saving below ", Figure(rule["threshold"], "percent"),
            f" exactly when the architecture fell back. Evidence: {', '.join(sorted(sources))}."]
    if not bad and len(classes) == 1:
        text.append(" Only " + ("fallback" if True in classes else "fast-path")
                    + " architectures were measured: the other side of the heuristic is untested.")
    return (FAILS if bad else HOLDS), text


#: The check of each rule kind (bench.analysis.claims.rules.RULE_KINDS).
CHECKS: dict[str, Callable[[dict, Inputs], tuple[str, list[Span]]]] = {
    "pair_metric": _check_pair_metric,
    "cell_value": _check_cell_value,
    "cell_points": _check_cell_points,
    "fits": _check_fits,
    "exact": _check_exact,
    "variant": _check_variant,
    "consistency_across_tiers": _check_consistency,
    "fast_path_coverage": _check_fast_path_coverage,
    "fallback_heuristic": _check_fallback,
}
