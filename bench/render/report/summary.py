"""The summary bullets: per group and model (recipe), the fit verdict, what the matched pairs showed,
the best configuration, and the caveats (bench.analysis.decisions in words)."""

from __future__ import annotations

from typing import Callable

from bench.analysis.decisions import BackendFit, backend_fit, best_configuration, pair_figures
from bench.analysis.results import Group, Results
from bench.render.report.labels import BACKEND_LABEL, group_title, recipe_views
from bench.render.report.phrases import approach_text, cost_text, headroom_text, peak_text, status_text
from bench.render.text import fmt, link, md_escape, pct, plural

SUMMARY_BACKENDS = ("unsloth", "hf")
MEMORY_LABEL = {"peak_device_bytes": "peak device memory", "peak_allocated_bytes": "peak allocated memory"}


def backend_fit_text(fit: BackendFit, group: Group) -> str:
    """'Unsloth fits up to seq_len 2048 x batch 2 (device peak ..., c4); does not fit at ...'."""
    label = BACKEND_LABEL[fit.backend]
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
    if fit.errors:
        text += f"; {len(fit.errors)} cell(s) failed with an error ({', '.join(link(e.ref) for e in fit.errors)})"
    return text


def _range(values: list[float], format_value: Callable[[float], str]) -> str:
    lo, hi = format_value(min(values)), format_value(max(values))
    return lo if lo == hi else f"{lo} to {hi}"


def _fit_verdict(fits: dict[str, BackendFit]) -> str:
    tops = []
    for b, fit in fits.items():
        if fit.largest is not None:
            tops.append(f"{BACKEND_LABEL[b]} up to s{fit.largest.record.seq_len} b{fit.largest.record.batch_size}")
        elif fit.cells:
            tops.append(f"{BACKEND_LABEL[b]} at no measured size")
    if any(fit.largest is not None for fit in fits.values()):
        return f"**fits** ({'; '.join(tops)})"
    return "**does not fit at any measured size**"


def _pair_details(g: Group, model: str) -> list[str]:
    """What the model's matched pairs showed, and which pairs are not matched."""
    figures = pair_figures(g, model)
    details = []
    if figures.comparable:
        speed = " (host-GPU speed)" if g.mode == "emulated" else ""
        txt = f"Where both ran and matched ({plural(len(figures.comparable), 'pair')}): Unsloth reached "
        txt += (f"{_range(figures.speedups, lambda v: fmt(v, '.2f', 'x'))} HF's tokens/s{speed}" if figures.speedups
                else "unknown speed")
        if figures.savings:
            txt += f" and used {_range(figures.savings, pct)} less {MEMORY_LABEL[figures.saving_field]}"
        details.append(txt + ".")
    elif figures.any_both_sides:
        details.append("No parity-matched pair: no speed-up or memory saving to report.")
    if figures.unmatched:
        details.append(f"**{plural(len(figures.unmatched), 'pair')} NOT MATCHED** (parity check failed or missing; "
                       f"excluded from speed-ups, savings and recommendations): "
                       + ", ".join(f"{link(p.hf.ref)}/{link(p.unsloth.ref)}" for p in figures.unmatched) + ".")
    return details


def summary_items(results: Results) -> list[tuple[str, list[str]]]:
    """(headline, details) per group and model: fit verdicts, speed-up, saving, best configuration, caveats."""
    items: list[tuple[str, list[str]]] = []
    for group in results.groups:
        for model, label, g in recipe_views(group):
            head = f"**{label} on {group_title(g)}**"
            if g.mode == "cpu":
                measured = [e for e in g.entries if e.record.model == model]
                ok = sum(1 for e in measured if e.record.ok)
                items.append((f"{head}: CPU smoke mode, {ok} of {len(measured)} cells ran; no GPU figures, "
                              "so no fit or speed verdict.", []))
                continue
            fits = {b: backend_fit(g, model, b) for b in SUMMARY_BACKENDS}
            details = [backend_fit_text(fit, g) + "." for fit in fits.values()]
            details += _pair_details(g, model)
            best = best_configuration(g, model)
            if best is not None:
                details.append(f"Best measured configuration (highest tokens/s among fitting cells): "
                               f"{approach_text(best.record)} ({link(best.ref)}): {cost_text(g, best.record)}.")
            elif any(fit.largest is not None for fit in fits.values()):
                details.append("No recommendation: the cells that fit are all in pairs that are NOT MATCHED.")
            else:
                details.append("Try `bench estimate` for a prediction at smaller sizes, a shorter seq_len, batch 1, "
                               "or a larger tier.")
            if g.mode == "emulated":
                details.append(f"Caveat: emulated on {md_escape(g.host)}: the memory verdicts hold for a real "
                               f"{g.tier}; speeds and costs are the host GPU's, and a real {g.tier} is slower.")
            items.append((f"{head}: {_fit_verdict(fits)}.", details))
    if results.split_pairs:
        items.append((f"**{plural(len(results.split_pairs), 'configuration')} measured on different GPUs for HF "
                      f"and Unsloth**: their sides appear in separate groups and are not compared.", []))
    return items
