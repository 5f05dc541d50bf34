"""`bench run`: measure recipes cell by cell on one GPU tier (native or emulated).

Exit codes: 0 every cell ran ok; 1 some cells did not (out of memory, error, timeout, NaN loss,
skipped); 2 bad input (nothing ran); 3 no cell ran ok (e.g. every worker failed to load).
"""

from __future__ import annotations

import os

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from bench.cli.common import USAGE_ERRORS, UsageFailure, check_writable, console, err_console
from bench.config.recipes import DEFAULT_RECIPES, DEFAULT_REFERENCE, RECIPES
from bench.config.presets import PRESETS, preset_parts
from bench.config.request import CPU_TIMED_WINDOW, RunRequest, to_config
from bench.config.settings import DEFAULT_MAX_STEPS, DEFAULT_MIN_SECONDS, DEFAULT_MIN_STEPS
from bench.render import report as report_mod
from bench.render.console import RunProgress, comparison_tables
from bench.run.device import cuda_visible, detect_host_gpu, list_gpus
from bench.run.executors import LocalGpuExecutor, SerialExecutor, gpu_slots
from bench.run.launcher import Callbacks, OutputExists, Runner, make_plan, new_run_id
from bench.run.recipes import RecipeUnavailable, check_available
from bench.schema.record import ResultsError
from bench.units import GiB

EXIT_OK, EXIT_SOME_FAILED, EXIT_BAD_INPUT, EXIT_NOTHING_RAN = 0, 1, 2, 3


def run(
    gpu_tier: Optional[str] = typer.Option(None, "--gpu-tier", help="Tier to measure (default: the present GPU's)."),
    model: Optional[str] = typer.Option(None, "--model", help="Comma list: shipped names, config .json, dirs, hub ids."),
    seq_len: Optional[str] = typer.Option(None, "--seq-len", help="Comma list of sequence lengths (tokens)."),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", help="Comma list of micro-batch sizes."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help=f"Comma list of recipes (`bench recipes`); "
                                         f"default {','.join(DEFAULT_RECIPES)}."),
    reference: str = typer.Option(DEFAULT_REFERENCE, "--reference", help="The recipe speed-ups and savings are against."),
    driver: str = typer.Option("trainer", "--driver", help="trainer (TRL's SFTTrainer, as users run it) | loop."),
    data: Optional[Path] = typer.Option(None, "--data", help="synthetic (default: random ids of exactly "
                                        "--seq-len), or a JSON / JSONL / Parquet file of Alpaca, chat or text examples."),
    packing: bool = typer.Option(False, "--packing/--no-packing", help="Pack --data examples into full rows."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Before recipes: hf, unsloth (= --recipe "
                                          "hf-kbit,unsloth --driver loop)."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Micro-batches per optimizer step."),
    min_steps: Optional[int] = typer.Option(None, "--min-steps", "--steps", help="Timed optimizer steps per cell, at "
                                            f"least (default {DEFAULT_MIN_STEPS}; CPU {CPU_TIMED_WINDOW['steps']})."),
    min_seconds: Optional[float] = typer.Option(None, "--min-seconds", help="The timed steps run at least this long "
                                                f"(default {DEFAULT_MIN_SECONDS:g}; CPU 0)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Timed steps per cell, at most, whatever "
                                            f"--min-seconds asks (default {DEFAULT_MAX_STEPS})."),
    repeats: int = typer.Option(1, "--repeats", help="Measure every cell this many times, each in a fresh worker."),
    warmup_steps: int = typer.Option(2, "--warmup-steps", help="Untimed steps first (compilation)."),
    lora_r: int = typer.Option(16, "--lora-r"),
    lora_alpha: int = typer.Option(16, "--lora-alpha"),
    lora_dropout: float = typer.Option(0.0, "--lora-dropout"),
    target_modules: Optional[str] = typer.Option(None, "--target-modules", help="Comma list (default: per arch)."),
    optimizer: str = typer.Option("adamw_8bit", "--optimizer",
                                  help="adamw_8bit | paged_adamw_8bit | adamw_torch | paged_adamw_32bit"),
    learning_rate: float = typer.Option(2e-4, "--lr"),
    gradient_checkpointing: str = typer.Option("auto", "--gradient-checkpointing",
                                               help="auto (the recipe's own) | none | standard | unsloth"),
    seed: int = typer.Option(1234, "--seed"),
    device: str = typer.Option("cuda", "--device", help="cuda, or cpu for a smoke run (no GPU figures)."),
    isolate: str = typer.Option("model", "--isolate", help="model: one worker per recipe x model; cell: per cell."),
    out: Optional[Path] = typer.Option(None, "--out", help="Results JSONL (default reports/results/<tier>-<run>.jsonl)."),
    resume: bool = typer.Option(False, "--resume", help="Continue --out, running only cells not finished there."),
    cell_timeout: float = typer.Option(900.0, "--cell-timeout", help="Seconds before a cell is killed."),
    load_timeout: float = typer.Option(900.0, "--load-timeout", help="Seconds allowed for a worker to load."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Synthetic checkpoint cache."),
    attn_implementation: str = typer.Option("sdpa", "--attn-implementation"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    skip_dominated: bool = typer.Option(True, "--skip-dominated/--no-skip-dominated",
                                        help="Skip cells at least as large as one that ran out of memory."),
    report: Optional[Path] = typer.Option(None, "--report", help="Render a markdown report here at the end."),
    fast_paths: bool = typer.Option(True, "--fast-paths/--no-fast-paths",
                                    help="Profile one extra untimed step per Unsloth / Liger worker: which kernels ran."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="all, or GPU indexes (0,1): worker groups spread over "
                                       "these local GPUs, one worker per GPU at a time."),
    exclusive: bool = typer.Option(False, "--exclusive", help="With --gpus: load in parallel, but measure one cell "
                                   "at a time (speed figures with no neighbour on the host's CPU)."),
    executor: str = typer.Option("local", "--executor", help="local (this host) | dask (a Dask cluster, --scheduler)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="With --executor dask: tcp://HOST:8786."),
    preset: Optional[str] = typer.Option(None, "--preset", help="A named set of runs (`bench presets`), e.g. articles "
                                         "or articles/s4-l4-mistral; --out is then a folder, one results file per part."),
):
    """Measure recipes cell by cell on one GPU tier (native or emulated). Exit codes: 0 all cells ok, 1 some
    cells failed, 2 bad input, 3 no cell ran ok."""
    if preset and out is not None and out.suffix:
        raise UsageFailure(f"--out {out}: with --preset, --out is a folder (one results file per part)")
    check_writable(out / ".results.jsonl" if preset and out else out, "--out")
    check_writable(report, "--report")
    host = detect_host_gpu() if device == "cuda" else None
    if gpu_tier is None:
        if host is None or host.tier is None:
            raise UsageFailure("--gpu-tier is needed: no known GPU detected (see `bench tiers`)")
        gpu_tier = host.tier.name
    train = dict(lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, optimizer=optimizer,
                 target_modules=tuple(t.strip() for t in target_modules.split(",") if t.strip()) if target_modules else None,
                 learning_rate=learning_rate, grad_accum=grad_accum, warmup_steps=warmup_steps, seed=seed,
                 gradient_checkpointing=gradient_checkpointing, max_steps=max_steps)
    train.update({k: v for k, v in (("steps", min_steps), ("min_seconds", min_seconds)) if v is not None})
    settings = dict(isolate=isolate, cell_timeout_s=cell_timeout, load_timeout_s=load_timeout,
                    trust_remote_code=trust_remote_code, attn_implementation=attn_implementation,
                    skip_dominated=skip_dominated, fast_paths=fast_paths, repeats=repeats)
    request = RunRequest(tier=gpu_tier, device=device, model=model, seq_len=seq_len, batch_size=batch_size,
                         recipe=recipe, backend=backend, reference=reference, driver=driver, data=data,
                         packing=packing, train=train, run=settings)
    if report is not None:
        _check_report_target(report)
    measure = lambda req, path: _measure(req, path, host, resume, cache_dir,  # noqa: E731
                                         lambda plan: make_executor(plan, executor, scheduler, gpus, exclusive))
    if preset:
        results, codes = _run_preset(preset, request, out, host, measure)
    else:
        path, code = measure(request, out)
        results, codes = [path], [code]
    if report is not None:
        _render_report(results, report, reference)
    raise typer.Exit(combined_exit_code(codes))


def combined_exit_code(codes: list[int]) -> int:
    """One exit code for several runs: each run's own code when they agree, else 1 (some cells failed)."""
    return codes[0] if len(set(codes)) == 1 else EXIT_SOME_FAILED


def _measure(request: RunRequest, out: Optional[Path], host, resume: bool, cache_dir: Optional[Path],
             executor_for) -> tuple[Path, int]:
    """One `bench run` matrix: validate, run, print the tables; (results file, exit code)."""
    config, plan = checked_plan(request, host)
    left_out = [r for r in DEFAULT_RECIPES if r not in config.recipes] if not (request.recipe or request.backend) else []
    if left_out:
        console.print(f"[dim]left out on the CPU (they need a CUDA GPU): {', '.join(left_out)}[/]")
    out = out or Path("reports/results") / f"{config.tier}-{plan.tier_plan.mode}-{new_run_id()}.jsonl"
    records = _run_plan(plan, out, resume, cache_dir, executor_for(plan))
    for table in comparison_tables(records, config.reference):
        console.print(table)
    console.print(f"results: {out}")
    return out, _exit_code(records)


def checked_plan(request: RunRequest, host):
    """(config, plan) of a request, every recipe installed and runnable on its device; UsageFailure if not."""
    config = to_config(request)
    plan = make_plan(config, host=host)
    for name in config.recipes:
        try:
            check_available(name, config.device)
        except RecipeUnavailable as exc:
            raise UsageFailure(str(exc)) from None
    return config, plan


def _run_preset(spec: str, request: RunRequest, out: Optional[Path], host, measure) -> tuple[list[Path], list[int]]:
    """Every part of a preset, one results file each under the folder `out`; checked before any runs."""
    name, parts = preset_parts(spec)
    given = [flag for flag, value in (("--model", request.model), ("--seq-len", request.seq_len),
                                      ("--batch-size", request.batch_size), ("--recipe", request.recipe),
                                      ("--backend", request.backend)) if value]
    given += [f"--{k.replace('_', '-')}" for k, v in PRESET_SET_DEFAULTS.items() if (request.train or {}).get(k) != v]
    given += ["--reference"] if request.reference != DEFAULT_REFERENCE else []
    if given:
        raise UsageFailure(f"--preset {spec} sets {', '.join(given)} itself: leave {'it' if len(given) == 1 else 'them'} out")
    folder = out or Path("reports/results") / f"{name}-{new_run_id()}"
    requests = [(part, preset_request(part, request)) for part in parts]
    for part, req in requests:  # every part valid (and runnable on this host) before the first one runs
        try:
            checked_plan(req, host)
        except USAGE_ERRORS as exc:
            raise UsageFailure(f"--preset {name}/{part.name}: {exc}") from None
    results, codes = [], []
    for part, req in requests:
        console.rule(f"[bold]{name}/{part.name}[/]" + (f" ({', '.join(part.claims)})" if part.claims else ""))
        console.print(f"[dim]{part.what}[/]", highlight=False)
        path, code = measure(req, folder / f"{part.name}.jsonl")
        results.append(path)
        codes.append(code)
    console.print(f"preset {name}: {len(results)} results files in {folder}")
    return results, codes


#: TrainSettings a preset part may set: the user's value must be the default for a preset run.
PRESET_SET_DEFAULTS = {"grad_accum": 1, "optimizer": "adamw_8bit"}


def preset_request(part, base: RunRequest) -> RunRequest:
    """The RunRequest of one preset part: the user's options, then what the part sets."""
    run = dict(base.run or {})
    run["repeats"] = max(int(run.get("repeats") or 1), part.repeats)  # the user's --repeats, or the part's floor
    return replace(base, tier=part.tier or base.tier, model=part.models, recipe=part.recipes,
                   reference=part.reference, seq_len=part.seq_lens, batch_size=part.batch_sizes,
                   train={**(base.train or {}), **part.train}, run=run)


def make_executor(plan, kind: str, scheduler: Optional[str], gpus: Optional[str], exclusive: bool):
    """The executor `--executor` / `--gpus` / `--scheduler` ask for (bench.run.executors)."""
    if kind not in ("local", "dask"):
        raise UsageFailure(f"--executor {kind!r}: use local or dask")
    if kind == "dask":
        if not scheduler:
            raise UsageFailure("--executor dask needs --scheduler tcp://HOST:8786 (a running Dask scheduler)")
        if gpus:
            raise UsageFailure("--gpus is for the local executor; a Dask cluster places groups by its workers' resources")
        try:
            from bench.run.dask_executor import DaskExecutor, resources_for
        except ImportError:
            raise UsageFailure('--executor dask needs dask and distributed: pip install -e ".[cluster]"') from None
        tp = plan.tier_plan
        gib = (tp.memory_limit_bytes or tp.tier.usable_vram_bytes) / GiB
        return DaskExecutor(scheduler, lambda job: resources_for(job, plan.config.device, tp.tier.name, tp.mode, gib))
    if scheduler:
        raise UsageFailure("--scheduler goes with --executor dask")
    if gpus is None:
        if exclusive:
            raise UsageFailure("--exclusive goes with --gpus")
        return SerialExecutor()
    if plan.config.device != "cuda":
        raise UsageFailure("--gpus needs --device cuda")
    try:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        local = list_gpus()
        if visible is not None and local and not cuda_visible(local, visible):
            raise UsageFailure(f"--gpus {gpus}: CUDA_VISIBLE_DEVICES={visible!r} leaves none of this host's GPUs "
                               f"{[g['index'] for g in local]} visible")
        return LocalGpuExecutor(gpu_slots(gpus, cuda_visible(local, visible)), exclusive=exclusive)
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None


def _run_plan(plan, out: Path, resume: bool, cache_dir: Optional[Path], executor) -> list:
    tp = plan.tier_plan
    where = f"{tp.mode}" + (f" on {tp.host_gpu_name}" if tp.host_gpu_name else "")
    console.print(f"[bold]qlora-bench[/] tier [cyan]{tp.tier.name}[/] ({where}), dtype {tp.dtype}, "
                  f"recipes {', '.join(plan.config.recipes)} ({plan.config.train.driver} driver), "
                  f"{len(plan.cells)} cells -> {out}")
    for line in tp.emulated:
        console.print(f"  [yellow]emulated:[/] {line}")
    repeats = plan.config.repeats
    with RunProgress(console, total=len(plan.cells) * repeats,
                     what="cells" if repeats == 1 else f"cells x {repeats} repeats") as progress:
        try:
            runner = Runner(plan, out, resume=resume, cache_dir=cache_dir, executor=executor,
                            callbacks=Callbacks(on_status=progress.status, on_record=progress.record))
        except OutputExists as exc:
            raise UsageFailure(f"{exc.path} exists: pass --resume to continue it, or another --out") from None
        finished = runner.finished  # a property that reads every cell's repeats: once
        kept = len([c for c in plan.cells if c.cell_id in finished])
        if kept:
            console.print(f"resuming: {kept} finished cells kept")
        progress.progress.advance(progress.task, runner.measurements())
        return runner.run()


def _exit_code(records: list) -> int:
    failed = [r for r in records if not r.ok]
    unmatched = [r for r in records if r.matched is False]
    if unmatched:
        err_console.print(f"[bold red]{len(unmatched)} cells failed the parity check: their comparison is not matched.")
    if records and len(failed) == len(records):
        err_console.print(f"[bold red]no cell ran ok[/] ({len(records)} failed: see the table and the worker logs)")
        return EXIT_NOTHING_RAN
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _check_report_target(path: Path) -> None:
    try:
        report_mod.format_for(path)  # the rule `bench report --out` uses
    except ResultsError:
        raise UsageFailure(f"--report {path}: use a .md or .html file name") from None


def _render_report(results: list[Path], out: Path, reference: str) -> None:
    written = report_mod.render_to_file(results, out, reference=reference)
    console.print(f"report: {written}")


def recipes():
    """The recipes `bench run --recipe` measures: what each one is and what it changes."""
    title = f"Recipes (reference: {DEFAULT_REFERENCE}; default run: {', '.join(DEFAULT_RECIPES)})"
    console.print(f"[bold]{title}[/]")
    for r in RECIPES.values():
        needs = ", ".join(x for x in ([f'pip install -e ".[{r.extra}]"'] if r.extra else [])
                          + (["a CUDA GPU"] if r.needs_gpu else [])) or "the base install"
        weights = "NF4 4-bit" if r.precision == "nf4" else "16-bit"
        console.print(f"\n[bold cyan]{r.name}[/] ({r.family} library, {weights} base weights; needs {escape(needs)})")
        console.print(f"  {escape(r.summary)}", highlight=False)
        console.print(f"  [dim]changes:[/] {escape(r.changes)}", highlight=False)


def presets():
    """The named sets of runs `bench run --preset` takes: each part, the claims it serves, what it sets."""
    for name, parts in PRESETS.items():
        console.print(f"[bold]{name}[/] (`bench run --preset {name}`, or one part: --preset {name}/PART)")
        for part in parts:
            tier = part.tier or "the run's tier"
            sizes = f"seq {part.seq_lens or 'tier default'} x batch {part.batch_sizes or 'tier default'}"
            extra = "".join(f", {k.replace('_', ' ')} {v}" for k, v in part.train.items())
            extra += f", {part.repeats} repeats" if part.repeats > 1 else ""
            claims = f" ({', '.join(part.claims)})" if part.claims else ""
            console.print(f"\n  [bold cyan]{part.name}[/]{claims}: {escape(part.what)}", highlight=False)
            console.print(f"    {tier}; {part.models}; {part.recipes} against {part.reference}; {sizes}{extra}",
                          highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(recipes)
    app.command()(presets)
