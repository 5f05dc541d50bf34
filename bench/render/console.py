"""Rich output for `bench run`: a progress bar over cells and the comparison table at the end."""

from __future__ import annotations

from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.schema.pairs import DEFAULT_REFERENCE, pair_records, reference_for
from bench.config.settings import Cell
from bench.schema.record import ResultRecord
from bench.render.text import fmt, gib

def short(cell_or_record) -> str:
    return f"{cell_or_record.recipe:<9} {cell_or_record.model} s{cell_or_record.seq_len} b{cell_or_record.batch_size}"


class RunProgress:
    """Progress over cells with the current cell's state as the description."""

    def __init__(self, console: Console, total: int):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False,
        )
        self.task = self.progress.add_task("starting", total=total)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def status(self, cell: Cell, text: str) -> None:
        self.progress.update(self.task, description=f"{short(cell)}: {text}")

    def record(self, r: ResultRecord) -> None:
        self.progress.advance(self.task)
        colour = {"ok": "green", "oom": "yellow", "skipped": "dim"}.get(r.status, "red")
        line = f"[{colour}]{r.status:>7}[/] {short(r)}"
        if r.ok:
            line += (f"  {fmt(r.tokens_per_s, ',.0f')} tok/s  peak alloc {gib(r.peak_allocated_bytes)} GiB"
                     f"  device {gib(r.peak_device_bytes)} GiB  first step {fmt(r.first_step_s, '.1f', ' s')}")
        elif r.error:
            line += f"  {r.error.splitlines()[0][:160]}"
        if r.fast_paths:
            line += f"  {_fast_paths(r)}"
        if r.matched is False:
            line += "  [bold red]PARITY FAILED: " + "; ".join(r.parity["reasons"]) + "[/]"
        elif r.matched:
            line += "  [green]matched[/]"
        for w in r.warnings:
            line += f"\n        [yellow]warning:[/] {w}"
        self.console.print(line)


def _fast_paths(r: ResultRecord) -> str:
    """'fast paths k/n' for an Unsloth record that carries a summary, else ''."""
    if not r.fast_paths:
        return ""
    from kernels_check import format_fast_paths

    return format_fast_paths(r.fast_paths)


def comparison_tables(records: list[ResultRecord], reference: str = DEFAULT_REFERENCE) -> list[Table]:
    """One table per (tier, mode, model): a row per recipe and size, the reference recipe first, then each
    candidate's speed-up and memory saving against it (comparable pairs only)."""
    tables = []
    groups: dict[tuple, list] = {}
    for r in records:
        groups.setdefault((r.tier, r.mode, r.model), []).append(r)
    for (tier, mode, model), recs in groups.items():
        cpu = mode == "cpu"
        t = Table(title=f"{model} on {tier} ({mode}); against {reference_for({r.recipe for r in recs}, reference)}",
                  title_justify="left")
        memory = ("peak RSS GiB",) if cpu else ("peak alloc GiB", "peak device GiB")
        for col in ("seq", "batch", "recipe", "status", *memory, "tokens/s", "first step s", "MFU", "speed-up",
                    "mem saved", "parity", "fast paths"):
            t.add_column(col, justify="left" if col in ("recipe", "status", "parity", "fast paths") else "right")
        pairs = {id(p.candidate): p for p in pair_records(recs, reference) if p.candidate is not None}
        for r in sorted(recs, key=lambda r: (r.seq_len, r.batch_size, r.pair_key, id(r) not in _references(pairs))):
            p = pairs.get(id(r))
            saved = p.memory_reduction() if p else None
            status = r.status if r.status != "oom" else f"[yellow]{(r.error or 'oom').split(':')[0]}[/]"
            mem = (gib(r.peak_rss_bytes),) if cpu else (gib(r.peak_allocated_bytes), gib(r.peak_device_bytes))
            t.add_row(str(r.seq_len), str(r.batch_size), r.recipe, status, *mem, fmt(r.tokens_per_s, ",.0f"),
                      fmt(r.first_step_s, ".1f"), fmt(r.mfu * 100 if r.mfu is not None else None, ".1f", " %"),
                      fmt(p.speedup, ".2f", "x") if p else "", fmt(None if saved is None else saved * 100, ".0f", " %")
                      if p else "", _parity(r), _fast_paths(r))
        tables.append(t)
    return tables


def _references(pairs: dict) -> set[int]:
    return {id(p.reference) for p in pairs.values() if p.reference is not None}


def _parity(r: ResultRecord) -> str:
    return "-" if r.matched is None else ("[green]matched[/]" if r.matched else "[bold red]MISMATCH[/]")
