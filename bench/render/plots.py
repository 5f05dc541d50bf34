"""PNG plots for the report (matplotlib, Agg canvas, no pyplot state).

Specs are plain data built by bench.render.report from the records; `write_plot` draws one. Output is
reproducible: matplotlib's default style (not the user's rc), fixed size and dpi, and no
"Software" metadata in the PNG, so the same data and matplotlib version give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

FIGSIZE = (10.0, 4.2)
DPI = 100
#: Line style and marker per recipe (recipes not listed: solid line, circles).
LINESTYLES = {"hf-trl": "-", "hf-kbit": ":", "hf-liger": "-.", "unsloth": "--", "hf-lora16": (0, (5, 1, 1, 1)),
              "unsloth-lora16": (0, (3, 1, 1, 1, 1, 1))}
MARKERS = {"hf-trl": "o", "hf-kbit": "v", "hf-liger": "D", "unsloth": "s", "hf-lora16": "^", "unsloth-lora16": "P"}


@dataclass
class VramPlot:
    """Peak memory vs sequence length, one panel per recipe, one line per batch size."""

    path: str  # file name, relative to the report's folder
    title: str
    ylabel: str
    recipes: list[str]  # one panel each (the reference first)
    series: dict[str, dict[int, list[tuple[int, float]]]]  # recipe -> batch -> [(seq_len, GiB)]
    ooms: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # recipe -> [(seq_len, batch)]
    limit_gib: Optional[float] = None  # the tier's usable memory
    limit_label: str = ""
    seq_lens: list[int] = field(default_factory=list)


@dataclass
class ThroughputPlot:
    """Tokens/s vs sequence length: colour per batch size, line style per recipe."""

    path: str
    title: str
    ylabel: str
    recipes: list[str]  # the reference first
    series: dict[str, dict[int, list[tuple[int, float]]]]  # recipe -> batch -> [(seq_len, tokens/s)]
    seq_lens: list[int] = field(default_factory=list)


@dataclass
class LadderPlot:
    """The ladder (bench.analysis.ladder): peak memory and tokens/s per rung, one line per cell."""

    path: str
    title: str
    memory_label: str
    speed_label: str
    rungs: list[str]  # the ladder recipes on the x axis, in order
    memory: dict[str, list[tuple[str, float]]]  # cell label -> [(recipe, GiB)] (ok rungs only)
    speed: dict[str, list[tuple[str, float]]]  # cell label -> [(recipe, tokens/s)]


def _batch_colours(batches: list[int]) -> dict[int, str]:
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    return {b: palette[i % len(palette)] for i, b in enumerate(sorted(batches))}


def _seq_axis(ax, seq_lens: list[int]) -> None:
    ax.set_xlabel("sequence length (tokens)")
    if len(seq_lens) > 1 and min(seq_lens) > 0:
        ax.set_xscale("log", base=2)
    if seq_lens:
        ax.set_xticks(seq_lens)
        ax.set_xticklabels([str(s) for s in seq_lens])
        ax.minorticks_off()
        lo, hi = min(seq_lens), max(seq_lens)
        if lo == hi:
            ax.set_xlim(lo * 0.5, hi * 1.5)
        else:
            ax.set_xlim(lo / 1.3, hi * 1.3)
    ax.grid(True, alpha=0.3)


def _draw_vram(fig, spec: VramPlot) -> None:
    n = max(1, len(spec.recipes))
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    batches = sorted({b for per in spec.series.values() for b in per} | {b for v in spec.ooms.values() for _, b in v})
    colours = _batch_colours(batches)
    top = max([g for per in spec.series.values() for pts in per.values() for _, g in pts] + [spec.limit_gib or 0, 0.1])
    for ax, recipe in zip(axes, spec.recipes):
        for batch in batches:
            pts = spec.series.get(recipe, {}).get(batch, [])
            if pts:
                ax.plot([s for s, _ in pts], [g for _, g in pts], marker="o", color=colours[batch],
                        label=f"batch {batch}")
        ooms = spec.ooms.get(recipe, [])
        for seq, batch in ooms:
            y = spec.limit_gib if spec.limit_gib else top
            ax.plot([seq], [y], marker="x", markersize=11, markeredgewidth=2.5, color=colours[batch], linestyle="none")
            ax.annotate(f"OOM b{batch}", (seq, y), textcoords="offset points", xytext=(4, -14 - 10 * (batch % 3)),
                        fontsize=8, color=colours[batch])
        if spec.limit_gib:
            ax.axhline(spec.limit_gib, color="black", linestyle=":", linewidth=1.2, label=spec.limit_label)
        ax.set_title(recipe)
        _seq_axis(ax, spec.seq_lens)
        ax.set_ylim(0, top * 1.12)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel(spec.ylabel)
    fig.suptitle(spec.title, fontsize=11)


def _draw_throughput(fig, spec: ThroughputPlot) -> None:
    ax = fig.subplots(1, 1)
    batches = sorted({b for per in spec.series.values() for b in per})
    colours = _batch_colours(batches)
    for recipe in spec.recipes:
        for batch in batches:
            pts = spec.series.get(recipe, {}).get(batch, [])
            if pts:
                ax.plot([s for s, _ in pts], [t for _, t in pts], marker=MARKERS.get(recipe, "o"),
                        linestyle=LINESTYLES.get(recipe, "-"), color=colours[batch], label=f"{recipe}, batch {batch}")
    _seq_axis(ax, spec.seq_lens)
    ax.set_ylabel(spec.ylabel)
    ax.set_ylim(bottom=0)
    if batches:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no cell finished", transform=ax.transAxes, ha="center")
    ax.set_title(spec.title, fontsize=11)


def _draw_ladder(fig, spec: LadderPlot) -> None:
    axes = fig.subplots(1, 2, squeeze=False)[0]
    labels = sorted(set(spec.memory) | set(spec.speed))
    colours = {label: _batch_colours(list(range(len(labels))))[i] for i, label in enumerate(labels)}
    x_of = {r: i for i, r in enumerate(spec.rungs)}
    for ax, data, ylabel in ((axes[0], spec.memory, spec.memory_label), (axes[1], spec.speed, spec.speed_label)):
        for label in labels:
            pts = [(x_of[r], v) for r, v in data.get(label, []) if r in x_of]
            if pts:
                ax.plot([x for x, _ in pts], [v for _, v in pts], marker="o", color=colours[label], label=label)
        ax.set_xticks(range(len(spec.rungs)))
        ax.set_xticklabels(spec.rungs)
        ax.set_xlim(-0.4, max(len(spec.rungs) - 0.6, 0.6))
        ax.set_ylim(bottom=0)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if any(data.values()):
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(spec.title, fontsize=11)


def write_plot(spec, path: Path) -> Path:
    """Draw `spec` (VramPlot, ThroughputPlot or LadderPlot) into the PNG at `path`."""
    import matplotlib
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"), matplotlib.rc_context({"svg.hashsalt": "qlora-bench"}):
        fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        if isinstance(spec, VramPlot):
            _draw_vram(fig, spec)
        elif isinstance(spec, LadderPlot):
            _draw_ladder(fig, spec)
        else:
            _draw_throughput(fig, spec)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path
