"""Rich output for `bench run`: a progress bar over cells and the comparison table at the end."""

from __future__ import annotations

from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.schema.pairs import pair_records
from bench.config.settings import Cell
from bench.schema.record import ResultRecord
from bench.render.text import fmt, gib

def short(cell_or_record) -> str:
    return f"{cell_or_record.backend:<7} {cell_or_record.model} s{cell_or_record.seq_len} b{cell_or_record.batch_size}"


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


def comparison_tables(records: list[ResultRecord]) -> list[Table]:
    """One table per (tier, mode, model): backend rows, then Unsloth's speed-up and memory saving."""
    tables = []
    groups: dict[tuple, list] = {}
    for p in pair_records(records):
        r = p.any
        groups.setdefault((r.tier, r.mode, r.model), []).append(p)
    for (tier, mode, model), pairs in groups.items():
        t = Table(title=f"{model} on {tier} ({mode})", title_justify="left")
        for col in ("seq", "batch", "backend", "status", "peak alloc GiB", "peak device GiB", "tokens/s",
                    "first step s", "MFU", "speed-up", "mem saved", "parity", "fast paths"):
            t.add_column(col, justify="right" if col not in ("backend", "status", "parity", "fast paths") else "left")
        for p in sorted(pairs, key=lambda p: (p.any.seq_len, p.any.batch_size)):
            for r in (p.hf, p.unsloth):
                if r is None:
                    continue
                is_un = r.backend == "unsloth"
                parity = "-" if r.matched is None else ("[green]matched[/]" if r.matched else "[bold red]MISMATCH[/]")
                status = r.status if r.status != "oom" else f"[yellow]{(r.error or 'oom').split(':')[0]}[/]"
                t.add_row(
                    str(r.seq_len), str(r.batch_size), r.backend, status, gib(r.peak_allocated_bytes),
                    gib(r.peak_device_bytes), fmt(r.tokens_per_s, ",.0f"), fmt(r.first_step_s, ".1f"),
                    fmt(r.mfu * 100 if r.mfu is not None else None, ".1f", " %"),
                    fmt(p.speedup, ".2f", "x") if is_un else "",
                    fmt(p.memory_reduction() * 100 if p.memory_reduction() is not None else None, ".0f", " %")
                    if is_un else "",
                    parity,
                    _fast_paths(r),
                )
        tables.append(t)
    return tables
