"""The whole report: the document's blocks and plots from the results, and the files it is written to."""

from __future__ import annotations

import hashlib

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from bench import __version__
from bench.analysis.borderline import BORDERLINE_MARGIN
from bench.analysis.claims import ClaimsInputs, Judgement, judge_claims, load_claims_inputs
from bench.analysis.results import Results, load_results, table_specs, tier_rank
from bench.render import plots
from bench.render.blocks import Block, Bullets, Heading, Image, Para, Raw, Table, render_html, render_markdown
from bench.render.claims import report_claims_blocks
from bench.render.report.environment import environment_blocks
from bench.render.report.ladder import ladder_blocks
from bench.render.report.labels import file_link, group_slug, group_title, rel_path
from bench.render.report.matrix import MATRIX_HEADER, decision_rows
from bench.render.report.plot_specs import plot_specs
from bench.render.report.summary import summary_items
from bench.render.report.tables import (appendix_table, comparison_table, data_text, fast_path_table, lora_cast_notes,
                                        reference_text, settings_text, speed_legend)
from bench.render.text import link, md_escape, slug
from bench.schema.pairs import DEFAULT_REFERENCE
from bench.schema.record import ResultsError

FORMATS = ("md", "html")


@dataclass
class Report:
    title: str
    blocks: list[Block]
    plots: list[Any]  # plots.VramPlot | ThroughputPlot | LadderPlot, paths relative to the report's folder


def _group_blocks(results: Results, stem: str, results_dir: Path) -> tuple[list[Block], list[Any]]:
    """Per group: the environment, a comparison table and its plots per table spec, the ladder, runner warnings."""
    blocks: list[Block] = []
    specs: list[Any] = []
    for g in results.groups:
        title = group_title(g)
        blocks.append(Heading(2, f"Results: {title}", f"group-{group_slug(g)}"))
        blocks.append(Heading(3, "Environment"))
        blocks.extend(environment_blocks(g, results_dir))
        for spec in table_specs(g):
            suffix = f" (settings {spec.index + 1} of {spec.total})" if spec.total > 1 else ""
            blocks.append(Heading(3, f"{spec.model} on {title}{suffix}"))
            blocks.append(Para(f"Settings: {md_escape(settings_text(spec))}. {data_text(spec)} {reference_text(spec)}"
                               + (" Speeds are host-GPU speed." if g.mode == "emulated" else "")))
            notes = lora_cast_notes(spec)
            if notes:
                blocks.append(Para(f"**On this fp16 tier:** {'; '.join(notes)}."))
            blocks.append(comparison_table(spec))
            blocks.append(Para(speed_legend(spec)))
            table_plots = plot_specs(spec, stem)
            specs.extend(table_plots)
            blocks.extend(Image(ps.title, ps.path) for ps in table_plots)
        ladder, ladder_plot = ladder_blocks(g, stem)
        blocks += ladder
        if ladder_plot is not None:
            specs.append(ladder_plot)
        warned = [e for e in g.entries if e.record.warnings]
        if warned:
            blocks.append(Para("**Warnings recorded by the runner:**"))
            blocks.append(Bullets([f"{link(e.ref)}: {md_escape(w)}" for e in warned for w in e.record.warnings]))
    return blocks, specs


def _decision_blocks(results: Results) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Decision matrix", "decision-matrix")]
    gpu_groups = [g for g in results.groups if g.mode != "cpu"]
    if gpu_groups:
        blocks.append(Para("Derived only from measured cells that ran within the tier's memory and are not part "
                           "of a pair that failed the parity check. Per size, the recommended recipe is the fastest "
                           "that fits, and only where every recipe was tried (or is known not to fit because a "
                           "smaller size did not): untried is untried. On an emulated tier a cell whose peak is "
                           f"within {BORDERLINE_MARGIN * 100:.0f} % of what a real card gives a process is *borderline*: never "
                           "recommended, never read as not fitting. Cost per 1M training tokens = $/hour / "
                           "(tokens/s x 3600) x 10^6 with the tier's indicative price, for native runs only: an "
                           "emulated tier's tokens/s are the host GPU's, so it has no cost figure."))
        blocks.append(Table(MATRIX_HEADER, [row for g in gpu_groups for row in decision_rows(g)]))
    else:
        blocks.append(Para("No GPU cells: no recommendation (CPU smoke cells measure no GPU)."))
    return blocks


def _appendix_blocks(results: Results, results_dir: Path) -> list[Block]:
    blocks: list[Block] = []
    fp = fast_path_table(results)
    if fp is not None:
        blocks.append(Heading(2, "Fast paths (fallback check)", "fast-paths"))
        blocks.append(Para("Which fast paths ran on Unsloth's hand-written kernels, per the records' fast-path "
                           "summary (kernels_check: one profiled, untimed step per Unsloth worker, on its first ok cell). k/n: of the n "
                           "fast paths Unsloth has a kernel for, k ran it; k < n means a fallback."))
        blocks.append(fp)
    blocks.append(Heading(2, "Appendix: cells", "cells"))
    notes = []
    if results.superseded:
        notes.append(f"{results.superseded} earlier record(s) of re-measured cells were superseded by later ones "
                     f"(the last record of a cell on a host wins).")
    if results.split_pairs:
        notes.append("Measured on different GPUs for different recipes (not compared): "
                     + ", ".join(f"`{k}`" for k in results.split_pairs) + ".")
    if notes:
        blocks.append(Para(" ".join(notes)))
    blocks.append(appendix_table(results, results_dir))
    blocks.append(Para("Metrics: peak alloc = torch.cuda.max_memory_allocated over the cell; peak device = the "
                       "process's GPU memory sampled through NVML (CUDA context and allocations outside torch "
                       "included); tokens/s = the median per-step tokens/s over the timed steps of every repeat "
                       "[95 % bootstrap interval] (bench/analysis/speed.py); first step = the first optimizer step, "
                       "compilation included; MFU = model FLOPs per token (forward and activation gradients, causal "
                       "attention, no recompute) x tokens/s / the host GPU's dense peak; HFU = the same with the "
                       "gradient checkpointing's recompute counted and padded tokens/s; J / 1k tokens = NVML's "
                       "energy counter over the timed steps per 1,000 trained tokens, where the GPU reports it "
                       "(bench/analysis/metrics.py)."))
    return blocks


def _claims_provenance(judgement: Optional[Judgement], results: Results, results_dir: Path,
                       claims_doc: Optional[Path]) -> str:
    """'; claims judged over: A B; claims document: C' when the claims were judged over more evidence than
    the report's own files (bench report --claims-evidence / --claims-doc), so the report can be made again."""
    text = ""
    if judgement is not None and [Path(p).resolve() for p in judgement.inputs.sources] != \
            [Path(p).resolve() for p in results.paths]:
        text += "; claims judged over: " + " ".join(rel_path(p, results_dir) for p in judgement.inputs.sources)
    if claims_doc is not None:
        text += f"; claims document: {rel_path(claims_doc, results_dir)}"
    return text


def build_report(results: Results, out: Path, judgement: Optional[Judgement] = None,
                 claims_doc: Optional[Path] = None) -> Report:
    """The report model: blocks for the markdown and the plots to write beside it. `judgement`: the claims
    judged over all the evidence (bench.analysis.claims.judge_claims; default: over this report's files
    alone); `claims_doc`: the claims document to link."""
    out = Path(out)
    results_dir = out.parent
    title = "qlora-bench report: " + "; ".join(group_title(g) for g in results.groups)
    recipes = list(dict.fromkeys(r for g in results.groups for r in g.recipes))
    sources = " ".join(rel_path(p, results_dir) for p in results.paths)
    blocks: list[Block] = [
        Raw(f"<!-- Generated by `bench report` from {sources} (paths relative to this file"
            + _claims_provenance(judgement, results, results_dir, claims_doc)
            + "). Do not edit by hand: regenerate it. -->"),
        Heading(1, title),
        Para(f"Fine-tuning recipes ({', '.join(recipes)}; `bench recipes` says what each one is) measured cell by "
             f"cell, each candidate against a reference recipe (requested: {results.reference}; each table names "
             f"its own). Generated by qlora-bench {__version__} `bench report` from "
             f"{len(results.entries)} records in {len(results.paths)} results file(s): "
             + ", ".join(file_link(p, results_dir) for p in results.paths) + ". Every figure carries a cell "
             "reference (c1, c2, ...) resolved in the [appendix](#cells) to its cell id and results file."),
        Heading(2, "Summary", "summary"),
        Bullets(summary_items(results)),
    ]
    group_blocks, specs = _group_blocks(results, slug(out.stem), results_dir)
    blocks += group_blocks
    blocks += _decision_blocks(results)
    if judgement is None:
        judgement = judge_claims(ClaimsInputs(results, sources=list(results.paths)))
    blocks += report_claims_blocks(judgement, results.entries, results_dir, claims_doc)
    blocks += _appendix_blocks(results, results_dir)
    return Report(title, blocks, specs)


# -- files -------------------------------------------------------------------------------------------
def format_for(out: Path, fmt: Optional[str] = None) -> str:
    """md or html from --format, else from the file name; a clash is a usage error."""
    suffix = Path(out).suffix.lower().lstrip(".")
    by_name = {"md": "md", "markdown": "md", "html": "html", "htm": "html"}.get(suffix)
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise ResultsError(f"unknown report format {fmt!r}; use md or html")
        if by_name is not None and by_name != fmt:
            raise ResultsError(f"--out {out} is a .{suffix} file but --format is {fmt}")
        return fmt
    if by_name is None:
        raise ResultsError(f"cannot tell the report format from {out}: use a .md or .html name, or --format")
    return by_name


def default_out(results: Results, fmt: str = "md") -> Path:
    """report-<tiers>-<the inputs' hash>.<fmt> beside the first results file, e.g.
    results/report-t4-1a2b3c4d.md: named for the tiers and inputs it shows, so it never replaces a report
    of other inputs (such as a committed reports/t4.md)."""
    tiers = sorted({g.tier for g in results.groups}, key=tier_rank)
    digest = hashlib.sha256("\n".join(str(Path(p).resolve()) for p in results.paths).encode()).hexdigest()[:8]
    return Path(results.paths[0]).parent / f"report-{'+'.join(tiers)}-{digest}.{fmt}"


def render_to_file(results: list[Path], out: Optional[Path] = None, fmt: Optional[str] = None,
                   reference: str = DEFAULT_REFERENCE, claims_evidence: Sequence[Path] = (),
                   claims_doc: Optional[Path] = None) -> Path:
    """Load `results`, write the report to `out` (md or html; default `default_out`) and its PNG plots
    beside it, every candidate recipe compared with `reference` (else the first fallback measured);
    the claims judged over `results` and `claims_evidence` (more results files, kernels-check results, the
    kernel micro-benchmark: bench.analysis.claims.load_claims_inputs), linking `claims_doc`; return the
    path written."""
    loaded = load_results(results, reference)
    judgement = judge_claims(load_claims_inputs(claims_input_order(results, claims_evidence), reference)) \
        if claims_evidence else None
    out = Path(out) if out is not None else default_out(loaded, (fmt or "md").lower())
    fmt = format_for(out, fmt)
    report = build_report(loaded, out, judgement, claims_doc)
    out.parent.mkdir(parents=True, exist_ok=True)
    for spec in report.plots:
        plots.write_plot(spec, out.parent / spec.path)
    markdown = render_markdown(report.blocks)
    text = markdown if fmt == "md" else render_html(markdown, report.title)
    write_text_atomic(out, text)
    return out


def claims_input_order(results: Sequence[Path], claims_evidence: Sequence[Path]) -> list[Path]:
    """The claims' inputs: `claims_evidence` in its order (as `bench claims` is given it, so that the latest
    record of a cell is the same one), then the report's files it lacks."""
    given = {Path(p).resolve() for p in claims_evidence}
    return [*map(Path, claims_evidence), *(Path(p) for p in results if Path(p).resolve() not in given)]


def write_text_atomic(out: Path, text: str) -> None:
    """Write `text` to `out` through a temporary file renamed into place."""
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
