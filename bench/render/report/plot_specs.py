"""The plots of one comparison table, as bench.render.plots specs (the data is a frame selection)."""

from __future__ import annotations

from bench.analysis.frame import records_frame
from bench.analysis.results import TableSpec
from bench.config.tiers import TIERS
from bench.render.plots import ThroughputPlot, VramPlot
from bench.render.report.labels import group_slug, group_title
from bench.render.text import gib, slug
from bench.units import GiB


def _series(cells, value) -> dict[str, dict[int, list[tuple[int, float]]]]:
    """recipe -> batch size -> sorted [(seq_len, value)] over the rows of `cells`."""
    out: dict = {}
    for (recipe, batch), rows in cells.groupby(["recipe", "batch_size"], sort=False):
        points = zip(rows["seq_len"].tolist(), value(rows).tolist())
        out.setdefault(recipe, {})[int(batch)] = sorted(points)
    return out


def plot_specs(spec: TableSpec, stem: str) -> list:
    """VRAM (GPU groups) and throughput plots; file names <report stem>-<group>-<model>[-n]-<kind>.png."""
    g = spec.group
    suffix = f"-{spec.index + 1}" if spec.total > 1 else ""
    base = f"{stem}-{group_slug(g)}-{slug(spec.model)}{suffix}"
    title = group_title(g)
    speed_note = " (host-GPU speed)" if g.mode == "emulated" else (" (CPU smoke)" if g.mode == "cpu" else "")
    cells = records_frame(spec.entries)  # entries: their repeats give median_tokens_per_s
    seq_lens = sorted(set(cells["seq_len"].tolist()))
    out: list = []
    if g.mode != "cpu":
        tier = TIERS.get(g.tier)
        use_device = bool(cells.loc[cells["ok"], "peak_device_bytes"].fillna(0).astype(bool).any())
        field = "peak_device_bytes" if use_device else "peak_allocated_bytes"
        measured = cells[cells["ok"] & cells[field].notna()]
        ooms = cells[cells["status"] == "oom"]
        out.append(VramPlot(
            path=f"{base}-vram.png",
            title=f"{spec.model} on {title}: peak memory",
            ylabel=("peak device memory, NVML (GiB)" if use_device else "peak allocated memory, torch (GiB)"),
            recipes=spec.recipes,
            series=_series(measured, lambda rows: rows[field] / GiB),
            ooms={recipe: sorted(zip(rows["seq_len"].tolist(), rows["batch_size"].tolist()))
                  for recipe, rows in ooms.groupby("recipe", sort=False)},
            limit_gib=tier.memory_cap_bytes / GiB if tier else None,
            limit_label=f"{g.tier}: torch's total on the card ({gib(tier.memory_cap_bytes)} GiB)" if tier else "",
            seq_lens=seq_lens,
        ))
    fast = cells[cells["ok"] & (cells["median_tokens_per_s"].fillna(0) != 0)]
    out.append(ThroughputPlot(
        path=f"{base}-throughput.png",
        title=f"{spec.model} on {title}: training throughput{speed_note}",
        ylabel=("non-padding tokens/s" if any(r.data for r in spec.records) else "tokens/s") + " (median per timed step)" + speed_note,
        recipes=spec.recipes,
        series=_series(fast, lambda rows: rows["median_tokens_per_s"]),  # the tables' figure (bench.analysis.speed)
        seq_lens=seq_lens,
    ))
    return out
