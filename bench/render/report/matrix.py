"""The decision matrix: per GPU group and model (settings view), the largest size that fits and the best
measured recipe per size, as table rows (scenario, recommended approach, why, cost) from
bench.analysis.decisions. Untried is untried: no recipe is recommended at a size where another recipe
of the view was not tried, and "X fits at most" is said only where X's next larger size did not fit.
A borderline cell (bench.analysis.borderline) is never recommended and never read as not fitting."""

from __future__ import annotations

from bench.analysis.decisions import ModelDecision, Shortfall, SizeChoice, model_decision
from bench.analysis.results import Group
from bench.analysis.speed import INCONCLUSIVE, median_tokens_per_s, ratio_of_rates, repeats_of, speedup_verdict
from bench.render.report.labels import group_title, settings_views
from bench.render.report.phrases import approach_text, cost_text, peak_text, status_text, versus_text
from bench.render.text import fmt_interval, link, md_escape, plural
from bench.schema.record import rate_groups

MATRIX_HEADER = ["Scenario", "Recommended approach", "Why (measured)", "Cost impact"]


def _borderline_text(cells) -> str:
    return "; ".join(f"{e.record.recipe} s{e.record.seq_len} b{e.record.batch_size}: "
                     f"{md_escape(status_text(e.record))} ({link(e.ref)})" for e in cells)


def shortfall_row(scenario: str, shortfall: Shortfall, what: str) -> list[str]:
    """No recommendation: every fitting cell is in an unmatched pair, only borderline cells, or nothing fits."""
    if shortfall.fitting:
        refs = ", ".join(link(e.ref) for e in shortfall.fitting)
        return [scenario, "**No recommendation**: every cell that fits belongs to a pair that is NOT MATCHED "
                "(parity check failed or missing): fix the mismatch and measure again",
                f"fitting cells, all excluded: {refs}", "-"]
    if shortfall.borderline:
        return [scenario, f"**Borderline at every measured {what} that ran**: no recommendation; on a real card it "
                "may or may not fit: measure on one, or try a smaller size", _borderline_text(shortfall.borderline), "-"]
    first = shortfall.smallest.record
    return [scenario, f"**Does not fit at any measured {what}**: try `bench estimate`, a shorter seq_len, "
            "batch 1, or a larger tier",
            f"smallest tried: {first.recipe} s{first.seq_len} b{first.batch_size}: "
            f"{md_escape(status_text(first))} ({link(shortfall.smallest.ref)}); "
            f"{plural(shortfall.sizes_tried, 'size')} tried", "-"]


def _not_run_text(choice: SizeChoice) -> list[str]:
    """Recipes known not to fit here (a smaller size did not) and recipes not tried here."""
    out = [f"{r} does not fit: a smaller size did not ({link(e.ref)})" for r, e in choice.known_unfit.items()]
    if choice.borderline:
        out.append(f"borderline, not recommended: {_borderline_text(choice.borderline)}")
    if choice.untried:
        out.append(f"{', '.join(choice.untried)} not tried at this size")
    return out


def _no_preference_row(scenario: str, choice: SizeChoice, view: Group) -> list[str]:
    fitting = "; ".join(f"{e.record.recipe} fits, {median_tokens_per_s(e) or 0:,.0f} tokens/s, "
                        f"{peak_text(e.record, view)} ({link(e.ref)})" for e in choice.candidates)
    return [scenario, f"**No preference**: {', '.join(choice.untried)} not tried at this size (untried is untried)",
            "; ".join([fitting] + _not_run_text(choice)), "-"]


def _versus(view: Group, choice: SizeChoice, e) -> list[str]:
    """How the other recipes did beside `e` (nothing to say when the others are known not to fit)."""
    if choice.known_unfit and len(choice.cells) == 1:
        return []
    return [versus_text(view, e)]


def _close_call(choice: SizeChoice) -> list[str]:
    """Said when the best recipe is not clearly faster than the runner-up: the 95 % interval of their
    tokens/s ratio contains 1.0 (bench.analysis.speed), so another run could rank them the other way."""
    if len(choice.candidates) < 2:
        return []
    best, second = choice.candidates[0], choice.candidates[1]
    ratio = ratio_of_rates(rate_groups(repeats_of(best)), rate_groups(repeats_of(second)))
    if ratio.estimate is None or speedup_verdict(ratio) != INCONCLUSIVE:
        return []
    return [f"not clearly faster than {second.record.recipe} ({fmt_interval(ratio, '.2f', 'x')}: the 95 % "
            f"interval contains 1.0)"]


def size_row(scenario: str, choice: SizeChoice, view: Group, speed: str) -> list[str]:
    """The matrix row of one size: its best measured recipe, or why there is none."""
    best = choice.best
    if best is not None:
        why = [f"highest measured throughput at this size: {median_tokens_per_s(best) or 0:,.0f} tokens/s{speed}, "
               f"{peak_text(best.record, view)} ({link(best.ref)})", *_close_call(choice),
               *_versus(view, choice, best)] + _not_run_text(choice)
        return [scenario, approach_text(best.record), "; ".join(why), cost_text(view, best)]
    if choice.candidates:
        return _no_preference_row(scenario, choice, view)
    if choice.fitting:
        return shortfall_row(scenario, Shortfall(choice.cells, choice.fitting, choice.cells[0], 1), "size")
    if choice.borderline:
        others = [e for e in choice.cells if e not in choice.borderline]
        tried = [f"{e.record.recipe}: {md_escape(status_text(e.record))} ({link(e.ref)})" for e in others]
        return [scenario, "**Borderline**: no recommendation at this size; on a real card it may or may not fit",
                "; ".join(tried + _not_run_text(choice)), "-"]
    tried = "; ".join(f"{e.record.recipe}: {md_escape(status_text(e.record))} ({link(e.ref)})" for e in choice.cells)
    verdict = (f"**Not settled**: no recipe tried here fits; {', '.join(choice.untried)} not tried" if choice.untried
               else "**Does not fit at this size**: no recipe tried here fits")
    return [scenario, verdict, "; ".join([tried] + _not_run_text(choice)), "-"]


def largest_row(scenario: str, decision: ModelDecision, view: Group) -> list[str]:
    """The largest measured size where some recipe fits, and each recipe's own largest."""
    choice = decision.largest
    top = choice.best
    if top is None:
        row = _no_preference_row(f"{scenario}: largest measured size that fits (s{choice.seq_len} "
                                 f"b{choice.batch_size})", choice, view)
        return row
    why = [f"{peak_text(top.record, view)} ({link(top.ref)})"]
    for name, e in decision.per_recipe.items():
        if e.record.recipe != top.record.recipe:
            why.append(f"{name}'s largest measured size that fits: s{e.record.seq_len} b{e.record.batch_size} "
                       f"({link(e.ref)})")
    for name in decision.unfit_recipes:
        why.append(f"{name} fits at no measured size (or only borderline, or in unmatched pairs)")
    why += _versus(view, choice, top) + _not_run_text(choice)
    return [f"{scenario}: largest measured size that fits", approach_text(top.record), "; ".join(why),
            cost_text(view, top)]


def decision_rows(group: Group) -> list[list[str]]:
    """Decision matrix rows of one GPU group: the largest size that fits, then the best recipe per size."""
    rows = []
    speed = " (host-GPU speed)" if group.mode == "emulated" else ""
    for model, label, view in settings_views(group):
        decision = model_decision(view, model)
        scenario = f"{label} on {group_title(view)}"
        if decision.largest is None:
            rows.append(shortfall_row(f"{scenario}: any measured size", decision.shortfall, "size"))
            continue
        rows.append(largest_row(scenario, decision, view))
        for choice in decision.sizes:
            rows.append(size_row(f"{scenario}: seq_len {choice.seq_len} x batch {choice.batch_size}", choice, view,
                                 speed))
    return rows
