"""The report's tables: the recipes of a configuration side by side, the cells appendix, the fast-path summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from bench.analysis.claims import ran_unsloth_kernels
from bench.analysis.results import Results, TableSpec
from bench.analysis.speed import INCONCLUSIVE, pair_memory_saving, pair_speedup, side_speed, speedup_verdict
from bench.analysis.stats import NOISY_CV
from bench.render.blocks import Table
from bench.render.report.labels import file_link, group_title
from bench.render.report.phrases import parity_text, status_text
from bench.render.text import first_line, fmt, fmt_interval, gib, link, md_escape, mfu_hfu, pct_interval
from bench.schema.pairs import REFERENCE_FALLBACK

DRIVER_TEXT = {"trainer": "trainer (TRL's SFTTrainer)", "loop": "loop (the suite's plain training loop)"}


def settings_text(spec: TableSpec) -> str:
    """The training settings every row of the table shares, in words."""
    r = spec.records[0]
    ckpt = ", ".join(f"{name} {next(x.gradient_checkpointing for x in spec.records if x.recipe == name)}"
                     for name in spec.recipes)
    return (f"LoRA r {r.lora_r}, alpha {r.lora_alpha}, dropout {r.lora_dropout:g} on {', '.join(r.target_modules)}; "
            f"optimizer {r.optimizer}, lr {r.learning_rate:g}; dtype {r.dtype}; attention {r.attn_implementation}; "
            f"grad-accum {r.grad_accum}; {r.warmup_steps} untimed + {r.steps} timed steps; seed {r.seed}; "
            f"driver {DRIVER_TEXT.get(r.driver, r.driver)}; gradient checkpointing: {ckpt}")


def data_text(spec: TableSpec) -> str:
    """Which data the table's cells trained on: synthetic batches, or the dataset's name, form, packing and lengths."""
    d = next((x.data for x in spec.records if x.data), None)
    if not d:
        return "Data: synthetic token batches (random ids, every row full length: the memory upper bound)."
    packing = "packed into full rows" if d.get("packing") else "not packed (padded per batch)"
    return (f"Data: {md_escape(d.get('name', '?'))} ({d.get('form', '?')} form, {d.get('examples', 0):,} examples, "
            f"{packing}; token length p50 {d.get('token_length_p50', '-')}, p90 {d.get('token_length_p90', '-')} "
            f"tokens; tokenizer {md_escape(d.get('tokenizer', '?'))}). Tokens/s counts non-padding tokens; "
            f"the padded figure counts every position trained on.")


def reference_text(spec: TableSpec) -> str:
    """Which recipe the table compares with, and when the requested one was not measured."""
    requested = spec.requested_reference
    if spec.reference is None:
        return (f"No reference recipe was measured in this table (requested {requested}; none of "
                f"{', '.join(REFERENCE_FALLBACK)} either): no speed-up or memory saving.")
    text = f"Reference: **{spec.reference}**"
    if spec.reference_fell_back:
        text += f" (the requested reference, {requested}, was not measured in this table)"
    if not spec.candidates:
        return text + "; no other recipe was measured beside it."
    return (text + f". Speed-up = candidate tokens/s over {spec.reference}'s; memory saved = 1 - candidate peak / "
            f"{spec.reference} peak; both only for parity-matched pairs.")


def speed_text(side) -> str:
    """A cell's tokens/s: median per-step rate and its 95 % interval, 'noisy' when the CV is above NOISY_CV."""
    speed = side_speed(side)
    return fmt_interval(speed.tokens_per_s, ",.0f") + (" noisy" if speed.noisy else "")


def speedup_text(p) -> str:
    """'1.42x [1.35–1.49]'; ' inconclusive' added when the interval contains 1.0 or there is none."""
    ratio = pair_speedup(p)
    text = fmt_interval(ratio, ".2f", "x")
    return text + (" inconclusive" if ratio is not None and ratio.estimate is not None
                   and speedup_verdict(ratio) == INCONCLUSIVE else "")


def speed_legend(spec: TableSpec) -> str:
    """What the table's tokens/s, speed-ups and savings are, their intervals and the noisy threshold."""
    repeats = sorted({side_speed(e).repeats for e in spec.entries if e.record.ok})
    counts = " or ".join(map(str, repeats)) if repeats else "0"
    text = (f"Tokens/s: the median per-step tokens/s over the timed steps of every repeat of the cell (here {counts} "
            f"repeat{'' if repeats == [1] else 's'} per cell) [its 95 % bootstrap interval]; **noisy**: the "
            f"per-step rates' coefficient of variation is above {NOISY_CV * 100:g} %, more than an idle GPU's "
            f"step-to-step jitter.")
    if spec.reference is not None and spec.candidates:
        text += (" Speed-up: the candidate's median over the reference's [95 % interval]; **inconclusive** when "
                 "the interval contains 1.0 (or a side has one timed step: no interval). Memory saved: an "
                 "interval only where repeats give more than one peak a side, else a point estimate (one peak "
                 "per side, no interval).")
    return text


def _metrics(spec: TableSpec) -> list[tuple]:
    """(column label, format of an entry) of each recipe's column group."""
    cpu = spec.group.mode == "cpu"
    data = any(r.data for r in spec.records)

    def field(name: str, format_value):
        return lambda e: format_value(getattr(e.record, name))

    metrics = ([("peak RSS GiB", field("peak_rss_bytes", gib))] if cpu else
               [("peak alloc GiB", field("peak_allocated_bytes", gib)),
                ("peak device GiB", field("peak_device_bytes", gib))])
    metrics.append(("tokens/s (non-padding)" if data else "tokens/s", speed_text))
    if data:
        metrics.append(("tokens/s padded", field("tokens_per_s_padded", lambda x: fmt(x, ",.0f"))))
    if any(r.joules_per_1k_tokens is not None for r in spec.records):
        metrics.append(("J / 1k tokens", field("joules_per_1k_tokens", energy_text)))
    metrics.append(("first step s", field("first_step_s", lambda x: fmt(x, ".1f"))))
    if not cpu:
        metrics.append(("MFU / HFU", lambda e: mfu_hfu(e.record.mfu, e.record.hfu)))
    return metrics


def energy_text(joules_per_1k_tokens) -> str:
    """Joules per 1,000 trained tokens, '-' where not measured."""
    return fmt(joules_per_1k_tokens, ".1f")


def _pair_columns(p) -> list[str]:
    """A candidate's speed-up, memory saved (device / alloc) and parity against the reference."""
    if p is None or p.reference is None:
        return ["-", "-", "-"]
    if p.comparable:
        dev, alloc = pair_memory_saving(p, "peak_device_bytes"), pair_memory_saving(p, "peak_allocated_bytes")
        return [speedup_text(p), f"{pct_interval(dev)} / {pct_interval(alloc)}", parity_text(p)]
    if p.both_ok:
        return ["- (not matched)", "- (not matched)", parity_text(p)]
    return ["-", "-", parity_text(p)]


def comparison_table(spec: TableSpec) -> Table:
    """Rows per (seq_len, batch): one column group per recipe (the reference first), each candidate's
    speed-up, memory saving and parity against the reference from matched pairs only."""
    metrics = _metrics(spec)
    header = ["seq_len", "batch", "status"]
    for name in spec.recipes:
        header += [f"{name} {label}" for label, _ in metrics]
        if spec.reference is not None and name != spec.reference:
            header += [f"{name} speed-up", f"{name} memory saved (device / alloc)", f"{name} parity"]
    header.append("cells")
    rows = []
    for row in spec.rows:
        r = row.record
        states = {name: status_text(row.cells[name].record) if name in row.cells else "not measured"
                  for name in spec.recipes}
        status = "ok" if all(s == "ok" for s in states.values()) else \
            "; ".join(f"{name}: {md_escape(s)}" for name, s in states.items())
        line = [str(r.seq_len), str(r.batch_size), status]
        for name in spec.recipes:
            e = row.cells.get(name)
            line += [format_entry(e) if e and e.record.ok else "-" for _, format_entry in metrics]
            if spec.reference is not None and name != spec.reference:
                line += _pair_columns(row.pairs.get(name))
        line.append(", ".join(link(row.cells[name].ref) for name in spec.recipes if name in row.cells))
        rows.append(line)
    right = {i for i, h in enumerate(header) if not (h in ("status", "cells") or h.endswith(" parity"))}
    return Table(header, rows, right)


def lora_cast_notes(spec: TableSpec) -> list[str]:
    """Per recipe on an emulated fp16 tier whose records say TRL cast the LoRA weights to bf16: what a
    real card of the tier may not support (backend_info lora_dtype, or the runner's warning)."""
    g = spec.group
    if g.mode != "emulated":
        return []
    out = []
    for name in spec.recipes:
        cast = [e for e in spec.entries if e.record.recipe == name and e.record.dtype == "float16"
                and ("bfloat16" in str(e.record.backend_info.get("lora_dtype", ""))
                     or any("bf16" in w for w in e.record.warnings))]
        if cast:
            out.append(f"{name}: TRL cast the LoRA weights to bf16 on this fp16 tier (recorded in "
                       f"{', '.join(link(e.ref) for e in cast)}): a real {g.tier} has no bf16 tensor cores and may not "
                       f"support what this recipe does there; the emulation ran it on the host GPU")
    return out


def appendix_table(results: Results, results_dir: Path) -> Table:
    """Every cell: its reference (the anchor figures link to), cell id, results file, outcome, figures."""
    energy = any(e.record.joules_per_1k_tokens is not None for e in results.entries)
    header = ["ref", "cell id", "results file", "status", "peak alloc GiB", "peak device GiB", "peak RSS GiB",
              "tokens/s"] + (["J / 1k tokens"] if energy else []) + ["first step s", "parity", "finished (UTC)",
                                                                     "message"]
    rows = []
    for e in results.entries:
        r = e.record
        parity = "-" if r.matched is None else ("matched" if r.matched else "**NOT MATCHED**")
        msg = "; ".join(([first_line(r.error, 200)] if r.error else []) + list(r.warnings))
        rows.append([f'<a id="{e.ref}"></a>{e.ref}', f"`{r.cell_id}`", file_link(e.path, results_dir),
                     r.status, gib(r.peak_allocated_bytes), gib(r.peak_device_bytes), gib(r.peak_rss_bytes),
                     speed_text(e) if r.ok else "-"] + ([energy_text(r.joules_per_1k_tokens)] if energy else [])
                    + [fmt(r.first_step_s, ".2f"), parity, r.finished_at or "-", md_escape(msg) if msg else ""])
    return Table(header, rows, set(range(4, 10 if energy else 9)))


def fast_path_table(results: Results) -> Optional[Table]:
    """Which fast paths ran on Unsloth's kernels, per record with a fast-path summary; None without one."""
    rows = []
    for g in results.groups:
        for e in g.entries:
            r = e.record
            counts = ran_unsloth_kernels(r.fast_paths)
            if counts is None:
                continue
            paths = ", ".join(f"{k}: {v}" for k, v in sorted(r.fast_paths.items()) if not k.startswith("_"))
            source = r.fast_paths.get("_source", "-")
            if r.fast_paths.get("_profile_error"):
                source += f" (profiler failed: {first_line(r.fast_paths['_profile_error'], 120)})"
            rows.append([link(e.ref), r.recipe, r.model, f"s{r.seq_len} b{r.batch_size}", group_title(g),
                         f"{counts[0]}/{counts[1]}", md_escape(paths), md_escape(source)])
    if not rows:
        return None
    return Table(["cell", "recipe", "model", "size", "group", "Unsloth kernels ran (k/n)", "fast paths", "source"], rows)
