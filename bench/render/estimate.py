"""The VRAM estimator's output: console tables of `bench estimate`, and reports/estimator.md
(calibrated on one set of measured cells, validated on a held-out set, per recipe family, markdown).
Sizes are bytes, printed as GiB."""

from __future__ import annotations

from typing import Any, Optional

from rich.table import Table

from bench.analysis.calibration import Calibration, CalibrationError, calibrated
from bench.analysis.estimate import (
    ASSUMPTIONS,
    COMPONENTS,
    TERM_COMPONENT,
    Estimate,
    OutOfSample,
    ValidationRow,
    Verdict,
    breakdown_by_component,
    coverage,
    coverage_gaps,
    error_stats,
    unmeasured_recipes,
    validation_summary,
)
from bench.analysis.estimate.heldout import MIN_ARCHITECTURES, UNSLOTH_RECIPE, UNSLOTH_SEQ_SPAN
from bench.config.recipes import RECIPES
from bench.config.tiers import GpuTier
from bench.render.text import gib
from bench.units import GiB, MiB


def estimate_tables(model: str, tier: GpuTier, settings: dict[str, Any],
                    results: list[tuple[Estimate, Verdict]]) -> list[Table]:
    """The verdict table and the breakdown-at-the-peak table (by component, each with its terms) of
    `bench estimate`. `settings`: the estimate's dtype, lora_r and optimizer."""
    t = Table(title=f"{model} on {tier.name} ({tier.memory_cap_bytes / GiB:.2f} GiB: torch's total on the card), "
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
    t = Table(title=f"largest predicted fit: {model} on {tier.name} ({tier.memory_cap_bytes / GiB:.2f} GiB: torch's total on the card, "
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


def validation_table(rows: list[ValidationRow], title: str) -> Table:
    """`bench estimate --validate`: predicted vs measured per cell; low errors (prediction < measured)
    marked apart from high ones."""
    t = Table(title=title)
    for col in ("recipe", "driver", "model", "tier", "seq", "batch", "predicted", "measured", "error", "side",
                "bound", "within"):
        t.add_column(col, justify="left" if col in ("recipe", "driver", "model", "tier", "side", "within") else "right")
    for r in rows:
        t.add_row(r.recipe, r.driver, r.model, f"{r.tier} ({r.mode})", str(r.seq_len), str(r.batch_size),
                  gib(r.predicted_bytes), gib(r.measured_bytes), f"{r.error_bytes / GiB:+.2f}",
                  _side(r, "[yellow]LOW[/]"), gib(r.bound_bytes), "yes" if r.within else "[bold red]NO[/]")
    return t


def _side(r: ValidationRow, low_mark: str) -> str:
    return "exact" if r.error_bytes == 0 else (low_mark if r.errs_low else "high")


def _worst_text(side: dict[str, Any]) -> str:
    if side["worst_cell"] is None:
        return "-"
    return f"{side['worst_error_bytes'] / GiB:+.2f} GiB ({side['worst_error_pct']:+.1f} %)"


def low_error_lines(result: OutOfSample) -> list[str]:
    """One sentence per set: how many predictions err low (the unsafe side for "fits"), how many of
    them beyond the bound, and the worst."""
    lines = []
    for name, rows in (("in-sample", result.in_sample), ("held-out", result.held_out)):
        low = error_stats(rows)["low"] if rows else None
        if not rows:
            lines.append(f"{name}: no cell")
        elif not low["cells"]:
            lines.append(f"{name}: no prediction below the measured peak ({len(rows)} cells)")
        else:
            lines.append(f"{name}: {low['cells']} of {len(rows)} predictions below the measured peak "
                         f"({low['beyond_bound']} beyond the bound); worst {_worst_text(low)} at {low['worst_cell']}")
    return lines


def split_lines(result: OutOfSample) -> list[str]:
    """How many cells calibrate, are held out and are left out (per reason)."""
    counts = result.split.left_out_counts()
    why = {"oom": "out of memory", "cap": "pinned by the emulated cap", "in calibration set":
           "held-out configurations also in the calibration set"}
    left = ", ".join(f"{n} {why.get(k, k)}" for k, n in counts.items()) or "none"
    return [f"{len(result.in_sample)} cells calibrate, {len(result.held_out)} are held out; "
            f"{sum(counts.values())} left out ({left})"]


def validation_console_lines(result: OutOfSample) -> list[str]:
    """What `bench estimate --validate` prints below its tables (rich markup)."""
    lines = [f"split: {s}" for s in split_lines(result)]
    for name, rows in (("in-sample", result.in_sample), ("held-out", result.held_out)):
        for group, s in validation_summary(rows).items():
            lines.append(f"{name} {group}: {s['within']}/{s['cells']} within max(10 %, 0.5 GiB); |error| median "
                         f"{s['median_abs_error_pct']:.1f} %, max {s['max_abs_error_pct']:.1f} %; "
                         f"low {s['low']['cells']} (worst {_worst_text(s['low'])}), "
                         f"high {s['high']['cells']} (worst {_worst_text(s['high'])})")
    lines += [f"[yellow]errs low (unsafe side):[/] {s}" for s in low_error_lines(result)]
    lines += [f"[yellow]{g}[/]" for g in coverage_gaps(result)]
    missing = unmeasured_recipes(result.in_sample + result.held_out)
    if missing:
        lines.append(f"[yellow]no measured cell yet:[/] {', '.join(missing)} (predicted from the sources only)")
    lines += [f"[yellow]left out:[/] {x.cell_id} ({x.set}): {x.reason}" for x in result.split.left_out]
    lines += [f"[yellow]not modelled:[/] {s}" for s in result.skipped]
    return lines


def _calibration_line(cal: Calibration) -> str:
    """The calibrated values in one sentence (memory in MiB, slack fractions to three decimals)."""
    return (
        "memory outside torch "
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
        "Every measured cell (ok or out of memory, cap-pinned ones included: a verdict is about them) with the",
        "estimator's verdict against the tier's memory, under the calibration fitted above.",
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


def _summary_lines(result: OutOfSample) -> list[str]:
    lines = [
        "| set | recipe | cells | within bound | median abs error % | max abs error % | low: cells (beyond bound) "
        "| worst low | high: cells (beyond bound) | worst high |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for name, rows in (("in-sample", result.in_sample), ("held-out", result.held_out)):
        for group, s in validation_summary(rows).items():
            label = f"**{group}**" if group.endswith("(all)") else group
            lines.append(f"| {name} | {label} | {s['cells']} | {s['within']} | {s['median_abs_error_pct']:.1f} % | "
                         f"{s['max_abs_error_pct']:.1f} % | {s['low']['cells']} ({s['low']['beyond_bound']}) | "
                         f"{_worst_text(s['low'])} | {s['high']['cells']} ({s['high']['beyond_bound']}) | "
                         f"{_worst_text(s['high'])} |")
        if not rows:
            lines.append(f"| {name} | - | 0 | 0 | - | - | - | - | - | - |")
    return lines


def _coverage_lines(result: OutOfSample) -> list[str]:
    lines = []
    for name, rows in (("in-sample", result.in_sample), ("held-out", result.held_out)):
        archs = "; ".join(f"{a} ({', '.join(m)})" for a, m in coverage(rows)["architectures"].items())
        lines.append(f"- {name} architectures (models): {archs or 'none'}")
    lines += ["", "| set | recipe | cells | architectures | seq_len | batch_size |", "|---|---|---:|---|---|---|"]
    for name, rows in (("in-sample", result.in_sample), ("held-out", result.held_out)):
        for recipe, c in sorted(coverage(rows)["recipes"].items(), key=lambda kv: _recipe_order(kv[0])):
            lines.append(f"| {name} | {recipe} | {c['cells']} | {', '.join(c['architectures'])} | "
                         f"{c['seq_len'][0]}..{c['seq_len'][1]} | {c['batch_size'][0]}..{c['batch_size'][1]} |")
    gaps = coverage_gaps(result)
    lines += ["", f"Requirement (issue 11): at least {MIN_ARCHITECTURES} architectures, and `{UNSLOTH_RECIPE}` "
              f"measured from {UNSLOTH_SEQ_SPAN[0]} to {UNSLOTH_SEQ_SPAN[1]:,} tokens per sequence on each (or to its "
              "context, max_position_embeddings, where that is shorter); a GPU run fills what is not covered.", ""]
    return lines + ([f"- {g}" for g in gaps] if gaps else ["- covered, in sample and out of sample"])


def _cell_lines(rows: list[ValidationRow]) -> list[str]:
    lines = [
        "| recipe | driver | model | tier (mode) | GPU | seq_len | batch | dtype | checkpointing | predicted GiB | "
        "measured GiB | error GiB | error % | side | bound GiB | within | peak phase |",
        "|---|---|---|---|---|---:|---:|---|---|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (_recipe_order(r.recipe), r.driver, r.model, r.tier, r.mode, r.batch_size,
                                         r.seq_len)):
        lines.append(
            f"| {r.recipe} | {r.driver} | {r.model} | {r.tier} ({r.mode}) | {r.gpu_name or '-'} | {r.seq_len} | "
            f"{r.batch_size} | {r.dtype} | {r.gradient_checkpointing} | {gib(r.predicted_bytes)} | "
            f"{gib(r.measured_bytes)} | {r.error_bytes / GiB:+.2f} | {r.error_pct:+.1f} | {_side(r, '**low**')} | "
            f"{gib(r.bound_bytes)} | {'yes' if r.within else '**NO**'} | {r.peak_phase} |")
    return lines if rows else lines + ["| - | | | | | | | | | | | | | | | | |"]


def _split_text(result: OutOfSample) -> list[str]:
    rules = " or ".join(f"`{rule}`" for rule in result.split.rules)
    return [
        "The calibration set is the cells of the files after `--validate`"
        + (f" that match none of {rules}" if rules else "") + "; the held-out set is the cells of the "
        "`--validate-on` files" + (f" and those of the calibration files matching {rules}" if rules else "")
        + ". A cell's set depends only on its file and its own fields (deterministic). The calibrated constants "
        "are fitted on the calibration set alone, so the held-out cells never enter the fit; in-sample errors show "
        "the fit, held-out errors what to expect on cells it never saw. Out-of-memory cells and cells whose "
        "reserved memory reached the emulated tier's cap are left out of both sets (their peak says the cap, not "
        "the need), and so is a held-out cell whose memory configuration the calibration set also measured.",
        "",
        "Cells: " + split_lines(result)[0] + ".",
    ]


def render_validation_markdown(result: OutOfSample, command: str,
                               verdicts: Optional[list[dict[str, Any]]] = None) -> str:
    """reports/estimator.md: the estimator calibrated on one set of measured cells and validated on a
    held-out set (`bench.analysis.estimate.out_of_sample`): the split, the errors per recipe family with
    low errors apart, the coverage and what it lacks, every cell, the fit verdicts and what was left
    out. `command`: the `bench estimate --validate ...` line that generated it."""
    cal = result.calibration
    try:
        same = cal == calibrated()
    except CalibrationError:
        same = False
    lines = [
        "# VRAM estimator: calibrated on one set, validated on another",
        "",
        f"Generated by `{command}`; do not edit by hand.",
        "",
        "`predicted` is `bench.analysis.estimate.estimate_recipe` for the cell's exact settings (model config,",
        "recipe and driver, seq_len, batch_size, LoRA rank and targets, optimizer, checkpointing, dtype) and the",
        "host GPU it ran on. `measured` is the cell's `peak_device_bytes`: NVML's reading of the worker",
        "process's device memory (CUDA context included), sampled during the cell. Target: |error| <=",
        "max(10 % of measured, 0.5 GiB) on every cell. A **low** error (predicted < measured) is the unsafe side:",
        "a \"fits\" verdict may then be wrong. Emulated tiers ran on a larger GPU with the allocator capped at the",
        "tier's memory; their memory use is measured, not projected. Records written before recipes existed read",
        "as hf-kbit / unsloth with the loop driver.",
        "",
        "## How the cells are split",
        "",
        *_split_text(result),
        "",
        "Calibrated constants, fitted on the calibration set by the rule of `bench/data/calibration.json` (all",
        "others are formulas from the libraries' source, `bench/analysis/estimate/`): " + _calibration_line(cal)
        + (" The same values as `bench/data/calibration.json`." if same else
           " **Not** the values of `bench/data/calibration.json` (`bench estimate --calibrate FILES --write` "
           "writes those)."),
        "",
        "## Errors per recipe family",
        "",
        "`low` counts predictions below the measured peak, `high` those above; `worst` is the largest of each side.",
        "",
        *_summary_lines(result),
        "",
        "## Predictions that err low",
        "",
        *[f"- {line}" for line in low_error_lines(result)],
        "",
        "## Coverage",
        "",
        *_coverage_lines(result),
        "",
        "## Held-out cells",
        "",
        *_cell_lines(result.held_out),
        "",
        "## In-sample cells (the calibration set)",
        "",
        *_cell_lines(result.in_sample),
    ]
    lines += _unmeasured_lines(result.in_sample + result.held_out)
    if verdicts:
        lines += _verdict_lines(verdicts)
    if result.split.left_out:
        lines += ["", "## Cells left out", ""] + [f"- {x.cell_id} ({x.set} set): {x.reason}"
                                                   for x in result.split.left_out]
    if result.skipped:
        lines += ["", "## Cells the estimator cannot model", ""] + [f"- {s}" for s in result.skipped]
    return "\n".join(lines) + "\n"
