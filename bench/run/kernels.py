"""Run kernels-check workers: one subprocess per model (never two recipe families, or two models, in one process).

The recipes it profiles are those with kernels of their own (KERNEL_RECIPES): unsloth (Unsloth's) and
hf-liger (Liger's)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from bench.config.recipes import get_recipe
from bench.run.checkpoint import default_cache_dir
from bench.run.workerproc import worker_env
from kernels_check.classify import RECIPE_KERNELS
from kernels_check.result import DEFAULT_RECIPE, RESULT_FORMAT

#: Recipes `bench kernels-check --recipe` takes: those that run a kernel library of their own.
KERNEL_RECIPES = tuple(RECIPE_KERNELS)


@dataclass(frozen=True)
class CheckOptions:
    """The one training step profiled per model (defaults match `bench run`'s TrainSettings)."""

    recipe: str = DEFAULT_RECIPE  # one of KERNEL_RECIPES
    seq_len: int = 1024
    batch_size: int = 1
    warmup_steps: int = 2  # untimed steps before the profiled one (the first compiles)
    optimizer: str = "adamw_8bit"
    learning_rate: float = 2e-4
    seed: int = 1234
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    gradient_checkpointing: str = "auto"  # auto: the recipe's own (bench.config.recipes.Recipe.checkpointing)
    timeout_s: float = 900.0  # per model: checkpoint build + load + warm-up + profile
    cache_dir: Optional[str] = None


def make_job(ref, tier_plan, opts: CheckOptions) -> dict:
    """The worker's job file for one resolved model (bench.config.models.ModelRef) on a bench.config.tiers.TierPlan."""
    recipe = get_recipe(opts.recipe)
    checkpointing = recipe.checkpointing if opts.gradient_checkpointing == "auto" else opts.gradient_checkpointing
    return {
        "recipe": recipe.name,
        "model_ref": asdict(ref),
        "cache_dir": str(opts.cache_dir or default_cache_dir()),
        "plan": tier_plan.to_dict(),
        "backend_settings": {
            "dtype": tier_plan.dtype, "device": "cuda", "lora_r": opts.lora_r, "lora_alpha": opts.lora_alpha,
            "lora_dropout": opts.lora_dropout, "target_modules": list(ref.target_modules()),
            "checkpointing": checkpointing, "max_seq_len": opts.seq_len, "seed": opts.seed,
            "attn_implementation": "sdpa", "trust_remote_code": False,
        },
        "train": {"seq_len": opts.seq_len, "batch_size": opts.batch_size, "warmup_steps": opts.warmup_steps,
                  "optimizer": opts.optimizer, "learning_rate": opts.learning_rate, "seed": opts.seed},
    }


def failure_result(job: dict, status: str, error: str, log_tail: str = "") -> dict:
    ref = job["model_ref"]
    recipe = get_recipe(job.get("recipe") or DEFAULT_RECIPE)
    return {"format": RESULT_FORMAT, "model": ref["name"], "model_type": (ref.get("config") or {}).get("model_type"),
            "model_source": ref.get("source"), "recipe": recipe.name, "backend": recipe.family, "status": status,
            "error": error,
            "profile": {"status": "skipped", "error": None, "step_s": None}, "kernels": [], "static": None,
            "log_tail": log_tail[-2000:]}


def run_worker(job: dict, log_path: Path, timeout_s: float) -> dict:
    """Run one worker to completion; return its result (or a failure result saying what happened)."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qlora-bench-kc-") as tmp:
        job_file = Path(tmp) / "job.json"
        out_file = Path(tmp) / "result.json"
        job_file.write_text(json.dumps(job))
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.run.kernels_worker", "--job", str(job_file), "--out", str(out_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=worker_env(job),
                start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return failure_result(job, "timeout", f"kernels-check took over {timeout_s:.0f} s",
                                      _tail(log_path))
        if out_file.is_file():
            try:
                result = json.loads(out_file.read_text())
            except json.JSONDecodeError as exc:
                return failure_result(job, "error", f"unreadable worker result: {exc}", _tail(log_path))
            if result.get("status") != "ok":
                result["log_tail"] = _tail(log_path)
            return result
        return failure_result(job, "error", f"worker exited with code {rc} without a result", _tail(log_path))


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return Path(path).read_bytes()[-n:].decode(errors="replace")
    except OSError:
        return ""


def result_stem(model: str, recipe: str) -> str:
    """A result's file name without suffix: the model, then the recipe unless it is unsloth (results
    written before recipes were Unsloth's and named after the model alone)."""
    safe = model.replace("/", "_")
    return safe if recipe == DEFAULT_RECIPE else f"{safe}.{recipe}"


def check_models(refs: list, tier_plan, opts: CheckOptions, log_dir: Path,
                 on_status: Optional[Callable[[str, str], None]] = None) -> list[dict]:
    """One worker per model, in order; results in the same order."""
    results = []
    for ref in refs:
        if on_status:
            on_status(ref.name, "starting worker")
        job = make_job(ref, tier_plan, opts)
        result = run_worker(job, Path(log_dir) / f"kernels-{result_stem(ref.name, opts.recipe)}.log", opts.timeout_s)
        results.append(result)
        if on_status:
            on_status(ref.name, result.get("status", "?"))
    return results
