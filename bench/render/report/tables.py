"""The report's tables: HF and Unsloth side by side, the cells appendix, the fast-path summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from bench.analysis.claims import ran_unsloth_kernels
from bench.analysis.results import Results, TableSpec
from bench.render.blocks import Table
from bench.render.report.labels import BACKEND_LABEL, file_link, group_title
from bench.render.report.phrases import parity_text, status_text
from bench.render.text import first_line, fmt, gib, link, md_escape, pct


def settings_text(spec: TableSpec) -> str:
    """The training settings every row of the table shares, in words."""
    r = spec.records[0]
    ckpt = ", ".join(f"{BACKEND_LABEL[b]} {next(x.gradient_checkpointing for x in spec.records if x.backend == b)}"
                     for b in spec.backends)
    return (f"LoRA r {r.lora_r}, alpha {r.lora_alpha}, dropout {r.lora_dropout:g} on {', '.join(r.target_modules)}; "
            f"optimizer {r.optimizer}, lr {r.learning_rate:g}; dtype {r.dtype}; attention {r.attn_implementation}; "
            f"grad-accum {r.grad_accum}; {r.warmup_steps} untimed + {r.steps} timed steps; seed {r.seed}; "
            f"gradient checkpointing: {ckpt}")


def comparison_table(spec: TableSpec) -> Table:
    """Rows per (seq_len, batch): HF and Unsloth side by side, speed-up and saving from matched pairs only."""
    cpu = spec.group.mode == "cpu"
    backends = spec.backends
    both = len(backends) == 2
    header = ["seq_len", "batch", "status"]
    metrics = ([("peak_rss_bytes", "peak RSS GiB", gib)] if cpu else
               [("peak_allocated_bytes", "peak alloc GiB", gib), ("peak_device_bytes", "peak device GiB", gib)])
    metrics += [("tokens_per_s", "tokens/s", lambda x: fmt(x, ",.0f")),
                ("first_step_s", "first step s", lambda x: fmt(x, ".1f"))]
    if not cpu:
        metrics.append(("mfu", "MFU", lambda x: fmt(None if x is None else x * 100, ".1f", " %")))
    for _, label, _ in metrics:
        header += [f"{BACKEND_LABEL[b]} {label}" for b in backends]
    if both:
        header += ["speed-up", "memory saved (device / alloc)", "parity"]
    header.append("cells")
    rows = []
    for p in spec.pairs:
        r = p.any.record
        sides = {"hf": p.hf, "unsloth": p.unsloth}
        states = {b: (status_text(e.record) if e else "not measured") for b, e in sides.items() if b in backends}
        if all(s == "ok" for s in states.values()):
            status = "ok"
        else:
            status = "; ".join(f"{BACKEND_LABEL[b]}: {md_escape(s)}" for b, s in states.items())
        row = [str(r.seq_len), str(r.batch_size), status]
        for field, _, format_value in metrics:
            for b in backends:
                e = sides[b]
                row.append(format_value(getattr(e.record, field)) if e and e.record.ok else "-")
        if both:
            if p.comparable:
                dev, alloc = p.memory_reduction("peak_device_bytes"), p.memory_reduction("peak_allocated_bytes")
                row += [fmt(p.speedup, ".2f", "x"), f"{pct(dev)} / {pct(alloc)}"]
            elif p.both_ok:
                row += ["- (not matched)", "- (not matched)"]
            else:
                row += ["-", "-"]
            row.append(parity_text(p))
        row.append(", ".join(link(e.ref) for e in (p.hf, p.unsloth) if e))
        rows.append(row)
    right = {i for i, h in enumerate(header) if h not in ("status", "parity", "cells")}
    return Table(header, rows, right)


def appendix_table(results: Results, results_dir: Path) -> Table:
    """Every cell: its reference (the anchor figures link to), cell id, results file, outcome, figures."""
    header = ["ref", "cell id", "results file", "status", "peak alloc GiB", "peak device GiB", "peak RSS GiB",
              "tokens/s", "first step s", "parity", "finished (UTC)", "message"]
    rows = []
    for e in results.entries:
        r = e.record
        parity = "-" if r.matched is None else ("matched" if r.matched else "**NOT MATCHED**")
        msg = "; ".join(([first_line(r.error, 200)] if r.error else []) + list(r.warnings))
        rows.append([f'<a id="{e.ref}"></a>{e.ref}', f"`{r.cell_id}`", file_link(e.path, results_dir),
                     r.status, gib(r.peak_allocated_bytes), gib(r.peak_device_bytes), gib(r.peak_rss_bytes),
                     fmt(r.tokens_per_s, ",.0f"), fmt(r.first_step_s, ".2f"), parity, r.finished_at or "-",
                     md_escape(msg) if msg else ""])
    return Table(header, rows, {4, 5, 6, 7, 8})


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
            rows.append([link(e.ref), r.model, f"s{r.seq_len} b{r.batch_size}", group_title(g),
                         f"{counts[0]}/{counts[1]}", md_escape(paths), md_escape(source)])
    if not rows:
        return None
    return Table(["cell", "model", "size", "group", "Unsloth kernels ran (k/n)", "fast paths", "source"], rows)
