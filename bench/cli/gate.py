"""`bench baseline save|show` and `bench gate`: CI regression gates on VRAM and speed.

Thin: parses options, reads files (bench.schema.baseline, bench.schema.store), calls
bench.analysis.gate and prints what bench.render.gate renders. Exit codes of `bench gate`:
0 pass, 1 at least one regression, 2 unusable input (one red line on stderr).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from bench.analysis import gate
from bench.cli.common import UsageFailure, check_writable, console, err_console, wide_console
from bench.render import gate as render
from bench.schema import baseline as baseline_file
from bench.schema.pairs import DEFAULT_REFERENCE
from bench.schema.store import load_with_repeats

baseline_app = typer.Typer(no_args_is_help=True, help="Save or inspect gate baselines (explicit; never implicit).")


def _now_utc() -> str:
    """Now in UTC, ISO 8601 to the second: a baseline's created_at."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@baseline_app.command("save")
def baseline_save(
    results: List[Path] = typer.Argument(..., help="Results JSONL files (latest record per cell is kept)."),
    out: Path = typer.Option(..., "--out", help="Baseline JSON to write (replaced if it exists)."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Keep only cells with FIELD=VALUE[,VALUE] (repeatable)."),
    reference: str = typer.Option(DEFAULT_REFERENCE, "--reference",
                                  help="The recipe parity verdicts are against (falls back as `bench report` does)."),
    force: bool = typer.Option(False, "--force", help="Replace a baseline of other tiers than these results'."),
):
    """Save the peak memory and tokens/s of every cell in RESULTS as a baseline for `bench gate`."""
    check_writable(out, "--out")
    filters = gate.parse_filters(only or [])
    ref = gate.parse_reference(reference)
    records, repeats = load_with_repeats(results, reference=ref)
    snap = baseline_file.baseline_from_records(records, [str(p) for p in results],
                                               created_at=_now_utc(), reference=ref, repeats=repeats)
    if filters:
        snap.cells = gate.filter_cells(snap.cells, filters)
        if not snap.cells:
            raise gate.GateError("no cell matches --only " + gate.filters_text(filters))
    existed = out.exists()
    if existed and not force:
        old = {c.key.get("tier") for c in baseline_file.load_baseline(out).cells}
        new = {c.key.get("tier") for c in snap.cells}
        if old != new:
            raise UsageFailure(f"{out} is a baseline of tier {', '.join(sorted(map(str, old)))}; these results are "
                               f"{', '.join(sorted(map(str, new)))}: pass --force to replace it, or another --out")
    baseline_file.save_baseline(snap, out)
    counts: dict[str, int] = {}
    for c in snap.cells:
        counts[c.status] = counts.get(c.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    console.print(f"baseline {'replaced' if existed else 'written'}: {out} ({len(snap.cells)} cells: {summary}; "
                  f"GPU {' / '.join(snap.gpu_names())})")
    crashed = [c.cell_id for c in snap.cells if c.status in gate.CRASHED]
    if crashed:
        err_console.print(f"[yellow]warning:[/] {len(crashed)} cells crashed in these results (error/timeout): "
                          f"they have no figures to gate against: {', '.join(crashed)}")
    unmatched = [c.cell_id for c in snap.cells if c.matched is False]
    if unmatched:
        err_console.print(f"[yellow]warning:[/] {len(unmatched)} cells failed the parity check; "
                          f"the gate fails results whose parity fails: {', '.join(unmatched)}")


@baseline_app.command("show")
def baseline_show(path: Path = typer.Argument(..., help="Baseline JSON.")):
    """Print the cells of a baseline."""
    snap = baseline_file.load_baseline(path)
    wide_console(console).print(render.baseline_table(snap, str(path)))
    console.print(f"sources: {', '.join(snap.sources)}", soft_wrap=True)
    console.print(f"GPU: {' / '.join(snap.gpu_names())}", soft_wrap=True)


def gate_command(
    results: List[Path] = typer.Argument(..., help="New results JSONL files to gate."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="Baseline JSON from `bench baseline save`."),
    max_vram_increase: str = typer.Option("5%", "--max-vram-increase",
                                          help="Per-cell memory growth allowed: a percentage (5%) or a size "
                                               "(512MiB); off to disable."),
    max_slowdown: str = typer.Option("off", "--max-slowdown",
                                     help="Per-cell tokens/s drop allowed, e.g. 10%: fails when the 95 % interval of new / "
                                          "baseline median per-step tokens/s lies below 1 - it; off (default) "
                                          "to not gate speed."),
    metric: str = typer.Option("device", "--metric",
                               help="device (NVML, context incl.) | reserved | allocated | rss (host RSS, CPU proxy)."),
    vram_budget: Optional[str] = typer.Option(None, "--vram-budget",
                                              help="Absolute limit every cell must fit: 15GiB, 16GB, 15360MiB or a "
                                                   "tier name (t4 = torch's total on a real T4)."),
    ignore_key: Optional[List[str]] = typer.Option(None, "--ignore-key",
                                                   help="Key fields to leave out when matching cells (comma list), "
                                                        "to compare a changed setting: lora_r, or driver for "
                                                        "trainer results against a loop baseline."),
    only: Optional[List[str]] = typer.Option(None, "--only",
                                             help="Gate only cells with FIELD=VALUE[,VALUE] on both sides (repeatable), "
                                                  "e.g. recipe=unsloth."),
    allow_env_mismatch: bool = typer.Option(False, "--allow-env-mismatch",
                                            help="Compare even when the two sides ran on different GPUs."),
    reference: str = typer.Option(DEFAULT_REFERENCE, "--reference",
                                  help="The recipe each cell's parity verdict is against; where a configuration "
                                       "has no cell of it, the first of hf-trl, hf-kbit, hf-liger, hf-lora16 measured."),
    summary_md: Optional[Path] = typer.Option(None, "--summary-md",
                                              help="Append the markdown table here (e.g. \"$GITHUB_STEP_SUMMARY\")."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout (nothing else)."),
):
    """Fail (exit 1) when new results use more VRAM, run slower, crash or OOM against a baseline or budget.

    Exit codes: 0 pass, 1 regression, 2 unusable input.
    """
    check_writable(summary_md, "--summary-md")
    settings = gate.GateSettings(
        metric=gate.parse_metric(metric),
        max_vram_increase=gate.parse_vram_tolerance(max_vram_increase),
        max_slowdown=gate.parse_slowdown(max_slowdown),
        budget=gate.parse_budget(vram_budget) if vram_budget is not None else None,
        ignore_key=gate.parse_key_fields(ignore_key or []),
        only=gate.parse_filters(only or []),
        allow_env_mismatch=allow_env_mismatch,
        reference=gate.parse_reference(reference),
    )
    if baseline is None and settings.budget is None:
        raise gate.GateError("nothing to gate: give --baseline FILE and/or --vram-budget SIZE")
    if settings.ignore_key and baseline is None:
        raise gate.GateError("--ignore-key needs --baseline (it changes how cells are matched)")
    base = baseline_file.load_baseline(baseline) if baseline is not None else None
    records, repeats = load_with_repeats(results, reference=settings.reference)
    new = baseline_file.snapshot_from_records(records, [str(p) for p in results], settings.reference, repeats)
    report = gate.run_gate(new, base, settings)

    if summary_md is not None:
        summary_md.parent.mkdir(parents=True, exist_ok=True)
        with open(summary_md, "a", encoding="utf-8") as fh:
            fh.write(render.render_markdown(report) + "\n")
    if json_out:
        for w in report.warnings:
            err_console.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)
        sys.stdout.write(json.dumps(render.report_json(report), indent=2) + "\n")
        sys.stdout.flush()
    else:
        _print_report(report)
    raise typer.Exit(report.exit_code)  # bench.cli.main passes the code on


def _print_report(report: gate.GateReport) -> None:
    for line in render.header_lines(report):
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)
    wide_console(console).print(render.report_table(report))
    for f in report.regressions:
        console.print(f"[bold red]REGRESSION[/] {escape(f'[{f.kind}] {f.cell_id}: {render.finding_message(f)}')}",
                      soft_wrap=True, highlight=False)
    for f in report.improvements:
        console.print(f"[green]improvement[/] {escape(f'[{f.kind}] {f.cell_id}: {render.finding_message(f)}')}",
                      soft_wrap=True, highlight=False)
    for f in report.findings:
        if f.severity == "info":
            console.print(f"note {f.cell_id}: {render.finding_message(f)}", soft_wrap=True, highlight=False,
                          markup=False)
    n = len(report.regressions)
    if report.passed:
        console.print(f"[bold green]gate passed[/]: {len(report.rows)} cells, no regression")
    else:
        console.print(f"[bold red]gate failed[/]: {n} regression{'s' if n != 1 else ''}")


def register(app: typer.Typer) -> None:
    app.add_typer(baseline_app, name="baseline")
    app.command("gate")(gate_command)
