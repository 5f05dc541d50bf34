"""The gate's report for people and machines: finding messages, header lines, markdown, JSON, rich tables.

`finding_message` words a structured `Finding`; `render_markdown` is the GitHub-flavoured summary
(`bench gate --summary-md`), `report_json` the `--json` output, `report_table` / `baseline_table`
the terminal tables. Pure functions of their arguments; sizes are bytes.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable

from rich import box
from rich.markup import escape
from rich.table import Table

from bench.analysis.gate import METRIC_LABELS, CellRow, Finding, GateReport, filters_text
from bench.render import blocks
from bench.render.text import fmt, format_bytes, format_change, md_escape
from bench.schema.baseline import METRICS, Snapshot

VERDICT_LABELS = {"regression": "FAIL", "improvement": "better", "ok": "ok"}
VERDICT_STYLES = {"regression": "bold red", "improvement": "green", "ok": ""}


# ---------------------------------------------------------------------------------------------
# findings


def _vram(f: Finding) -> str:
    x = f.facts
    what = (f"{format_bytes(x['baseline_bytes'])} → {format_bytes(x['new_bytes'])} ({format_change(x['change'])}) "
            f"on {x['metric']}")
    if f.severity == "improvement":
        return f"memory down: {what}"
    increase = "VRAM increase" if x["metric"] != "rss" else "peak RSS increase"
    return f"{increase} {format_bytes(x['new_bytes'] - x['baseline_bytes'])}: {what}, over the {x['tolerance']} tolerance"


def speed_change_text(change, interval=None) -> str:
    """'-13.8%', or with the 95 % interval of the change: '-13.8% [-31.0%, +7.5%]'."""
    text = format_change(change)
    return text if interval is None else f"{text} [{format_change(interval[0])}, {format_change(interval[1])}]"


def _slowdown(f: Finding) -> str:
    x = f.facts
    interval = (x["low"], x["high"]) if x.get("rule") == "interval" else None
    median = "median per-step " if interval else ""
    what = (f"{x['baseline_tokens_per_s']:,.0f} → {x['new_tokens_per_s']:,.0f} {median}tokens/s "
            f"({speed_change_text(x['change'], interval)}{' 95 % interval' if interval else ''})")
    tol = f"{x['tolerance'] * 100:g}%"
    if f.severity == "info":
        return (f"speed {what}: past the {tol} tolerance as a point figure, but the interval reaches within it: "
                f"run-to-run noise, not a regression")
    if f.severity == "improvement":
        return f"faster: {what}" + ("" if interval else f" (point figures: {x.get('why_point')})")
    if interval:
        return f"slowdown: {what}, the whole interval beyond the {tol} tolerance"
    return f"slowdown: {what}, over the {tol} tolerance (point figures, no interval: {x.get('why_point')})"


def _status(f: Finding) -> str:
    x = f.facts
    if f.severity == "improvement":
        return f"{x['baseline_status']} in the baseline, now ok (no figures to compare against)"
    why = " (out of memory)" if x["status"] == "oom" else " (dominated by an out-of-memory cell)"
    return f"ok in the baseline, now {x['status']}{why}"


def _crashed(f: Finding) -> str:
    x = f.facts
    was = f"{x['baseline_status']} in the baseline, now " if x["baseline_status"] else ""
    return f"{was}{x['status']}" + (f": {x['error']}" if x["error"] else "")


def _parity(f: Finding) -> str:
    x = f.facts
    recipe, ref = x.get("recipe"), x.get("reference")
    if ref is None:
        what = f"{recipe} is not matched with the other recipe of its configuration"
    elif recipe == ref:
        what = f"a recipe compared with this reference ({ref}) is not matched"
    else:
        what = f"{recipe} against the reference {ref} is not matched"
    why = f" ({'; '.join(x['reasons'])})" if x.get("reasons") else ""
    also = " (already failing in the baseline)" if x["baseline_unmatched"] else ""
    return f"parity check failed: {what}{why}{also}"


def _budget(f: Finding) -> str:
    x = f.facts
    if "status" in x:
        return f"{x['status']}: does not fit the {x['budget']} budget"
    note = "" if x["used"] == x["metric"] else f" ({METRICS[x['metric']]} not recorded: {METRICS[x['used']]} used)"
    return (f"{x['used']} peak {format_bytes(x['bytes'])} is over the {x['budget']} budget "
            f"({format_bytes(x['budget_bytes'])}) by {format_bytes(x['bytes'] - x['budget_bytes'])}{note}")


_MESSAGES: dict[str, Callable[[Finding], str]] = {
    "vram": _vram,
    "slowdown": _slowdown,
    "status": _status,
    "crashed": _crashed,
    "parity": _parity,
    "budget": _budget,
    "missing": lambda f: f"in the baseline ({f.facts['baseline_status']}) but missing from the results",
    "new": lambda f: "new cell: not in the baseline, nothing to compare",
    "note": lambda f: (f"{METRICS[f.facts['metric']]} not recorded on both sides: "
                       f"compared on {METRICS[f.facts['used']]}"),
}


def finding_message(f: Finding) -> str:
    """One line saying what the gate found and by how much."""
    return _MESSAGES[f.kind](f)


def verdict_text(row: CellRow) -> str:
    """'ok', 'better: vram', 'FAIL: budget, parity': the row's verdict and the kinds behind it."""
    kinds = sorted({f.kind for f in row.findings if f.severity == row.verdict})
    return VERDICT_LABELS[row.verdict] + (": " + ", ".join(kinds) if kinds and row.verdict != "ok" else "")


# ---------------------------------------------------------------------------------------------
# text and markdown


def header_lines(report: GateReport) -> list[str]:
    """Plain-text lines that say what was compared with what (shared by terminal and markdown)."""
    s = report.settings
    lines = []
    if report.baseline_path is not None:
        lines.append(f"baseline {report.baseline_path} ({report.baseline_cells} cells"
                     + (f", saved {report.baseline_created_at}" if report.baseline_created_at else "") + ")")
    lines.append(f"results {', '.join(report.results_sources)} ({report.results_cells} cells"
                 + (f", GPU {' / '.join(report.gpus)}" if report.gpus else "") + ")")
    checks = [f"metric: {METRIC_LABELS[s.metric]}"]
    if report.baseline_path is not None:
        checks.append(f"max VRAM increase: {s.max_vram_increase.text if s.max_vram_increase else 'off'}")
        checks.append(f"max slowdown: {f'{s.max_slowdown * 100:g}%' if s.max_slowdown is not None else 'off'}"
                      + (f" (fails when the 95 % interval of new / baseline tokens/s lies below "
                         f"{1 - s.max_slowdown:g})" if s.max_slowdown is not None else ""))
    if s.budget is not None:
        checks.append(f"VRAM budget: {format_bytes(s.budget.bytes)} = {s.budget.label}")
    if report.references:
        missing = "" if s.reference in report.references else f" (no {s.reference} cells)"
        checks.append(f"parity against: {' / '.join(report.references)}{missing}")
    lines.append("; ".join(checks))
    if s.ignore_key:
        lines.append(f"cells matched ignoring: {', '.join(s.ignore_key)}")
    if s.only:
        lines.append("gated subset: " + filters_text(s.only))
    return lines


def _markdown_table(report: GateReport) -> blocks.Table:
    metric_name = report.settings.metric
    with_baseline = report.baseline_path is not None
    if with_baseline:
        table = blocks.Table(["cell", "status", f"{metric_name} baseline → new", "change", "tokens/s baseline → new",
                              "change [95 % interval]", "verdict"], [], right={3, 5})
    else:
        table = blocks.Table(["cell", "status", f"{metric_name} peak", "verdict"], [])
    for row in report.rows:
        cell = f"{md_escape(row.label)}<br>`{row.cell_id}`"
        if row.key_differences:
            cell += "<br>" + md_escape("; ".join(row.key_differences))
        status_new = row.new.status if row.new else "missing"
        metric_note = "" if row.metric in (None, metric_name) else f" ({row.metric})"
        if with_baseline:
            tps = "-" if row.baseline_tokens_per_s is None and row.new_tokens_per_s is None else \
                f"{fmt(row.baseline_tokens_per_s, ',.0f')} → {fmt(row.new_tokens_per_s, ',.0f')}"
            table.rows.append([cell, f"{row.baseline.status if row.baseline else 'new'} → {status_new}",
                               f"{format_bytes(row.baseline_bytes)} → {format_bytes(row.new_bytes)}{metric_note}",
                               format_change(row.memory_change), tps,
                               speed_change_text(row.speed_change, row.speed_change_interval), verdict_text(row)])
        else:
            table.rows.append([cell, status_new, f"{format_bytes(row.new_bytes)}{metric_note}", verdict_text(row)])
    return table


def _findings_blocks(title: str, findings: list[Finding], with_kind: bool) -> list[blocks.Block]:
    if not findings:
        return []
    items = [f"`{f.cell_id}`" + (f" ({f.kind})" if with_kind else "") + f": {md_escape(finding_message(f))}"
             for f in findings]
    return [blocks.Para(f"**{title}**"), blocks.Bullets(items)]


def render_markdown(report: GateReport) -> str:
    """The gate's verdict, settings, warnings, table and findings as GitHub-flavoured markdown."""
    n_reg = len(report.regressions)
    verdict = "PASS" if report.passed else f"FAIL ({n_reg} regression{'s' if n_reg != 1 else ''})"
    doc: list[blocks.Block] = [blocks.Heading(3, f"qlora-bench gate: {verdict}"),
                               blocks.Bullets([md_escape(line) for line in header_lines(report)])]
    doc += [blocks.Para(f"> **warning:** {md_escape(w)}") for w in report.warnings]
    doc.append(_markdown_table(report))
    doc += _findings_blocks("Regressions", report.regressions, with_kind=True)
    doc += _findings_blocks("Improvements", report.improvements, with_kind=True)
    doc += _findings_blocks("Notes", [f for f in report.findings if f.severity == "info"], with_kind=False)
    return blocks.render_markdown(doc) + "\n"


# ---------------------------------------------------------------------------------------------
# JSON


def _finding_json(f: Finding) -> dict[str, Any]:
    return {"severity": f.severity, "kind": f.kind, "cell_id": f.cell_id, "label": f.label,
            "message": finding_message(f)}


def report_json(report: GateReport) -> dict[str, Any]:
    """The report as `bench gate --json` prints it (bytes, tokens/s, changes as fractions)."""
    s = report.settings
    return {
        "passed": report.passed,
        "exit_code": report.exit_code,
        "metric": s.metric,
        "metric_label": METRIC_LABELS[s.metric],
        "max_vram_increase": s.max_vram_increase.text if s.max_vram_increase else None,
        "max_slowdown": s.max_slowdown,
        "vram_budget": asdict(s.budget) if s.budget else None,
        "ignored_key_fields": list(s.ignore_key),
        "only": {k: list(v) for k, v in s.only.items()},
        "allow_env_mismatch": s.allow_env_mismatch,
        "reference": s.reference,
        "parity_references": report.references,
        "baseline": None if report.baseline_path is None else {
            "path": report.baseline_path, "created_at": report.baseline_created_at, "cells": report.baseline_cells},
        "results": {"paths": report.results_sources, "cells": report.results_cells},
        "gpus": report.gpus,
        "warnings": report.warnings,
        "regressions": [_finding_json(f) for f in report.regressions],
        "improvements": [_finding_json(f) for f in report.improvements],
        "cells": [
            {
                "label": r.label, "cell_id": r.cell_id, "recipe": (r.new or r.baseline).recipe,
                "baseline_cell_id": r.baseline.cell_id if r.baseline else None,
                "baseline_status": r.baseline.status if r.baseline else None,
                "status": r.new.status if r.new else None,
                "metric": r.metric, "baseline_bytes": r.baseline_bytes, "new_bytes": r.new_bytes,
                "memory_change": r.memory_change,
                "baseline_tokens_per_s": r.baseline_tokens_per_s, "new_tokens_per_s": r.new_tokens_per_s,
                "speed_change": r.speed_change,
                "speed_change_interval": list(r.speed_change_interval) if r.speed_change_interval else None,
                "speed_rule": r.speed_rule, "key_differences": r.key_differences,
                "verdict": r.verdict, "findings": [_finding_json(f) for f in r.findings],
            }
            for r in report.rows
        ],
    }


# ---------------------------------------------------------------------------------------------
# terminal (rich)


def report_table(report: GateReport) -> Table:
    """The gate's table for the terminal (rich markup: verdicts coloured, labels escaped)."""
    with_baseline = report.baseline_path is not None
    t = Table(title="qlora-bench gate", box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("cell", no_wrap=True)
    t.add_column("status", no_wrap=True)
    if with_baseline:
        t.add_column(f"{report.settings.metric} base", justify="right", no_wrap=True)
        t.add_column("new", justify="right", no_wrap=True)
        t.add_column("Δ", justify="right", no_wrap=True)
        t.add_column("tok/s Δ", justify="right", no_wrap=True)
    else:
        t.add_column(f"{report.settings.metric} peak", justify="right", no_wrap=True)
    t.add_column("verdict")
    for row in report.rows:
        status_new = row.new.status if row.new else "missing"
        label = escape(row.label + (f" ({'; '.join(row.key_differences)})" if row.key_differences else ""))
        style = VERDICT_STYLES[row.verdict]
        verdict = f"[{style}]{verdict_text(row)}[/]" if style else verdict_text(row)
        if with_baseline:
            status = f"{row.baseline.status if row.baseline else 'new'}→{status_new}"
            t.add_row(label, status, format_bytes(row.baseline_bytes), format_bytes(row.new_bytes),
                      format_change(row.memory_change),
                      speed_change_text(row.speed_change, row.speed_change_interval), verdict)
        else:
            t.add_row(label, status_new, format_bytes(row.new_bytes), verdict)
    return t


def baseline_table(snap: Snapshot, path: str) -> Table:
    """The cells of a baseline: status, the four memory peaks and tokens/s."""
    t = Table(title=f"baseline {path} (saved {snap.created_at})")
    for col in ("cell", "status", "device", "reserved", "allocated", "rss", "tokens/s", "cell_id"):
        t.add_column(col)
    for c in snap.cells:
        t.add_row(c.label, c.status, format_bytes(c.peak_device_bytes), format_bytes(c.peak_reserved_bytes),
                  format_bytes(c.peak_allocated_bytes), format_bytes(c.peak_rss_bytes),
                  fmt(c.tokens_per_s, ",.0f"), c.cell_id)
    return t
