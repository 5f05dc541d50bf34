"""The `bench` command line: a thin layer over the library (launcher, tiers, models, ...)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from bench.cli.common import UsageFailure, console, err_console  # noqa: F401  (bench.cli.console etc. stay importable)

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Matched benchmarks of vanilla Hugging Face QLoRA vs Unsloth QLoRA.")


def _usage_errors():
    from bench.config.settings import ConfigError
    from bench.config.models import ModelError
    from bench.schema.record import ResultsError
    from bench.config.tiers import TierError

    return (UsageFailure, ConfigError, ModelError, ResultsError, TierError)


@app.command()
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
    from bench.config.settings import RunConfig, TrainSettings, parse_int_list
    from bench.render.console import RunProgress, comparison_tables
    from bench.run.launcher import Callbacks, Runner, make_plan
    from bench.config.tiers import DEFAULT_MATRIX
    from bench.run.device import detect_host_gpu

    host = detect_host_gpu() if device == "cuda" else None
    if gpu_tier is None:
        if host is None or host.tier is None:
            raise UsageFailure("--gpu-tier is needed: no known GPU detected (see `bench tiers`)")
        gpu_tier = host.tier.name
    tier_key = gpu_tier.strip().lower()
    defaults = DEFAULT_MATRIX.get(tier_key, DEFAULT_MATRIX["t4"])
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
        from bench.run.launcher import new_run_id

        runner_out = Path("reports/results") / f"{tier_key}-{plan.tier_plan.mode}-{new_run_id()}.jsonl"
    tp = plan.tier_plan
    where = f"{tp.mode}" + (f" on {tp.host_gpu_name}" if tp.host_gpu_name else "")
    console.print(f"[bold]qlora-bench[/] tier [cyan]{tp.tier.name}[/] ({where}), dtype {tp.dtype}, "
                  f"{len(plan.cells)} cells -> {runner_out}")
    for line in tp.emulated:
        console.print(f"  [yellow]emulated:[/] {line}")
    with RunProgress(console, total=len(plan.cells)) as progress:
        runner = Runner(plan, runner_out, resume=resume, cache_dir=cache_dir,
                        callbacks=Callbacks(on_status=progress.status, on_record=progress.record))
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
    from bench.render.report import format_for
    from bench.schema.record import ResultsError

    try:
        format_for(path)  # the rule `bench report --out` uses
    except ResultsError:
        raise UsageFailure(f"--report {path}: use a .md or .html file name") from None


def _render_report(results: list[Path], out: Path) -> None:
    from bench.render import report as report_mod
    written = report_mod.render_to_file(results, out)
    console.print(f"report: {written}")


@app.command()
def tiers():
    """The GPU tiers: memory, bandwidth, tensor throughput, features, price."""
    from bench.config.tiers import TIERS, GiB
    from bench.run.device import detect_host_gpu

    host = detect_host_gpu()
    t = Table(title="GPU tiers (datasheet figures; price indicative)")
    for col in ("tier", "GPU", "usable GiB", "GB/s", "fp16 TF/s", "bf16 TF/s", "cc", "bf16", "fp8", "FA2",
                "$/h", "here"):
        t.add_column(col)
    for tier in TIERS.values():
        here = ""
        if host is not None:
            if host.tier is not None and host.tier.name == tier.name:
                here = "native"
            elif host.total_memory_bytes >= tier.usable_vram_bytes:
                here = "emulated"
            else:
                here = "too large"
        t.add_row(tier.name, tier.marketing_name, f"{tier.usable_vram_bytes / GiB:.1f}",
                  f"{tier.memory_bandwidth_gbps:.0f}", f"{tier.fp16_tflops:g}",
                  "-" if tier.bf16_tflops is None else f"{tier.bf16_tflops:g}",
                  "%d.%d" % tier.compute_capability, "yes" if tier.supports_bf16 else "no",
                  "yes" if tier.supports_fp8 else "no", "yes" if tier.supports_flash_attention_2 else "no",
                  f"{tier.price_per_hour_usd:.2f}", here)
    console.print(t)
    console.print(f"present GPU: {host.name if host else 'none'}")


@app.command()
def models():
    """The shipped architectures (configs only; weights are synthesised)."""
    from bench.config.models import SHIPPED, TARGET_MODULES, parameter_counts

    t = Table(title="Shipped architectures")
    for col in ("name", "mirrors", "model_type", "params", "layers", "hidden", "vocab", "max pos",
                "Unsloth fast path", "LoRA targets"):
        t.add_column(col)
    for m in SHIPPED.values():
        cfg = m.config_dict()
        n = parameter_counts(cfg)["total"]
        t.add_row(m.name, m.mirrors, cfg["model_type"], f"{n / 1e9:.2f}B" if n > 1e8 else f"{n / 1e6:.2f}M",
                  str(cfg["num_hidden_layers"]), str(cfg["hidden_size"]), str(cfg["vocab_size"]),
                  str(cfg.get("max_position_embeddings")), "yes" if m.unsloth_fast_path else "[yellow]no[/]",
                  ",".join(TARGET_MODULES.get(cfg["model_type"], ())))
    console.print(t)


def _register_subcommands() -> None:
    """Commands that live in their own modules (report, gate, estimate, kernels)."""
    import importlib

    for name in ("bench.cli.report", "bench.cli.gate", "bench.cli.estimate", "bench.cli.fit", "bench.cli.doctor",
                 "bench.cli.kernels"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)


_register_subcommands()


def main() -> None:
    try:
        rc = app(standalone_mode=False)  # click returns typer.Exit codes instead of raising them here
    except _usage_errors() as exc:
        from rich.markup import escape

        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(2)
        raise
    if isinstance(rc, int) and rc:
        sys.exit(rc)
