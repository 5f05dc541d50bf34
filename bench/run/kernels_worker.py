"""Subprocess entry point of `bench kernels-check`: one model, one recipe with kernels of its own
(unsloth, unsloth-lora16: Unsloth's; hf-liger: Liger's).

    python -m bench.run.kernels_worker --job JOB.json --out RESULT.json

For Unsloth's recipes imports unsloth before transformers is imported (it patches transformers
globally, so a process never runs a second recipe family); hf-liger imports nothing first. Builds
the synthetic checkpoint and loads the model with `bench.run.loading.load_model(ref, recipe, ...)`
(the sequence bench.run.worker uses), runs the static check, trains the warm-up steps (compilation
happens there), then profiles one more steady-state step and writes a result JSON
(kernels_check.result) naming the recipe. A profiler failure keeps the static check and says so.
Exit code 0 when a result with status "ok" was written, 3 otherwise (the result still says why).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from importlib import metadata
import json
import sys
import time
import traceback

from bench.config.models import ModelRef
from bench.config.recipes import get_recipe
from bench.run.recipes import RecipeSettings
from bench.run.device import setup_device
from bench.run.env import collect_env
from bench.run.loading import load_model
from bench.run.drivers.common import TrainSpec
from bench.run.drivers.loop import train_loop
from bench.run.worker import is_oom, now_iso, short_error
from kernels_check.result import DEFAULT_RECIPE, RESULT_FORMAT, write_result
from kernels_check.static import inspect_model
from kernels_check.trace import kernel_stats, profile_last_step

LOAD_STAGES = ("start", "setup", "checkpoint", "load", "static")  # a failure here is a load failure


def base_result(job: dict) -> dict:
    ref = job["model_ref"]
    t = job["train"]
    plan = job["plan"]
    recipe = get_recipe(job.get("recipe") or DEFAULT_RECIPE)
    return {
        "format": RESULT_FORMAT,
        "model": ref["name"],
        "model_type": (ref.get("config") or {}).get("model_type"),
        "model_source": ref.get("source"),
        "recipe": recipe.name,
        "backend": recipe.family,
        "status": "error",
        "stage": "start",
        "error": None,
        "cell": {"seq_len": t["seq_len"], "batch_size": t["batch_size"], "dtype": job["backend_settings"]["dtype"],
                 "tier": plan["tier"], "mode": plan["mode"], "warmup_steps": t["warmup_steps"],
                 "optimizer": t["optimizer"], "gradient_checkpointing": job["backend_settings"]["checkpointing"],
                 "lora_r": job["backend_settings"]["lora_r"],
                 "target_modules": list(job["backend_settings"]["target_modules"])},
        "profile": {"status": "skipped", "error": None, "step_s": None},
        "kernels": [],
        "static": None,
        "backend_info": {},
        "env": {},
        "started_at": now_iso(),
        "finished_at": None,
    }


def run(job: dict, result: dict) -> None:
    import torch

    result["env"] = collect_env()
    recipe = result["recipe"]
    if not torch.cuda.is_available():
        raise RuntimeError(f"no CUDA GPU: kernels-check profiles {recipe} on a GPU")
    result["stage"] = "setup"
    result["backend_info"].update(setup_device("cuda", job["plan"].get("memory_limit_bytes")))
    ref = ModelRef(**job["model_ref"])
    load = load_model(ref, recipe, RecipeSettings(**job["backend_settings"]), "cuda",
                      cache_dir=job.get("cache_dir"), on_status=lambda stage, text: result.update(stage=stage))
    if ref.source == "synthetic":
        result["backend_info"]["checkpoint_build_s"] = round(load.build_s, 2)
    result["backend_info"]["load_s"] = round(load.load_s, 2)
    loaded = load.loaded
    info = dict(loaded.info)
    info.pop("banner", None)
    result["backend_info"].update(info)

    result["stage"] = "static"
    static = inspect_model(loaded.model, log_text=loaded.info.get("banner"))
    log = static["log"]  # the backend's own capture wins where the banner text was cut
    if not log.get("fast_name") and loaded.info.get("patching_banner"):
        log["fast_name"] = loaded.info["patching_banner"]
    if not log.get("patched") and loaded.info.get("patched_layers"):
        log["patched"] = dict(loaded.info["patched_layers"], reason=None)
    result["static"] = static

    t = job["train"]
    spec = TrainSpec(device="cuda", dtype=job["backend_settings"]["dtype"], optimizer=t["optimizer"],
                     learning_rate=t["learning_rate"], seed=t["seed"], batch_size=t["batch_size"],
                     seq_len=t["seq_len"], grad_accum=1, total_steps=t["warmup_steps"], vocab_size=ref.vocab_size,
                     checkpointing=job["backend_settings"]["checkpointing"], recipe=recipe)
    result["stage"] = "warmup"
    started = time.perf_counter()
    warm = train_loop(loaded.model, spec)
    result["warmup_step_s"] = [round(s, 4) for s in warm.step_s]
    result["warmup_s"] = round(time.perf_counter() - started, 2)
    result["status"] = "ok"  # the model loaded and trains; what follows only adds evidence

    result["stage"] = "profile"
    try:
        # A fresh train_loop call makes a fresh optimizer: its first step (state allocation) is the
        # profiler's warm-up, the second, steady-state step is the one recorded.
        trace, step_s = profile_last_step(
            lambda step_done: train_loop(loaded.model, replace(spec, total_steps=2),
                                         on_step=lambda i, s, loss: step_done()),
            warmup=1)
        kernels = kernel_stats(trace)
        if not kernels:
            raise RuntimeError("the profiler recorded no GPU kernels (CUPTI unavailable?)")
        result["kernels"] = [k.to_dict() for k in kernels]
        result["profile"] = {"status": "ok", "error": None, "step_s": round(step_s, 4),
                             "activities": ["cpu", "cuda"], "events": sum(k.count for k in kernels)}
    except Exception as exc:  # noqa: BLE001 - degrade to the static check, and say so
        result["profile"] = {"status": "failed", "error": short_error(exc), "step_s": None,
                             "traceback_tail": traceback.format_exc()[-2000:]}
    result["stage"] = "done"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run.kernels_worker")
    parser.add_argument("--job", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with open(args.job) as fh:
        job = json.load(fh)
    result = base_result(job)
    if result["backend"] == "unsloth":
        try:
            import unsloth  # noqa: F401  (before transformers: it patches it)

            result["backend_info"]["unsloth_version"] = getattr(unsloth, "__version__", None)
        except BaseException as exc:  # ImportError, or Unsloth's own "no GPU" errors at import
            result.update(status="load_failed", stage="import",
                          error=f"cannot import unsloth ({short_error(exc)})",
                          traceback_tail=traceback.format_exc()[-2000:], finished_at=now_iso())
            write_result(args.out, result)
            return 3
    elif result["recipe"] == "hf-liger":
        try:
            result["backend_info"]["liger_version"] = metadata.version("liger-kernel")
        except metadata.PackageNotFoundError:
            pass  # the recipe's own check (bench.run.recipes.check_available) names the extra to install
    try:
        run(job, result)
    except BaseException as exc:  # noqa: BLE001 - every failure ends up in the result
        stage = result.get("stage")
        if stage in LOAD_STAGES:
            result["status"] = "load_failed"
            who = "Unsloth" if result["backend"] == "unsloth" else result["recipe"]
            result["error"] = f"{who} could not load {result['model']} ({stage}): {short_error(exc)}"
        else:
            result["status"] = "oom" if is_oom(exc) else "error"
            result["error"] = f"{stage}: {short_error(exc)}"
        result["traceback_tail"] = traceback.format_exc()[-3000:]
    result["finished_at"] = now_iso()
    write_result(args.out, result)
    return 0 if result["status"] == "ok" else 3


if __name__ == "__main__":
    sys.exit(main())
