"""`bench fit`: measure the longest sequence and largest batch that train under a tier's memory.

Thin over bench.run.fit (the measured search through the launcher), bench.analysis.fit (the table
read from the probe records, the estimator's seeds) and bench.render.fit. Exit codes: 0 done,
2 bad input, 3 stopped by --time-budget before the searches finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bench.analysis.doctor import DEFAULT_MODEL
from bench.analysis.fit import MaxFitRow, estimator_seeds, max_fit_rows
from bench.cli.common import check_writable, console, wide_console
from bench.cli.estimate import checked_model, checked_recipes, fail, tier_or_detected
from bench.config.recipes import DEFAULT_RECIPES
from bench.config.settings import TrainSettings
from bench.config.tiers import default_seq_len
from bench.render.fit import max_fit_table, render_max_fit_markdown
from bench.render.text import gib
from bench.run.device import detect_host_gpu
from bench.run.fit import FitError, FitOutcome, Probe, plan_fit, run_fit
from bench.run.launcher import Callbacks
from bench.run.recipes import RecipeUnavailable, check_available
from bench.schema.store import load


def _write_table(rows: list[MaxFitRow], out: Optional[Path], sources: list[str]) -> None:
    wide_console(console).print(max_fit_table(rows))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_max_fit_markdown(rows, sources))
        console.print(f"report: {out}")


def _on_probe(recipe: str, p: Probe) -> None:
    verdict = "[green]fits[/]" if p.fits else f"[yellow]{p.status if p.status != 'ok' else 'over tier memory'}[/]"
    peak = f"device {gib(p.peak_device_bytes)} GiB" if p.peak_device_bytes else ""
    console.print(f"  probe {recipe:<14} seq {p.seq_len:>6} batch {p.batch_size:>3}: {verdict} {peak}"
                  + (" (recorded earlier)" if p.reused else ""))


def _on_status(cell, text: str) -> None:
    if text.startswith(("starting", "loading", "writing")):
        console.print(f"  {cell.recipe} seq {cell.seq_len} batch {cell.batch_size}: {text}")


def _require(recipes: list[str], device: str) -> None:
    """Exit 2 naming the extra to install when a recipe cannot run here."""
    for name in recipes:
        try:
            check_available(name, device)
        except RecipeUnavailable as exc:
            fail(str(exc))


def _print_stops(outcomes: list[FitOutcome]) -> bool:
    """Say which searches stopped early; True when the time budget stopped one."""
    budget_stop = False
    for o in outcomes:
        for what, res in (("seq", o.seq), ("batch", o.batch)):
            if res.stopped:
                console.print(f"[yellow]{o.recipe} {what} search stopped:[/] {res.stopped}")
                budget_stop = budget_stop or res.stopped.startswith("time budget")
    return budget_stop


def fit_command(
    from_results: bool = typer.Option(False, "--from-results", help="Only render the table from RESULTS (no GPU)."),
    results: Optional[List[Path]] = typer.Argument(None, help="With --from-results: probe JSONL files."),
    gpu_tier: Optional[str] = typer.Option(None, "--gpu-tier", help="Tier to search under (native or emulated)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="One shipped name, config .json or checkpoint dir."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help=f"Comma list of recipes (`bench recipes`); default "
                                         f"{','.join(DEFAULT_RECIPES)} (on the CPU, those a CPU runs)."),
    driver: str = typer.Option("trainer", "--driver", help="trainer (TRL's SFTTrainer) | loop: what trains a probe."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Before recipes: hf, unsloth (= --recipe "
                                          "hf-kbit,unsloth --driver loop)."),
    batch_size: int = typer.Option(1, "--batch-size", help="Batch the sequence-length search runs at."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Sequence length the batch search runs at "
                                                                  "(default: the tier's first default)."),
    max_seq_len: int = typer.Option(65536, "--max-seq-len", help="Longest sequence the search may probe."),
    max_batch_size: int = typer.Option(64, "--max-batch-size", help="Largest batch the search may probe."),
    bisect_steps: int = typer.Option(1, "--bisect-steps", help="Bisection probes after the seq answer is bracketed "
                                                                "(the batch search gets one more)."),
    fresh_worker: bool = typer.Option(False, "--fresh-worker-after-failure",
                                      help="Restart the worker after every failed probe (slower: Unsloth recompiles)."),
    steps: int = typer.Option(1, "--steps", help="Timed optimizer steps per probe."),
    warmup_steps: int = typer.Option(1, "--warmup-steps", help="Untimed steps first (the peak includes them)."),
    lora_r: int = typer.Option(16, "--lora-r"),
    optimizer: str = typer.Option("adamw_8bit", "--optimizer"),
    gradient_checkpointing: str = typer.Option("auto", "--gradient-checkpointing"),
    results_path: Optional[Path] = typer.Option(None, "--results", help="Probe records JSONL "
                                                "(default reports/results/fit-<tier>-<mode>.jsonl)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the markdown table here (e.g. reports/max-fit.md)."),
    resume: bool = typer.Option(False, "--resume", help="Continue --results, reusing the probes already in it."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Start no probe after this many seconds."),
    device: str = typer.Option("cuda", "--device", help="cuda, or cpu (smoke: nothing runs out of memory there)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Synthetic checkpoint cache."),
    cell_timeout: float = typer.Option(600.0, "--cell-timeout", help="Seconds before a probe is killed."),
    load_timeout: float = typer.Option(600.0, "--load-timeout", help="Seconds allowed for a worker to load."),
):
    """Measure the longest sequence and largest batch that train under a tier's memory, per recipe.

    Every probe is a real training cell appended to --results. Exit codes: 0 done, 2 bad input,
    3 stopped by --time-budget before the searches finished (run again with --resume).
    """
    check_writable(out, "--out")
    check_writable(results_path, "--results")

    def seq_for(tier_name: str) -> int:
        return seq_len or default_seq_len(tier_name)

    if out is not None and out.suffix != ".md":
        fail(f"--out {out}: use a .md file name")
    if from_results:
        if not results:
            fail("--from-results needs probe JSONL files")
        _write_table(max_fit_rows(load(results), lambda t: batch_size, seq_for), out, [str(p) for p in results])
        return
    if results:
        fail(f"unexpected argument {results[0]} (probe files go with --from-results)")
    host = detect_host_gpu() if device == "cuda" else None
    if not (gpu_tier or host):
        fail("--gpu-tier is needed: no GPU detected here")
    tier = tier_or_detected(gpu_tier)
    ref = checked_model(model)
    for name, v in (("--batch-size", batch_size), ("--max-seq-len", max_seq_len), ("--max-batch-size", max_batch_size),
                    ("--bisect-steps", bisect_steps + 1)):
        if v <= 0:
            fail(f"{name} must be > 0")
    s0 = seq_for(tier.name)
    if ref.max_positions and s0 > ref.max_positions:
        fail(f"--seq-len {s0} is over {ref.name}'s {ref.max_positions:,} positions")
    recipes, driver = checked_recipes(recipe, backend, driver, device)
    train = TrainSettings(lora_r=lora_r, optimizer=optimizer, steps=steps, warmup_steps=warmup_steps,
                          gradient_checkpointing=gradient_checkpointing, driver=driver,
                          min_seconds=0.0)  # a probe measures its peak memory: a few steps, no minimum time
    plan = plan_fit(tier, model, recipes, batch_size=batch_size, seq_len=s0, train=train, device=device,
                    host=host, cell_timeout_s=cell_timeout, load_timeout_s=load_timeout, results_path=results_path)
    _require(recipes, device)
    path = plan.results_path
    console.print(f"[bold]bench fit[/] {ref.name} on {tier.name} ({plan.mode}), {', '.join(recipes)} ({driver} driver): "
                  f"seq search at batch {batch_size} "
                  f"(up to {max_seq_len:,}), batch search at seq {s0} (up to {max_batch_size}); probes -> {path}")
    try:
        outcomes = run_fit(plan.config, path, batch_size=batch_size, seq_len=s0, max_seq_len=max_seq_len,
                           seeds=estimator_seeds, callbacks=Callbacks(on_status=_on_status),
                           max_batch_size=max_batch_size, resume=resume, cache_dir=cache_dir, host=host,
                           time_budget_s=time_budget, max_bisect_steps=bisect_steps, on_probe=_on_probe,
                           fresh_after_failure=fresh_worker)
    except FitError as exc:
        fail(str(exc))
    budget_stop = _print_stops(outcomes)
    records = load([path], allow_empty=True) if path.exists() else []
    _write_table(max_fit_rows(records, lambda t: batch_size, seq_for), out, [str(path)])
    if budget_stop:
        console.print("fit incomplete: run the same command again with --resume to continue")
        raise SystemExit(3)
    console.print("fit complete")


def register(app: typer.Typer) -> None:
    app.command("fit")(fit_command)
