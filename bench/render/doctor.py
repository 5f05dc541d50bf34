"""`bench doctor` on the console: the GPU, the tier's capabilities, the libraries against the
known-good combinations, the recipes this machine can run, and the advice table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.analysis.doctor import DoctorReport
from bench.units import GiB


def print_doctor(out: Console, report: DoctorReport) -> None:
    """Print a `diagnose` report (rich markup, escaped where it holds detected text)."""
    if report.gpu:
        g = report.gpu
        out.print(f"[bold]GPU[/]: {g['name']}, {g['total_memory_bytes'] / GiB:.1f} GiB, compute capability "
                  f"{g['compute_capability']}, driver {g['driver']}")
    for n in report.notes:
        out.print(f"[yellow]{escape(n)}[/]")
    if report.tier:
        caps = report.capabilities
        out.print(f"[bold]tier[/]: {report.tier} ({report.tier_source}); bf16 {'yes' if caps['bf16'] else 'no'}, "
                  f"fp8 {'yes' if caps['fp8'] else 'no'}, flash-attention 2 {'yes' if caps['flash_attention_2'] else 'no'}")
    vers = ", ".join(f"{k} {v or '-'}" for k, v in report.versions.items())
    out.print(f"[bold]libraries[/]: {escape(vers)}", soft_wrap=True)
    c = report.combo
    if c.ok:
        out.print(f"[green]known-good combination[/]: {c.matches}")
    else:
        diffs = "; ".join(f"{k} {have or '-'} (known good {want})" for k, (have, want) in c.mismatches.items())
        miss = ", ".join(c.missing)
        out.print(f"[yellow]not a known-good combination[/] (closest: {c.closest})"
                  + (f": {escape(diffs)}" if diffs else "") + (f"; not installed: {miss}" if miss else ""))
    if report.recipes:
        out.print(recipes_table(report.recipes))
    if report.advice:
        t = Table(title=f"advice for {report.tier}: {report.model}, seq {report.seq_len}, batch {report.batch_size} "
                        "(numbers from bench estimate: predicted, not measured)")
        t.add_column("topic")
        t.add_column("advice")
        t.add_column("backed by")
        for a in report.advice:
            t.add_row(a.topic, escape(a.text), escape(a.evidence))
        out.print(t)


def recipes_table(recipes: list[dict[str, Any]]) -> Table:
    """Each recipe: its library family and precision, and whether it can run here (else what to install)."""
    t = Table(title="recipes on this machine (`bench recipes` says what each one changes)")
    for col in ("recipe", "family", "precision", "here"):
        t.add_column(col)
    for r in recipes:
        if r["installed"] is False:
            here = f"[yellow]needs {r['package']}[/]: {escape(r['install'])}"
        elif r["needs_gpu"]:
            here = "[yellow]needs a CUDA GPU[/]" + (" (installed)" if r["installed"] else "")
        else:
            here = "[green]ready[/]" if r["installed"] else "unknown"
        t.add_row(r["recipe"], r["family"], r["precision"], here)
    return t


def known_good_table(combos: list[dict[str, Any]]) -> Table:
    """Known-good combinations with their versions and evidence."""
    t = Table(title="known-good library combinations (from records that ran ok on a GPU)")
    for col in ("combination", "versions", "evidence"):
        t.add_column(col)
    for c in combos:
        ev = c["evidence"]
        t.add_row(escape(c["label"]), escape(", ".join(f"{k} {v}" for k, v in c["versions"].items())),
                  escape(f"{ev['ok_cells']} ok cells ({', '.join(ev['backends'])}) in {', '.join(ev['results'])}; "
                         f"commits {', '.join(x[:12] for x in ev['commits']) or '-'}"))
    return t
