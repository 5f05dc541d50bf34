"""The VRAM estimator's output: console tables of `bench estimate`, and reports/estimator.md
(its predictions beside every measured cell, per recipe, markdown). Sizes are bytes, printed as GiB."""

from __future__ import annotations

from typing import Any, Optional

from rich.table import Table

from bench.analysis.calibration import Calibration, calibrated
from bench.analysis.estimate import (
    ASSUMPTIONS,
    COMPONENTS,
    TERM_COMPONENT,
    Estimate,
    ValidationRow,
    Verdict,
    breakdown_by_component,
    unmeasured_recipes,
    validation_summary,
)
from bench.config.recipes import RECIPES
from bench.config.tiers import GpuTier
from bench.render.text import gib
from bench.units import GiB, MiB


def estimate_tables(model: str, tier: GpuTier, settings: dict[str, Any],
                    results: list[tuple[Estimate, Verdict]]) -> list[Table]:
    """The verdict table and the breakdown-at-the-peak table (by component, each with its terms) of
    `bench estimate`. `settings`: the estimate's dtype, lora_r and optimizer."""
    t = Table(title=f"{model} on {tier.name} ({tier.usable_vram_bytes / GiB:.1f} GiB usable), "
                    f"{settings['dtype']}, LoRA r{settings['lora_r']}, {settings['optimizer']} (predicted, not measured)")
    for col in ("recipe", "driver", "seq", "batch", "checkpointing", "predicted GiB", "margin GiB", "verdict",
                "peak phase"):
        t.add_column(col, justify="right" if col in ("seq", "batch", "predicted GiB", "margin GiB") else "left")
    for e, v in results:
        t.add_row(e.recipe, e.driver, str(e.seq_len), str(e.batch_size), e.gradient_checkpointing, gib(e.total_bytes),
                  f"{v.margin_bytes / GiB:+.2f}", "[green]fits[/]" if v.fits else "[bold red]does not fit[/]",
                  e.peak_phase)
    bt = Table(title="breakdown at the peak (GiB): components, then their terms")
    bt.add_column("component / term")
    for e, _ in results:
        bt.add_column(f"{e.recipe} s{e.seq_len} b{e.batch_size}", justify="right")
    components = [breakdown_by_component(e) for e, _ in results]
    for name in COMPONENTS:
        if not any(c[name] for c in components):
            continue
        bt.add_row(f"[bold]{name}[/]", *[f"[bold]{gib(c[name])}[/]" for c in components])
        terms = [k for k, comp in TERM_COMPONENT.items() if comp == name and k != name
                 and any(k in e.breakdown for e, _ in results)]
        for k in terms:
            bt.add_row(f"  {k}", *[gib(e.breakdown[k]) if k in e.breakdown else "" for e, _ in results])
    bt.add_row("[bold]total[/]", *[f"[bold]{gib(e.total_bytes)}[/]" for e, _ in results])
    return [t, bt]


def limits_table(model: str, tier: GpuTier, settings: dict[str, Any], rows: list[dict[str, Any]]) -> Table:
    """`bench estimate --max-fit`: the `predicted_limits` rows."""
    t = Table(title=f"largest predicted fit: {model} on {tier.name} ({tier.usable_vram_bytes / GiB:.1f} GiB usable, "
                    f"{settings['dtype']}, LoRA r{settings['lora_r']}, {settings['optimizer']})")
    for col in ("recipe", "largest", "at", "value"):
        t.add_column(col, justify="right" if col == "value" else "left")
    for r in rows:
        if r["kind"] == "max_seq_len":
            t.add_row(r["recipe"], "seq_len", f"batch {r['batch_size']}",
                      "none" if r["max_seq_len"] is None else f"{r['max_seq_len']:,}")
        else:
            t.add_row(r["recipe"], "batch_size", f"seq {r['seq_len']}",
                      "none" if r["max_batch_size"] is None else f"{r['max_batch_size']:,}")
    return t


def validation_table(rows: list[ValidationRow]) -> Table:
    """`bench estimate --validate`: predicted vs measured per cell."""
    t = Table(title="estimator vs measured peak_device_bytes (GiB)")
    for col in ("recipe", "driver", "model", "tier", "seq", "batch", "predicted", "measured", "error", "bound",
                "within"):
        t.add_column(col, justify="left" if col in ("recipe", "driver", "model", "tier", "within") else "right")
    for r in rows:
        t.add_row(r.recipe, r.driver, r.model, f"{r.tier} ({r.mode})", str(r.seq_len), str(r.batch_size),
                  gib(r.predicted_bytes), gib(r.measured_bytes), f"{r.error_bytes / GiB:+.2f}",
                  gib(r.bound_bytes), "yes" if r.within else "[bold red]NO[/]")
    return t


def _calibration_line(cal: Calibration) -> str:
    """The calibrated values in one sentence (memory in MiB, slack fractions to three decimals)."""
    return (
        "`bench/analysis/estimate/`, the calibrated ones from `bench/data/calibration.json`): memory outside torch "
        + ", ".join(f"{k} {v / MiB:.0f} MiB" for k, v in cal.non_torch_bytes_by_compute_capability.items())
        + f" (+{cal.unsloth_extra_non_torch_bytes / MiB:.0f} MiB with Unsloth's recipes), allocator slack "
        + ", ".join(f"{k} {cal.allocator_slack_base_bytes[k] / MiB:.0f} MiB + {v:.3f}"
                    for k, v in cal.allocator_slack_of_transient.items())
        + f" x the transient memory, Unsloth's backward working set of {cal.unsloth_backward_i_elems} "
        "intermediate-size tensors per token."
    )


def _verdict_lines(verdicts: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## Fit verdicts against measured outcomes",
        "",
        "Every measured cell (ok or out of memory) with the estimator's verdict against the tier's memory.",
        "A disagreement is only a miss where the prediction is further from the tier's memory than the",
        "accuracy target (max(10 %, 0.5 GiB)); closer than that, either verdict is within the stated error.",
        "",
        "| recipe | driver | model | tier (mode) | seq_len | batch | predicted GiB | tier GiB | predicted | measured "
        "| agree |",
        "|---|---|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    for v in verdicts:
        agree = "yes" if v["agree"] else ("no (within the error band)" if v["near_limit"] else "**no**")
        lines.append(
            f"| {v['recipe']} | {v['driver']} | {v['model']} | {v['tier']} ({v['mode']}) | {v['seq_len']} | {v['batch_size']} | "
            f"{gib(v['predicted_bytes'])} | {gib(v['usable_bytes'])} | {'fits' if v['predicted_fits'] else 'OOM'} | "
            f"{v['measured_status']} | {agree} |")
    return lines


def _unmeasured_lines(rows: list[ValidationRow]) -> list[str]:
    """Which recipes no measured cell checks yet, and what their predictions assume beyond the sources."""
    missing = unmeasured_recipes(rows)
    if not missing:
        return []
    return [
        "",
        "## Recipes without measured cells",
        "",
        "No measured cell of " + ", ".join(f"`{m}`" for m in missing) + " in these results: their predictions "
        "(`bench estimate --recipe ...`) are formulas from the libraries' source, not yet checked against a "
        "measurement. Besides the calibrated constants above, they assume:",
        "",
    ] + [f"- {name}: {text}." for name, text in ASSUMPTIONS.items()]


def _recipe_order(recipe: str) -> int:
    order = list(RECIPES)
    return order.index(recipe) if recipe in order else len(order)


def render_validation_markdown(rows: list[ValidationRow], skipped: list[str], sources: list[str],
                               verdicts: Optional[list[dict[str, Any]]] = None,
                               calibration: Optional[Calibration] = None) -> str:
    """reports/estimator.md: predicted vs measured peak device memory for every measured ok cell
    (`bench.analysis.estimate.validate_records` rows), per recipe, with the fit verdicts, the
    calibrated values the predictions used (default: bench/data/calibration.json) and the recipes
    no cell measures yet."""
    lines = [
        "# VRAM estimator vs measurement",
        "",
        "Generated by `bench estimate --validate " + " ".join(sources) + "`; do not edit by hand.",
        "",
        "`predicted` is `bench.analysis.estimate.estimate_recipe` for the cell's exact settings (model config,",
        "recipe and driver, seq_len, batch_size, LoRA rank and targets, optimizer, checkpointing, dtype) and the",
        "host GPU it ran on. `measured` is the cell's `peak_device_bytes`: NVML's reading of the worker",
        "process's device memory (CUDA context included), sampled during the cell. Target: |error| <=",
        "max(10 % of measured, 0.5 GiB) on every cell. Emulated tiers ran on a larger GPU with the",
        "allocator capped at the tier's memory; their memory use is measured, not projected. Records",
        "written before recipes existed read as hf-kbit / unsloth with the loop driver.",
        "",
        "Calibrated constants (all others are formulas from the libraries' source, see",
        _calibration_line(calibration or calibrated()),
        "",
        "## Summary",
        "",
        "| recipe | cells | within bound | max abs error | max abs error % | mean abs error % |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for b, s in validation_summary(rows).items():
        lines.append(f"| {b} | {s['cells']} | {s['within']} | {gib(s['max_abs_error_bytes'])} GiB | "
                     f"{s['max_abs_error_pct']:.1f} % | {s['mean_abs_error_pct']:.1f} % |")
    if not rows:
        lines.append("| - | 0 | 0 | - | - | - |")
    lines += [
        "",
        "## Cells",
        "",
        "| recipe | driver | model | tier (mode) | GPU | seq_len | batch | dtype | checkpointing | predicted GiB | "
        "measured GiB | error GiB | error % | bound GiB | within | peak phase |",
        "|---|---|---|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (_recipe_order(r.recipe), r.driver, r.model, r.tier, r.mode, r.batch_size,
                                         r.seq_len)):
        lines.append(
            f"| {r.recipe} | {r.driver} | {r.model} | {r.tier} ({r.mode}) | {r.gpu_name or '-'} | {r.seq_len} | "
            f"{r.batch_size} | {r.dtype} | {r.gradient_checkpointing} | {gib(r.predicted_bytes)} | "
            f"{gib(r.measured_bytes)} | {r.error_bytes / GiB:+.2f} | {r.error_bytes / r.measured_bytes * 100:+.1f} | "
            f"{gib(r.bound_bytes)} | {'yes' if r.within else '**NO**'} | {r.peak_phase} |")
    lines += _unmeasured_lines(rows)
    if verdicts:
        lines += _verdict_lines(verdicts)
    if skipped:
        lines += ["", "## Records left out", ""] + [f"- {s}" for s in skipped]
    return "\n".join(lines) + "\n"
