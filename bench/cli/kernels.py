"""`bench kernels-check`: which Unsloth (or Liger) kernels ran, which fell back, and what that costs.

    bench kernels-check --model llama-3.1-8b                        # one profiled step, verdicts
    bench kernels-check --model llama-3.1-8b --recipe hf-liger      # Liger's kernels (hf-trl + Liger)
    bench kernels-check --all-models --out reports/kernels.md       # coverage table (GPU)
    bench kernels-check --from-trace trace.json                     # classify a saved trace (no GPU)
    bench kernels-check --from-results reports/kernels/ --results reports/results/ --out reports/kernels.md

Exit codes (a model's status comes from the fresh run, or from the saved results it renders):
  0  every model's status is ok;
  1  some model's training step failed (status error, oom or timeout) and none failed to load;
  2  bad input (flags, unknown model, tier or recipe, no CUDA GPU for --model / --all-models, the
     recipe's library not installed, an unreadable trace, result, --results or --benchmark file),
     or a model the recipe could not load (status load_failed);
  130 interrupted.
The coverage table (--out) is written whenever the results were read, also under 1 and 2.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer

from bench.cli.common import UsageFailure, check_writable, console, err_console

from bench.config.models import SHIPPED, resolve_model
from bench.config.tiers import get_tier, plan_tier
from bench.render.kernels import benchmark_markdown, coverage_markdown, print_analysis
from bench.run.device import detect_host_gpu
from bench.run.kernels import KERNEL_RECIPES, CheckOptions, check_models, result_stem
from bench.run.recipes import RecipeUnavailable, check_available
from bench.schema.record import ResultsError
from bench.schema.store import load
from kernels_check.benchmarks import BenchmarkFileError, load_benchmark, parse_pytest_log
from kernels_check.result import DEFAULT_RECIPE, analyse, load_results, result_from_trace, write_result
from kernels_check.trace import TraceError

ALL_MODELS = tuple(n for n in SHIPPED if n != "tiny-llama")  # --all-models: every shipped architecture


def register(app: typer.Typer) -> None:
    app.command("kernels-check")(kernels_check)


def kernels_check(
    model: Optional[str] = typer.Option(None, "--model", help="Comma list of models (shipped names, config .json, dirs)."),
    all_models: bool = typer.Option(False, "--all-models", help="Every shipped architecture (not the test model)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the coverage table (markdown) here."),
    gpu_tier: Optional[str] = typer.Option(None, "--gpu-tier", help="Tier to run as (default: the present GPU's)."),
    recipe: Optional[str] = typer.Option(
        None, "--recipe", help="The recipe whose kernels to profile: unsloth (default; Unsloth's) or hf-liger "
                               "(Liger's); with --from-trace, the recipe the traces ran."),
    from_trace: Optional[list[Path]] = typer.Option(
        None, "--from-trace", help="Classify saved traces instead (Chrome trace .json/.json.gz, excerpt, or result)."),
    from_results: Optional[list[Path]] = typer.Option(
        None, "--from-results", help="Render from saved kernels-check results (files or directories)."),
    results: Optional[list[Path]] = typer.Option(
        None, "--results", help="Run records (JSONL files or directories) for the speed-up, memory reduction and F2 rows."),
    save_dir: Optional[Path] = typer.Option(
        None, "--save-dir", help="Keep each model's result JSON (kernel excerpt incl.) and worker log here."),
    seq_len: int = typer.Option(1024, "--seq-len", help="Sequence length of the profiled step."),
    batch_size: int = typer.Option(1, "--batch-size", help="Micro-batch size of the profiled step."),
    warmup_steps: int = typer.Option(2, "--warmup-steps", help="Untimed steps first (compilation)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Synthetic checkpoint cache."),
    timeout: float = typer.Option(900.0, "--timeout", help="Seconds allowed per model."),
    detail: bool = typer.Option(False, "--detail", help="Print the top kernels of every fast path."),
    benchmark: Optional[Path] = typer.Option(
        None, "--benchmark", help="Kernel tests' pytest-benchmark JSON: adds the micro-benchmark section."),
    test_log: Optional[Path] = typer.Option(
        None, "--test-log", help="The kernel tests' pytest output: adds their outcome and failures."),
):
    """Profile one training step per model (Unsloth's recipe, or --recipe hf-liger) and say which kernels
    ran, fell back, or are unknown.

    Exit codes (also for saved results): 0 every model ok; 1 a model's step failed (error, oom,
    timeout); 2 bad input, or a model the recipe could not load (load_failed); 130 interrupted.
    """
    check_writable(out, "--out")
    check_writable(save_dir / ".probe" if save_dir else None, "--save-dir")

    modes = sum(bool(x) for x in (model or all_models, from_trace, from_results))
    if modes != 1:
        raise UsageFailure("kernels-check needs exactly one of --model / --all-models, --from-trace, --from-results")
    if model and all_models:
        raise UsageFailure("give --model or --all-models, not both")
    if out is not None and out.suffix != ".md":
        raise UsageFailure(f"--out {out}: use a .md file name")
    if recipe is not None and from_results:
        raise UsageFailure("--recipe goes with --model / --all-models / --from-trace (saved results name their recipe)")
    kernel_recipe = _kernel_recipe(recipe or DEFAULT_RECIPE)
    records = _load_records(results)
    extra = _benchmark_section(benchmark, test_log)
    try:
        if from_trace:
            checked = [result_from_trace(p) for p in from_trace]
            for r in checked:
                r.setdefault("recipe", kernel_recipe)
        elif from_results:
            checked = load_results(from_results)
        else:
            names = list(ALL_MODELS) if all_models else [m.strip() for m in model.split(",") if m.strip()]
            opts = CheckOptions(recipe=kernel_recipe, seq_len=seq_len, batch_size=batch_size,
                                warmup_steps=warmup_steps, timeout_s=timeout,
                                cache_dir=str(cache_dir) if cache_dir else None)
            checked = _run_on_gpu(names, gpu_tier, save_dir, opts)
    except TraceError as exc:
        raise UsageFailure(str(exc)) from None
    exit_code = _report(checked, records, out, detail, extra)
    if exit_code:
        raise typer.Exit(exit_code)


def _load_records(paths: Optional[list[Path]]) -> list:
    """Run records of --results files and directories (every *.jsonl in a directory)."""
    files: list[Path] = []
    for p in paths or []:
        if p.is_dir():
            found = sorted(p.glob("*.jsonl"))
            if not found:
                raise ResultsError(f"--results {p}: no *.jsonl files in this directory")
            files.extend(found)
        else:
            files.append(p)
    return load(files) if files else []


def _kernel_recipe(text: str) -> str:
    name = str(text).strip().lower()
    if name not in KERNEL_RECIPES:
        raise UsageFailure(f"--recipe {text!r}: kernels-check profiles a recipe with kernels of its own: "
                           f"{', '.join(KERNEL_RECIPES)}")
    return name


def _run_on_gpu(names: list[str], gpu_tier, save_dir, opts: CheckOptions) -> list[dict]:
    """Check `names` on the present GPU, one worker per model; their results (saved under --save-dir)."""
    seq_len, batch_size, warmup_steps = opts.seq_len, opts.batch_size, opts.warmup_steps
    if not names:
        raise UsageFailure("--model: no model given")
    refs = [resolve_model(n) for n in names]  # ModelError: unknown model -> exit 2
    for ref in refs:
        ref.target_modules()  # ModelError for an architecture without default LoRA targets
        if ref.max_positions and seq_len > ref.max_positions:
            raise UsageFailure(f"--seq-len {seq_len} is over {ref.name}'s {ref.max_positions} positions")
    if seq_len <= 0 or batch_size <= 0 or warmup_steps < 1:
        raise UsageFailure("--seq-len and --batch-size must be > 0, --warmup-steps >= 1")
    host = detect_host_gpu()
    if host is None:
        raise UsageFailure(f"no CUDA GPU found: kernels-check profiles {opts.recipe} on a GPU. "
                           "Use --from-trace FILE to classify a saved trace, or --from-results DIR to render saved results.")
    try:
        check_available(opts.recipe, "cuda")
    except RecipeUnavailable as exc:
        raise UsageFailure(str(exc)) from None
    tier = get_tier(gpu_tier) if gpu_tier else host.tier
    if tier is None:
        raise UsageFailure(f"the present GPU ({host.name}) matches no known tier: pass --gpu-tier (see `bench tiers`)")
    plan = plan_tier(tier, host, "cuda")  # TierError when it cannot run here
    log_dir = Path(save_dir) if save_dir else Path(tempfile.mkdtemp(prefix="qlora-bench-kernels-"))
    console.print(f"[bold]kernels-check[/] {opts.recipe}, {len(refs)} model(s) on {host.name} as tier "
                  f"[cyan]{plan.tier.name}[/] ({plan.mode}, {plan.dtype}), one profiled step at s{seq_len} "
                  f"b{batch_size}; logs in {log_dir}")
    checked = check_models(refs, plan, opts, log_dir, on_status=lambda name, text: console.print(f"  {name}: {text}"))
    if save_dir:
        for r in checked:
            write_result(Path(save_dir) / f"{result_stem(r['model'], opts.recipe)}.json", r)
    return checked


def _benchmark_section(benchmark: Optional[Path], test_log: Optional[Path]) -> list[str]:
    """Markdown lines for the kernel tests (empty without --benchmark); bad files exit 2."""

    if benchmark is None:
        if test_log is not None:
            raise UsageFailure("--test-log goes with --benchmark (the kernel tests' pytest-benchmark JSON)")
        return []
    try:
        data = load_benchmark(benchmark)
    except BenchmarkFileError as exc:
        raise UsageFailure(str(exc)) from None
    failures, summary = {}, None
    if test_log is not None:
        try:
            failures, summary = parse_pytest_log(test_log.read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            raise UsageFailure(f"--test-log {test_log}: {exc.strerror or exc}") from None
    return benchmark_markdown(data, failures, summary, source=str(benchmark),
                              log_source=str(test_log) if test_log else "")


def _report(results: list[dict], records: list, out: Optional[Path], detail: bool, extra: list[str]) -> int:
    """Print each model's verdicts, write the markdown; return the exit code (see the module docstring)."""

    code = 0
    analyses = [analyse(r) for r in results]
    for r, a in zip(results, analyses):
        print_analysis(console, a, detail)
        if r.get("status") == "load_failed":
            err_console.print(f"[bold red]error:[/] {r.get('error')}")
            code = 2
        elif r.get("status") != "ok":
            err_console.print(f"[bold red]{r['model']}: {r.get('status')}[/] {r.get('error')}")
            code = max(code, 1)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(coverage_markdown(analyses, records, extra_sections=extra), encoding="utf-8")
        console.print(f"coverage table: {out}")
    return code
