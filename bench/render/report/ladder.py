"""The ladder section of a group: where the difference comes from (bench.analysis.ladder), as a table and
a plot, with the estimator's per-component breakdown beside each step where the estimator gives one."""

from __future__ import annotations

from typing import Optional

from bench.analysis.ladder import LADDER, Ladder, LadderCell, LadderStep, group_ladder
from bench.analysis.results import Group, settings_views
from bench.analysis.speed import median_tokens_per_s
from bench.render.blocks import Block, Heading, Image, Para, Table
from bench.render.plots import LadderPlot
from bench.render.report.labels import group_slug, group_title, settings_label
from bench.render.report.phrases import parity_text, status_text
from bench.render.text import format_bytes, format_change, gib, link, md_escape
from bench.units import GiB

MEMORY_LABEL = {"peak_device_bytes": "peak device memory (NVML)",
                "peak_allocated_bytes": "peak allocated memory (torch)",
                "peak_rss_bytes": "peak RSS (process; CPU smoke cells, no GPU figure)"}
#: Components of the estimator's breakdown shown per step (the largest changes first).
TOP_COMPONENTS = 3


def cell_labels(group: Group, ladder: Ladder) -> dict[str, str]:
    """pair_key -> 'llama-3.1-8b s1024 b1' (with the settings that tell views apart, and the pair key's
    hash where two cells would still read the same)."""
    view_of = {e.record.pair_key: settings_label(v) for v in settings_views(group) for e in v.group.entries
               if e.record.model == v.model}
    labels = {}
    for c in ladder.cells:
        r = c.record
        text = f"{view_of.get(c.pair_key, r.model)} s{r.seq_len} b{r.batch_size}"
        labels[c.pair_key] = text + (f" ga{r.grad_accum}" if r.grad_accum != 1 else "")
    seen = list(labels.values())
    return {k: v + (f" [{k.rsplit('-', 1)[-1]}]" if seen.count(v) > 1 else "") for k, v in labels.items()}


def _side_memory(side, field: str) -> str:
    r = side.record
    return gib(getattr(r, field)) if r.ok else md_escape(status_text(r))


def estimate_text(step: LadderStep) -> str:
    """The step's largest predicted changes per component ('-' without an estimate)."""
    change = step.estimate_change
    if change is None:
        return "-"
    top = sorted(((k, v) for k, v in change.items() if v), key=lambda kv: -abs(kv[1]))[:TOP_COMPONENTS]
    return ", ".join(f"{md_escape(k)} {format_bytes(v)}" for k, v in top) or "no change predicted"


def step_row(label: str, step: LadderStep, field: str, with_estimates: bool) -> list[str]:
    a, b = step.before, step.after
    if step.pair.comparable:
        parity = parity_text(step.pair)
    elif a.record.ok and b.record.ok:
        parity = parity_text(step.pair) + " (not compared)"
    else:
        parity = "n/a (a side did not finish)"
    change = step.memory_change_bytes
    row = [label, f"{a.record.recipe} -> {b.record.recipe}",
           f"{_side_memory(a, field)} -> {_side_memory(b, field)}",
           "-" if change is None else f"{change / GiB:+.2f}", format_change(step.memory_change),
           format_change(step.speed_change), parity]
    if with_estimates:
        row.append(estimate_text(step))
    row.append(f"{link(a.ref)}, {link(b.ref)}")
    return row


def ladder_plot(group: Group, ladder: Ladder, labels: dict[str, str], stem: str) -> LadderPlot:
    speed = " (host-GPU speed)" if group.mode == "emulated" else (" (CPU smoke)" if group.mode == "cpu" else "")
    rungs = [r for r in LADDER if any(e.record.recipe == r for c in ladder.cells for e in c.rungs)]

    def series(c: LadderCell, field: str, scale: float) -> list[tuple[str, float]]:
        return [(e.record.recipe, getattr(e.record, field) / scale) for e in c.rungs
                if e.record.ok and getattr(e.record, field) is not None]

    def speeds(c: LadderCell) -> list[tuple[str, float]]:  # median per-step tokens/s, as the tables show
        return [(e.record.recipe, v) for e in c.rungs if e.record.ok and (v := median_tokens_per_s(e)) is not None]

    return LadderPlot(
        path=f"{stem}-{group_slug(group)}-ladder.png",
        title=f"Where the difference comes from on {group_title(group)}",
        memory_label=f"{MEMORY_LABEL[ladder.memory_field].split(' (')[0]} (GiB)",
        speed_label="tokens/s" + speed,
        rungs=rungs,
        memory={labels[c.pair_key]: series(c, ladder.memory_field, GiB) for c in ladder.cells},
        speed={labels[c.pair_key]: speeds(c) for c in ladder.cells},
    )


def ladder_blocks(group: Group, stem: str) -> tuple[list[Block], Optional[LadderPlot]]:
    """The section, when at least two ladder recipes share a cell of the group; ([], None) otherwise."""
    ladder = group_ladder(group)
    if ladder is None:
        return [], None
    labels = cell_labels(group, ladder)
    field = ladder.memory_field
    speed = " Speeds are host-GPU speed." if group.mode == "emulated" else ""
    intro = (f"The ladder {' -> '.join(LADDER)} at each cell where at least two of them were measured (only the "
             f"recipes measured there): each step's change in {MEMORY_LABEL[field]} and in tokens/s, as a "
             f"fraction of the step's first recipe. Figures only for steps whose two cells both ran and are "
             f"parity-matched with each other.{speed}")
    with_estimates = ladder.has_estimates
    memory = MEMORY_LABEL[field].split(" (")[0]
    header = ["cell", "step", f"{memory} GiB", "change GiB", "change %", "tokens/s change %", "parity"] \
        + (["estimated change by component"] if with_estimates else []) + ["cells"]
    rows = [step_row(labels[c.pair_key], s, field, with_estimates) for c in ladder.cells for s in c.steps]
    estimator = ("Beside each step: the estimator's predicted change per component (after minus before, its "
                 "largest changes)." if with_estimates else
                 "The estimator could not model these cells (see `bench estimate`): the ladder is measured only.")
    plot = ladder_plot(group, ladder, labels, stem)
    blocks: list[Block] = [Heading(3, f"Where the difference comes from on {group_title(group)}"),
                           Para(intro + " " + estimator),
                           Table(header, rows, {2, 3, 4, 5}), Image(plot.title, plot.path)]
    return blocks, plot
