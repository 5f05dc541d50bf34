"""`bench run`: measure matched HF and Unsloth cells on one GPU tier (native or emulated)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bench.cli.common import UsageFailure, console, err_console
from bench.config.settings import RunConfig, TrainSettings, parse_int_list
from bench.config.tiers import default_matrix
from bench.render import report as report_mod
from bench.render.console import RunProgress, comparison_tables
from bench.run.device import detect_host_gpu
from bench.run.launcher import Callbacks, OutputExists, Runner, make_plan, new_run_id
from bench.schema.record import ResultsError


def run(
    gpu_tier: Optional[str] = typer.Option(None, "--gpu-tier", help="Tier to measure (default: the present GPU's)."),
    model: Optional[str] = typer.Option(None, "--model", help="Comma list: shipped names, config .json, dirs, hub ids."),
    seq_len: Optional[str] = typer.Option(None, "--seq-len", help="Comma list of sequence lengths (tokens)."),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", help="Comma list of micro-batch sizes."),
    backend: str = typer.Option("hf,unsloth", "--backend", help="Comma list: hf, unsloth."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Micro-batches per optimizer step."),
    steps: int = typer.Option(4, "--steps", help="Timed optimizer steps per cell."),
    warmup_steps: int = typer.Option(2, "--warmup-steps", help="Untimed steps first (compilation)."),
    lora_r: int = typer.Option(16, "--lora-r"),
    lora_alpha: int = typer.Option(16, "--lora-alpha"),
    lora_dropout: float = typer.Option(0.0, "--lora-dropout"),
    target_modules: Optional[str] = typer.Option(None, "--target-modules", help="Comma list (default: per arch)."),
    optimizer: str = typer.Option("adamw_8bit", "--optimizer",
                                  help="adamw_8bit | paged_adamw_8bit | adamw_torch | paged_adamw_32bit"),
    learning_rate: float = typer.Option(2e-4, "--lr"),
    gradient_checkpointing: str = typer.Option("auto", "--gradient-checkpointing",
                                               help="auto (hf: standard, unsloth: unsloth) | none | standard | unsloth"),
    seed: int = typer.Option(1234, "--seed"),
    device: str = typer.Option("cuda", "--device", help="cuda, or cpu for a smoke run (no GPU figures)."),
    isolate: str = typer.Option("model", "--isolate", help="model: one worker per backend x model; cell: per cell."),
    out: Optional[Path] = typer.Option(None, "--out", help="Results JSONL (default reports/results/<tier>-<run>.jsonl)."),
    resume: bool = typer.Option(False, "--resume", help="Continue --out, skipping cells already ok/oom/skipped."),
    cell_timeout: float = typer.Option(900.0, "--cell-timeout", help="Seconds before a cell is killed."),
    load_timeout: float = typer.Option(900.0, "--load-timeout", help="Seconds allowed for a worker to load."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Synthetic checkpoint cache."),
    attn_implementation: str = typer.Option("sdpa", "--attn-implementation"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    skip_dominated: bool = typer.Option(True, "--skip-dominated/--no-skip-dominated",
                                        help="Skip cells at least as large as one that ran out of memory."),
    report: Optional[Path] = typer.Option(None, "--report", help="Render a markdown report here at the end."),
    fast_paths: bool = typer.Option(True, "--fast-paths/--no-fast-paths",
                                    help="Profile one extra untimed step per Unsloth worker (its first ok cell): which kernels ran."),
):
    """Measure matched HF and Unsloth QLoRA cells on one GPU tier (native or emulated)."""

    host = detect_host_gpu() if device == "cuda" else None
    if gpu_tier is None:
        if host is None or host.tier is None:
            raise UsageFailure("--gpu-tier is needed: no known GPU detected (see `bench tiers`)")
        gpu_tier = host.tier.name
    tier_key = gpu_tier.strip().lower()
    defaults = default_matrix(tier_key)
    train = TrainSettings(
        lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        target_modules=tuple(t.strip() for t in target_modules.split(",") if t.strip()) if target_modules else None,
        optimizer=optimizer, learning_rate=learning_rate, grad_accum=grad_accum, steps=steps,
        warmup_steps=warmup_steps, seed=seed, gradient_checkpointing=gradient_checkpointing,
    )
    config = RunConfig(
        tier=tier_key,
        models=[m.strip() for m in model.split(",") if m.strip()] if model else list(defaults["models"]),
        backends=[b.strip() for b in backend.split(",") if b.strip()],
        seq_lens=parse_int_list(seq_len, "--seq-len") if seq_len else list(defaults["seq_lens"]),
        batch_sizes=parse_int_list(batch_size, "--batch-size") if batch_size else list(defaults["batch_sizes"]),
        train=train, device=device, isolate=isolate, cell_timeout_s=cell_timeout, load_timeout_s=load_timeout,
        trust_remote_code=trust_remote_code, attn_implementation=attn_implementation, skip_dominated=skip_dominated,
        fast_paths=fast_paths,
    )
    plan = make_plan(config, host=host)
    if report is not None:
        _check_report_target(report)
    runner_out = out
    if runner_out is None:
        runner_out = Path("reports/results") / f"{tier_key}-{plan.tier_plan.mode}-{new_run_id()}.jsonl"
    tp = plan.tier_plan
    where = f"{tp.mode}" + (f" on {tp.host_gpu_name}" if tp.host_gpu_name else "")
    console.print(f"[bold]qlora-bench[/] tier [cyan]{tp.tier.name}[/] ({where}), dtype {tp.dtype}, "
                  f"{len(plan.cells)} cells -> {runner_out}")
    for line in tp.emulated:
        console.print(f"  [yellow]emulated:[/] {line}")
    with RunProgress(console, total=len(plan.cells)) as progress:
        try:
            runner = Runner(plan, runner_out, resume=resume, cache_dir=cache_dir,
                            callbacks=Callbacks(on_status=progress.status, on_record=progress.record))
        except OutputExists as exc:
            raise UsageFailure(f"{exc.path} exists: pass --resume to continue it, or another --out") from None
        skipped = len([c for c in plan.cells if c.cell_id in runner.finished])
        if skipped:
            console.print(f"resuming: {skipped} finished cells kept")
            progress.progress.advance(progress.task, skipped)
        records = runner.run()
    for table in comparison_tables(records):
        console.print(table)
    console.print(f"results: {runner_out}")
    if report is not None:
        _render_report([runner_out], report)
    failed = [r for r in records if r.matched is False]
    if failed:
        err_console.print(f"[bold red]{len(failed)} cells failed the parity check: their comparison is not matched.")


def _check_report_target(path: Path) -> None:
    try:
        report_mod.format_for(path)  # the rule `bench report --out` uses
    except ResultsError:
        raise UsageFailure(f"--report {path}: use a .md or .html file name") from None


def _render_report(results: list[Path], out: Path) -> None:
    written = report_mod.render_to_file(results, out)
    console.print(f"report: {written}")


def register(app: typer.Typer) -> None:
    app.command()(run)
