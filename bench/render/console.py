"""Rich output for `bench run`: a progress bar over cells, a line per finished cell, and the comparison
table at the end.

Readable at 80 columns: below NARROW_WIDTH columns the per-cell line drops the allocated peak and the
first step, and the comparison table drops its low-priority columns (first step, MFU / HFU, fast paths; the
allocated peak beside the device peak), shortens its headers and draws no vertical rules. CPU cells
have no GPU figures: their line and table show the process's peak RSS instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from bench.analysis.speed import INCONCLUSIVE, pair_memory_saving, pair_speedup, side_speed, speedup_verdict
from bench.analysis.stats import NOISY_CV
from bench.config.settings import Cell
from bench.render.text import fmt, fmt_interval, gib, mfu_hfu
from bench.schema.pairs import DEFAULT_REFERENCE, Pair, pair_records, reference_for
from bench.schema.record import ResultRecord
from bench.schema.store import latest_repeats, representative

#: Below this console width, lines and tables leave out their low-priority figures.
NARROW_WIDTH = 100
#: Column headers at a narrow width.
SHORT_HEADERS = {"peak RSS GiB": "RSS GiB", "peak device GiB": "dev GiB", "tokens/s": "tok/s", "speed-up": "speed",
                 "mem saved": "saved"}


def short(cell_or_record) -> str:
    return f"{cell_or_record.recipe:<9} {cell_or_record.model} s{cell_or_record.seq_len} b{cell_or_record.batch_size}"


def figures_text(r: ResultRecord, narrow: bool = False) -> str:
    """An ok cell's figures in one line: median tokens/s (bench.analysis.speed; 'noisy' past the CV threshold), memory (peak RSS on CPU, else device and allocated
    peaks) and the first step; narrow: tokens/s and one memory figure."""
    speed = side_speed(r)
    text = f"{fmt(speed.tokens_per_s.estimate, ',.0f')} tok/s" + (" noisy" if speed.noisy else "")
    if r.mode == "cpu":
        text += f"  peak RSS {gib(r.peak_rss_bytes)} GiB"
    elif narrow:
        text += f"  device {gib(r.peak_device_bytes)} GiB"
    else:
        text += f"  peak alloc {gib(r.peak_allocated_bytes)} GiB  device {gib(r.peak_device_bytes)} GiB"
    return text if narrow else text + f"  first step {fmt(r.first_step_s, '.1f', ' s')}"


class _CountColumn(MofNCompleteColumn):
    """'done/total' for the cells bar; nothing for a group's line (which has no total)."""

    def render(self, task):
        return super().render(task) if task.total is not None else Text("")


class RunProgress:
    """Progress over cells (the bar), and one line per worker group at work (recipe x model: one GPU each)
    with its current cell's state."""

    def __init__(self, console: Console, total: int, what: str = "cells"):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), _CountColumn(), TimeElapsedColumn(),
            console=console, transient=False,
        )
        self.task = self.progress.add_task(what, total=total)
        self.lanes: dict[tuple, int] = {}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def status(self, cell: Cell, text: str) -> None:
        lane = (cell.recipe, cell.model)
        if lane not in self.lanes:
            self.lanes[lane] = self.progress.add_task("", total=None)
        self.progress.update(self.lanes[lane], description=f"  {short(cell)}: {text}")

    def record(self, r: ResultRecord) -> None:
        self.progress.advance(self.task)
        self.console.print(record_line(r, narrow=self.console.width < NARROW_WIDTH))


def record_line(r: ResultRecord, narrow: bool = False) -> str:
    """The line printed when a cell finishes (rich markup): status, cell, figures or error, fast paths, parity."""
    colour = {"ok": "green", "oom": "yellow", "skipped": "dim"}.get(r.status, "red")
    line = f"[{colour}]{r.status:>7}[/] {short(r)}"
    if r.repeats > 1:
        line += f" [dim]repeat {r.repeat + 1}/{r.repeats}[/]"
    gpu = (r.placement or {}).get("gpu_index")
    if gpu is not None:
        line += f" [dim]gpu{gpu}[/]"
    if r.ok:
        line += f"  {figures_text(r, narrow)}"
    elif r.error:
        line += f"  {r.error.splitlines()[0][:80 if narrow else 160]}"
    if r.fast_paths:
        line += f"  {_fast_paths(r)}"
    if r.matched is False:
        line += "  [bold red]PARITY FAILED: " + "; ".join((r.parity or {}).get("reasons") or []) + "[/]"
    elif r.matched:
        line += "  [green]matched[/]"
    for w in r.warnings:
        line += f"\n        [yellow]warning:[/] {w}"
    return line


def _fast_paths(r: ResultRecord) -> str:
    """'fast paths k/n' for a record that carries a summary, else ''."""
    if not r.fast_paths:
        return ""
    from kernels_check import format_fast_paths

    return format_fast_paths(r.fast_paths)


#: The markers of the comparison table and their legend (its caption).
NOISY_MARK, INCONCLUSIVE_MARK = "*", "?"
SPEED_LEGEND = (f"tokens/s: median per-step rate over the timed steps of every repeat [95 % interval]; "
                f"{NOISY_MARK} noisy (CV > {NOISY_CV * 100:g} %); speed-up {INCONCLUSIVE_MARK}: inconclusive "
                f"(its interval contains 1.0)")


@dataclass
class _Cell:
    """A cell's latest record and the records of every repeat of its latest run."""

    record: ResultRecord
    repeat_records: list[ResultRecord]


def speed_cell_text(side, narrow: bool = False) -> str:
    """'1,883 [1,672–2,029]*' (narrow: '1,883*'): median tokens/s, its interval, the noisy marker."""
    speed = side_speed(side)
    shown = fmt(speed.tokens_per_s.estimate, ",.0f") if narrow else fmt_interval(speed.tokens_per_s, ",.0f")
    return shown + (NOISY_MARK if speed.noisy else "")


def speedup_cell_text(p: Optional[Pair], narrow: bool = False) -> str:
    """'1.34x [1.20–1.52]' (narrow: '1.34x'), '?' added when inconclusive; '' without a pair."""
    if p is None:
        return ""
    ratio = pair_speedup(p)
    if ratio is None or ratio.estimate is None:
        return "-"
    shown = fmt(ratio.estimate, ".2f", "x") if narrow else fmt_interval(ratio, ".2f", "x")
    return shown + (INCONCLUSIVE_MARK if speedup_verdict(ratio) == INCONCLUSIVE else "")


@dataclass
class ComparisonTable:
    """One (tier, mode, model) of a run: a row per recipe and size, the reference recipe first, then each
    candidate's speed-up and memory saving against it (comparable pairs only). Laid out when printed:
    below NARROW_WIDTH columns the low-priority columns are left out."""

    tier: str
    mode: str
    model: str
    records: list[ResultRecord]
    reference: str = DEFAULT_REFERENCE

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(narrow=options.max_width < NARROW_WIDTH)

    def table(self, narrow: bool = False) -> Table:
        cpu = self.mode == "cpu"
        ref = reference_for({r.recipe for r in self.records}, self.reference)
        t = Table(title=f"{self.model} on {self.tier} ({self.mode}); against {ref or 'no reference recipe'}",
                  title_justify="left", box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD, show_edge=not narrow,
                  caption=SPEED_LEGEND + ("; intervals at 100+ columns" if narrow else ""), caption_justify="left")
        memory = ["peak RSS GiB"] if cpu else (["peak device GiB"] if narrow else ["peak alloc GiB", "peak device GiB"])
        fast = any(r.fast_paths for r in self.records) and not narrow
        columns = ["seq", "batch", "recipe", "status", *memory, "tokens/s"] \
            + ([] if narrow else ["first step s"]) + ([] if (narrow or cpu) else ["MFU / HFU"]) \
            + ["speed-up"] + ([] if cpu else ["mem saved"]) + ["parity"] + (["fast paths"] if fast else [])
        for col in columns:
            t.add_column(SHORT_HEADERS.get(col, col) if narrow else col, no_wrap=col == "recipe",
                         justify="left" if col in ("recipe", "status", "parity", "fast paths") else "right")
        cells = [_Cell(representative(reps), reps) for reps in latest_repeats(self.records).values()]
        pairs = {id(p.candidate): p for p in pair_records(cells, self.reference) if p.candidate is not None}
        references = {id(p.reference) for p in pairs.values() if p.reference is not None}
        for c in sorted(cells, key=lambda c: (c.record.seq_len, c.record.batch_size, c.record.pair_key,
                                              id(c) not in references)):
            t.add_row(*self._row(c, pairs.get(id(c)), columns, narrow))
        return t

    @staticmethod
    def _row(c: _Cell, p: Optional[Pair], columns: list[str], narrow: bool) -> list[str]:
        r = c.record
        saving = pair_memory_saving(p) if p else None
        saved = saving.estimate if saving is not None else None
        oom = "OOM" if narrow else (r.error or "oom").split(":")[0]
        values = {
            "seq": str(r.seq_len), "batch": str(r.batch_size), "recipe": r.recipe,
            "status": r.status if r.status != "oom" else f"[yellow]{oom}[/]",
            "peak RSS GiB": gib(r.peak_rss_bytes), "peak alloc GiB": gib(r.peak_allocated_bytes),
            "peak device GiB": gib(r.peak_device_bytes), "tokens/s": speed_cell_text(c, narrow) if r.ok else "-",
            "first step s": fmt(r.first_step_s, ".1f"),
            "MFU / HFU": mfu_hfu(r.mfu, r.hfu),
            "speed-up": speedup_cell_text(p, narrow),
            "mem saved": fmt(None if saved is None else saved * 100, ".0f", " %") if p else "",
            "parity": _parity(r), "fast paths": _fast_paths(r),
        }
        return [values[c] for c in columns]


def comparison_tables(records: list[ResultRecord], reference: str = DEFAULT_REFERENCE) -> list[ComparisonTable]:
    """One table per (tier, mode, model), in first-seen order (printable with rich)."""
    groups: dict[tuple, list] = {}
    for r in records:
        groups.setdefault((r.tier, r.mode, r.model), []).append(r)
    return [ComparisonTable(tier, mode, model, recs, reference) for (tier, mode, model), recs in groups.items()]


def _parity(r: ResultRecord) -> str:
    return "-" if r.matched is None else ("[green]matched[/]" if r.matched else "[bold red]MISMATCH[/]")


def fitted_table(title: str, columns: list[tuple[str, int]], rows: list[list[str]], width: int,
                 right: tuple[str, ...] = ()) -> Table:
    """A table that fits `width` columns of terminal without cutting a value or a header: columns are
    (header, priority), lower priorities dropped first until every kept column shows its longest value
    whole. The dropped columns are named in the caption."""
    def natural(i: int) -> int:
        return max([len(columns[i][0])] + [len(r[i]) for r in rows])

    keep = list(range(len(columns)))
    while len(keep) > 1 and sum(natural(i) for i in keep) + 3 * len(keep) + 1 > width:
        keep.remove(min(keep, key=lambda i: (columns[i][1], -i)))
    dropped = [columns[i][0] for i in range(len(columns)) if i not in keep]
    t = Table(title=title, caption=f"not shown at this width: {', '.join(dropped)}" if dropped else None)
    for i in keep:
        name = columns[i][0]
        t.add_column(name, justify="right" if name in right else "left", no_wrap=True, min_width=natural(i))
    for r in rows:
        t.add_row(*(r[i] for i in keep))
    return t
