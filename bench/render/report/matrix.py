"""The decision matrix: per GPU group and model (recipe), the largest size that fits and the best cell
per seq_len, as table rows (scenario, recommended approach, why, cost) from bench.analysis.decisions."""

from __future__ import annotations

from bench.analysis.decisions import Shortfall, model_decision
from bench.analysis.results import Group
from bench.render.report.labels import BACKEND_LABEL, group_title, recipe_views
from bench.render.report.phrases import approach_text, cost_text, peak_text, status_text, versus_text
from bench.render.text import link, md_escape, plural

MATRIX_HEADER = ["Scenario", "Recommended approach", "Why (measured)", "Cost impact"]


def shortfall_row(scenario: str, shortfall: Shortfall, what: str) -> list[str]:
    """No recommendation: every fitting cell is in an unmatched pair, or nothing fits at any `what`."""
    if shortfall.fitting:
        refs = ", ".join(link(e.ref) for e in shortfall.fitting)
        return [scenario, "**No recommendation**: every cell that fits belongs to a pair that is NOT MATCHED "
                "(parity check failed or missing): fix the mismatch and measure again",
                f"fitting cells, all excluded: {refs}", "-"]
    first = shortfall.smallest.record
    return [scenario, f"**Does not fit at any measured {what}**: try `bench estimate`, a shorter seq_len, "
            "batch 1, or a larger tier",
            f"smallest tried: {BACKEND_LABEL[first.backend]} s{first.seq_len} b{first.batch_size}: "
            f"{md_escape(status_text(first))} ({link(shortfall.smallest.ref)}); "
            f"{plural(shortfall.sizes_tried, 'size')} tried", "-"]


def decision_rows(group: Group) -> list[list[str]]:
    """Decision matrix rows of one GPU group: the largest size that fits, then the best cell per seq_len."""
    rows = []
    speed = " (host-GPU speed)" if group.mode == "emulated" else ""
    for model, label, view in recipe_views(group):
        decision = model_decision(view, model)
        scenario = f"{label} on {group_title(view)}"
        if decision.largest is None:
            rows.append(shortfall_row(f"{scenario}: any measured size", decision.shortfall, "size"))
            continue
        top = decision.largest.top
        why = [f"{peak_text(top.record, view)} ({link(top.ref)})"]
        for b, e in decision.largest.per_backend.items():
            if e is not top:
                why.append(f"{BACKEND_LABEL[b]} fits at most s{e.record.seq_len} b{e.record.batch_size} "
                           f"({link(e.ref)})")
        for b in decision.largest.unfit_backends:
            why.append(f"{BACKEND_LABEL[b]} fits at no measured size (or only in unmatched pairs)")
        why.append(versus_text(view, top))
        rows.append([f"{scenario}: largest measured size that fits", approach_text(top.record),
                     "; ".join(why), cost_text(view, top.record)])
        for choice in decision.per_seq_len:
            if choice.best is None:
                rows.append(shortfall_row(f"{scenario}: seq_len {choice.seq_len}", choice.shortfall, "batch size"))
                continue
            best = choice.best
            why = [f"highest measured throughput at seq_len {choice.seq_len}: {best.record.tokens_per_s:,.0f} "
                   f"tokens/s{speed}, {peak_text(best.record, view)} ({link(best.ref)})", versus_text(view, best)]
            rows.append([f"{scenario}: seq_len {choice.seq_len}", approach_text(best.record), "; ".join(why),
                         cost_text(view, best.record)])
    return rows
