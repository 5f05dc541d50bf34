"""The summary bullets: per group, the verdict "Unsloth against what Hugging Face users run today";
per group and model (settings view), the fit verdict per recipe, what the matched pairs showed
against the reference, the best measured recipe per size, the best configuration, and the caveats
(bench.analysis.decisions and bench.analysis.verdict in words)."""

from __future__ import annotations

from typing import Callable

from bench.analysis.decisions import (PairFigures, RecipeFit, SizeChoice, best_configuration, fits, model_recipes,
                                      pair_figures, recipe_fit, size_choices)
from bench.analysis.results import Group, Results
from bench.analysis.speed import INCONCLUSIVE as SPEEDUP_INCONCLUSIVE
from bench.analysis.speed import pair_memory_saving, pair_speedup, speedup_verdict
from bench.analysis.verdict import INCONCLUSIVE, MIN_PAIRS, NOT_MEASURED, TierVerdict, tier_verdict
from bench.render.report.labels import group_title, settings_views
from bench.render.report.phrases import approach_text, cost_text, headroom_text, peak_text, status_text
from bench.render.text import fmt, link, md_escape, pct, plural

MEMORY_LABEL = {"peak_device_bytes": "peak device memory", "peak_allocated_bytes": "peak allocated memory"}


def recipe_fit_text(fit: RecipeFit, group: Group) -> str:
    """'unsloth fits up to seq_len 2048 x batch 2 (device peak ..., c4); does not fit at ...'."""
    label = fit.recipe
    if not fit.cells:
        return f"{label} not measured"
    if fit.largest is not None:
        top = fit.largest
        text = (f"{label} fits up to seq_len {top.record.seq_len} x batch {top.record.batch_size} "
                f"({peak_text(top.record, group)}{headroom_text(top.record, group)}, {link(top.ref)})")
        if fit.largest_measured:
            text += "; that is the largest size measured, larger ones were not tried"
    else:
        text = f"{label} fits at no measured size"
    if fit.first_failure is not None:
        f0 = fit.first_failure
        text += (f"; does not fit at s{f0.record.seq_len} b{f0.record.batch_size} "
                 f"({md_escape(status_text(f0.record))}, {link(f0.ref)})")
    if fit.borderline:
        text += "; borderline (not counted as fitting) at " + ", ".join(
            f"s{e.record.seq_len} b{e.record.batch_size} ({md_escape(status_text(e.record))}, {link(e.ref)})"
            for e in fit.borderline)
    if fit.errors:
        text += f"; {len(fit.errors)} cell(s) failed with an error ({', '.join(link(e.ref) for e in fit.errors)})"
    return text


def _range(values: list[float], format_value: Callable[[float], str]) -> str:
    lo, hi = format_value(min(values)), format_value(max(values))
    return lo if lo == hi else f"{lo} to {hi}"


def _saving_range(savings: list[float], field: str, reference: str) -> str:
    """'used 42 % to 50 % less peak device memory' (or 'more', or 'between 5 % less and 3 % more')."""
    label = f"{MEMORY_LABEL[field]} than {reference}"
    if min(savings) >= 0:
        return f"used {_range(savings, pct)} less {label}"
    if max(savings) <= 0:
        return f"used {_range([-v for v in savings], pct)} more {label}"
    return f"used between {pct(max(savings))} less and {pct(-min(savings))} more {label}"


def _fit_verdict(fits: list[RecipeFit]) -> str:
    tops = []
    for fit in fits:
        if fit.largest is not None:
            tops.append(f"{fit.recipe} up to s{fit.largest.record.seq_len} b{fit.largest.record.batch_size}")
        elif fit.cells:
            tops.append(f"{fit.recipe} at no measured size")
    if any(fit.largest is not None for fit in fits):
        return f"**fits** ({'; '.join(tops)})"
    if any(fit.borderline for fit in fits):
        return "**borderline**: no cell fits clearly, some ran within the margin of the tier's memory"
    return "**does not fit at any measured size**"


def inconclusive_text(n: int, total: int) -> str:
    """' (2 of 3 inconclusive: their 95 % interval contains 1.0)', or '' when none is."""
    if not n:
        return ""
    return f" ({n} of {total} inconclusive: {'its' if n == 1 else 'their'} 95 % interval contains 1.0)"


def figures_text(f: PairFigures, group: Group) -> list[str]:
    """What one candidate's matched pairs against the reference showed, and which pairs are not matched."""
    details = []
    if f.comparable:
        speed = " (host-GPU speed)" if group.mode == "emulated" else ""
        txt = f"{f.candidate} against {f.reference}, where both ran and matched ({plural(len(f.comparable), 'pair')}): "
        ratios = [i for p in f.comparable if (i := pair_speedup(p)) is not None and i.estimate is not None]
        speedups = [i.estimate for i in ratios]
        inconclusive = sum(1 for i in ratios if speedup_verdict(i) == SPEEDUP_INCONCLUSIVE)
        txt += (f"{_range(speedups, lambda v: fmt(v, '.2f', 'x'))} {f.reference}'s median tokens/s{speed}"
                f"{inconclusive_text(inconclusive, len(ratios))}" if speedups else "unknown speed")
        savings = [i.estimate for p in f.comparable if (i := pair_memory_saving(p, f.saving_field)) is not None]
        if savings:
            txt += f"; {_saving_range(savings, f.saving_field, f.reference)}"
        details.append(txt + ".")
    elif f.any_both_sides:
        details.append(f"{f.candidate} against {f.reference}: no parity-matched pair, no speed-up or memory saving "
                       f"to report.")
    if f.unmatched:
        details.append(f"**{plural(len(f.unmatched), 'pair')} of {f.candidate} against {f.reference} NOT MATCHED** "
                       f"(parity check failed or missing; excluded from speed-ups, savings and recommendations): "
                       + ", ".join(f"{link(p.reference.ref)}/{link(p.candidate.ref)}" for p in f.unmatched) + ".")
    return details


def size_text(choice: SizeChoice) -> str:
    """One size in words: its best measured recipe, or why none is preferred there."""
    size = f"s{choice.seq_len} b{choice.batch_size}"
    untried = f"{', '.join(choice.untried)} not tried" if choice.untried else ""
    unfit = [f"{r} does not fit (a smaller size did not: {link(e.ref)})" for r, e in choice.known_unfit.items()]
    if choice.best is not None:
        rest = [f"{e.record.recipe}: {md_escape(status_text(e.record))}" for e in choice.cells
                if e is not choice.best and not fits(e.record)] + unfit
        return f"{size}: **{choice.best.record.recipe}** ({'; '.join([link(choice.best.ref)] + rest)})"
    if choice.candidates:
        fitting = ", ".join(f"{e.record.recipe} ({link(e.ref)})" for e in choice.candidates)
        return f"{size}: no preference, {untried} (fits: {fitting})"
    if choice.fitting:
        return f"{size}: no recommendation, the cells that fit are in pairs that are NOT MATCHED"
    if choice.borderline:
        return f"{size}: no recommendation, borderline ({', '.join(link(e.ref) for e in choice.borderline)})"
    tried = "; ".join(f"{e.record.recipe}: {md_escape(status_text(e.record))}" for e in choice.cells)
    if untried:
        return f"{size}: not settled, no recipe tried here fits ({tried}), {untried}"
    return f"{size}: nothing fits ({'; '.join([tried] + unfit)})"


def sizes_text(sizes: list[SizeChoice]) -> str:
    return "Best measured recipe per size (highest tokens/s among the cells that fit; untried is untried: no " \
           "recipe is preferred where another was not tried): " + "; ".join(size_text(c) for c in sizes) + "."


def verdict_text(v: TierVerdict) -> str:
    """The one-line verdict of a group: unsloth against hf-trl."""
    head = (f"**Unsloth against what Hugging Face users run today ({v.candidate} vs {v.baseline}) on "
            f"{group_title(v.group)}**: ")
    if v.status == NOT_MEASURED:
        return head + (f"not measured: no {' or '.join(v.missing)} cell on this tier"
                       + (" (these records compare unsloth with hf-kbit, the recipe of 2023)"
                          if v.baseline in v.missing and any(e.record.recipe == "hf-kbit" for e in v.group.entries)
                          else "") + ".")
    fits = ""
    if v.only_candidate_fits:
        fits += (f" {v.candidate} fits where {v.baseline} does not at "
                 + ", ".join(f"s{p.candidate.record.seq_len} b{p.candidate.record.batch_size} "
                             f"({link(p.reference.ref)}/{link(p.candidate.ref)})" for p in v.only_candidate_fits) + ".")
    if v.only_baseline_fits:
        fits += (f" {v.baseline} fits where {v.candidate} does not at "
                 + ", ".join(f"s{p.reference.record.seq_len} b{p.reference.record.batch_size} "
                             f"({link(p.reference.ref)}/{link(p.candidate.ref)})" for p in v.only_baseline_fits) + ".")
    unmatched = f" {plural(len(v.unmatched), 'pair')} NOT MATCHED, left out." if v.unmatched else ""
    refs = ", ".join(f"{link(p.reference.ref)}/{link(p.candidate.ref)}" for p in v.comparable)
    if v.status == INCONCLUSIVE:
        return head + (f"inconclusive: {plural(len(v.comparable), 'matched pair')}"
                       f"{' (' + refs + ')' if refs else ''}, at least {MIN_PAIRS} needed.{fits}{unmatched}")
    speed = " (host-GPU speed)" if v.group.mode == "emulated" else ""
    text = (f"over {plural(len(v.comparable), 'matched pair')} ({refs}), {v.candidate} reached "
            f"{_range(v.speedups, lambda x: fmt(x, '.2f', 'x'))} (median {fmt(v.median_speedup, '.2f', 'x')}) "
            f"{v.baseline}'s median tokens/s{speed}{inconclusive_text(v.inconclusive_speedups, len(v.speedups))}")
    if v.savings:
        text += f" and {_saving_range(v.savings, v.saving_field, v.baseline)} (median {pct(v.median_saving)} saved)"
    return head + text + "." + fits + unmatched


def _view_items(model: str, label: str, g: Group) -> tuple[str, list[str]]:
    head = f"**{label} on {group_title(g)}**"
    fits = [recipe_fit(g, model, name) for name in model_recipes(g, model)]
    details = [recipe_fit_text(fit, g) + "." for fit in fits]
    for f in pair_figures(g, model):
        details += figures_text(f, g)
    sizes = size_choices(g, model)
    details.append(sizes_text(sizes))
    best = best_configuration(g, model)
    if best is not None:
        details.append(f"Best measured configuration (highest tokens/s among fitting cells, at sizes where every "
                       f"recipe was tried): {approach_text(best.record)} ({link(best.ref)})"
                       + (f": {cost_text(g, best)}." if g.mode == "native" else "."))
    elif any(c.candidates for c in sizes):
        details.append("No best configuration: the cells that fit are at sizes where another recipe was not tried.")
    elif any(fit.largest is not None for fit in fits):
        details.append("No recommendation: the cells that fit are all in pairs that are NOT MATCHED.")
    elif any(fit.borderline for fit in fits):
        details.append("No recommendation: the cells that ran are borderline (within the margin of the tier's "
                       "memory); measure on a real card, or try a smaller size.")
    else:
        details.append("Try `bench estimate` for a prediction at smaller sizes, a shorter seq_len, batch 1, "
                       "or a larger tier.")
    if g.mode == "emulated":
        details.append(f"Caveat: emulated on {md_escape(g.host)}: the memory verdicts hold for a real "
                       f"{g.tier}; speeds are the host GPU's, a real {g.tier} is slower, and no cost per token is "
                       f"given for an emulated tier.")
    return f"{head}: {_fit_verdict(fits)}.", details


def summary_items(results: Results) -> list[tuple[str, list[str]]]:
    """(headline, details): per GPU group the unsloth-vs-hf-trl verdict, then per group and model the fit
    verdicts, pair figures, best recipe per size, best configuration and caveats."""
    items: list[tuple[str, list[str]]] = []
    for group in results.groups:
        if group.mode != "cpu":
            items.append((verdict_text(tier_verdict(group)), []))
        for model, label, g in settings_views(group):
            if g.mode == "cpu":
                measured = [e for e in g.entries if e.record.model == model]
                ok = sum(1 for e in measured if e.record.ok)
                recipes = ", ".join(model_recipes(g, model))
                items.append((f"**{label} on {group_title(g)}**: CPU smoke mode ({recipes}), {ok} of {len(measured)} "
                              "cells ran; no GPU figures, so no fit or speed verdict.", []))
                continue
            items.append(_view_items(model, label, g))
    if results.split_pairs:
        items.append((f"**{plural(len(results.split_pairs), 'configuration')} measured on different GPUs for "
                      f"different recipes**: their cells appear in separate groups and are not compared.", []))
    return items
