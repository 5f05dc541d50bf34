"""Worker subprocess: loads one backend + model once, then trains the cells it is sent.

Protocol: the launcher writes one Cell as JSON per line on stdin; the worker answers with JSON
events on the file descriptor `--event-fd` (stdout and stderr go to a log file, since the
libraries print freely). Events: hello, status, loaded | load_failed, cell_start, step, record.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Optional

from bench.analysis import metrics as measure
from bench.config.models import ModelRef
from bench.run.checkpoint import parameter_counts
from bench.config.settings import Cell
from bench.config.tiers import tier_for_gpu_name
from bench.run.backends import BackendSettings
from bench.run.device import NvmlPeakSampler, peak_rss_bytes, setup_device
from bench.run.env import collect_env
from bench.run.loading import load_model
from bench.run.train import restore_trainable, snapshot_trainable, train_steps
from bench.schema.record import SCHEMA_VERSION, ResultRecord
from kernels_check import summarize_fast_paths


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Events:
    def __init__(self, fd: int):
        self.fd = fd

    def emit(self, event: str, **data) -> None:
        line = json.dumps({"event": event, **data}, default=str) + "\n"
        os.write(self.fd, line.encode())


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "cuda error: out of memory" in text


def short_error(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:500]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run.worker")
    parser.add_argument("--job", required=True)
    parser.add_argument("--event-fd", type=int, required=True)
    args = parser.parse_args(argv)
    with open(args.job) as fh:
        job = json.load(fh)
    if job["backend"] == "unsloth":
        import unsloth  # noqa: F401  (must come before transformers: it patches it)
    ev = Events(args.event_fd)
    try:
        return Worker(job, ev).serve()
    except BaseException as exc:  # anything before the cell loop
        ev.emit("load_failed", status="oom" if is_oom(exc) else "error", error=short_error(exc),
                traceback=traceback.format_exc()[-4000:])
        return 3


class Worker:
    def __init__(self, job: dict, ev: Events):
        self.job = job
        self.ev = ev
        self.fast_paths_summary: Optional[dict] = None  # profiled once per worker (one model), then reused

    def serve(self) -> int:

        job = self.job
        self.env = collect_env()
        self.ev.emit("hello", pid=os.getpid(), env=self.env)
        self.sampler = NvmlPeakSampler()
        self.device_info = setup_device(self.job["device"], self.job["plan"]["memory_limit_bytes"], self.sampler)
        ref = ModelRef(**job["model_ref"])
        load = load_model(ref, job["backend"], BackendSettings(**job["backend_settings"]), job["device"],
                          cache_dir=job.get("cache_dir"),
                          on_status=lambda stage, text: self.ev.emit("status", text=text))
        path, build_s = load.checkpoint_path, load.build_s
        self.loaded = load.loaded
        self.load_s = load.load_s
        self.ref = ref
        self.counts = parameter_counts(ref.config) if ref.config else None
        self.snapshot = snapshot_trainable(self.loaded.model)
        self.loaded.info.update(self.device_info, checkpoint_path=path, checkpoint_build_s=round(build_s, 2))
        self.ev.emit("loaded", load_s=self.load_s, trainable_params=self.loaded.trainable_params)
        for line in sys.stdin:
            if not line.strip():
                continue
            cell = Cell.from_dict(json.loads(line))
            self.ev.emit("cell_start", cell_id=cell.cell_id)
            record = self.run_cell(cell)
            self.ev.emit("record", record=asdict(record))
        return 0

    def run_cell(self, cell):
        import torch


        job = self.job
        t = cell.train
        on_cuda = job["device"] == "cuda"
        plan = job["plan"]
        rec = ResultRecord(
            schema_version=SCHEMA_VERSION, run_id=job["run_id"], cell_id=cell.cell_id, pair_key=cell.pair_key,
            backend=cell.backend, model=cell.model, model_source=self.ref.source, tier=cell.tier, mode=cell.mode,
            seq_len=cell.seq_len, batch_size=cell.batch_size, grad_accum=t.grad_accum, lora_r=t.lora_r,
            lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout, target_modules=list(cell.target_modules),
            optimizer=t.optimizer, learning_rate=t.learning_rate, gradient_checkpointing=cell.gradient_checkpointing,
            dtype=cell.dtype, attn_implementation=job["backend_settings"]["attn_implementation"], steps=t.steps,
            warmup_steps=t.warmup_steps, seed=t.seed, status="ok", started_at=now_iso(), env=self.env,
            load_s=round(self.load_s, 3), trainable_params=self.loaded.trainable_params,
            total_params=self.loaded.total_params, quantization=self.loaded.quantization,
            backend_info=dict(self.loaded.info), tokens_per_step=cell.tokens_per_step,
            memory_limit_bytes=plan["memory_limit_bytes"],
            torch_memory_fraction=self.device_info.get("torch_memory_fraction"),
        )
        restore_trainable(self.loaded.model, self.snapshot)
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        self.sampler.start()
        result, failure = None, None
        try:
            result = train_steps(
                self.loaded.model, device=job["device"], dtype=cell.dtype, optimizer_name=t.optimizer,
                learning_rate=t.learning_rate, seed=t.seed, batch_size=cell.batch_size, seq_len=cell.seq_len,
                grad_accum=t.grad_accum, total_steps=t.warmup_steps + t.steps, vocab_size=self.ref.vocab_size,
                on_step=lambda i, s, loss: self.ev.emit("step", cell_id=cell.cell_id, step=i,
                                                        of=t.warmup_steps + t.steps, seconds=s, loss=loss),
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes this cell's status
            failure = ("oom" if on_cuda and is_oom(exc) else "error", short_error(exc), traceback.format_exc())
            del exc
        peak_device = self.sampler.stop()
        if on_cuda:
            rec.peak_allocated_bytes = int(torch.cuda.max_memory_allocated())
            rec.peak_reserved_bytes = int(torch.cuda.max_memory_reserved())
            rec.peak_device_bytes = peak_device
            rec.device_memory_source = self.sampler.source
        rec.peak_rss_bytes = peak_rss_bytes()
        if failure:
            rec.status, rec.error = failure[0], failure[1]
            if failure[0] == "oom" and plan["memory_limit_bytes"]:
                rec.error = f"OOM at {plan['memory_limit_bytes'] / 1024**3:.2f} GiB cap ({plan['tier']}): {failure[1]}"
            rec.backend_info["traceback_tail"] = failure[2][-3000:]
        if result is not None:
            rec.step_s = [round(s, 6) for s in result.step_s]
            rec.losses = result.losses
            rec.first_step_s = round(result.step_s[0], 6)
            rec.loss_first, rec.loss_last = result.losses[0], result.losses[-1]
            rec.tokens_per_s = measure.tokens_per_second(cell.tokens_per_step, result.step_s[t.warmup_steps:])
        if self.counts:
            layers, width = measure.attention_dims(self.ref.config)
            rec.flops_per_token = measure.flops_per_token(
                self.counts["matmul"], layers, width, cell.seq_len, cell.gradient_checkpointing != "none")
        if on_cuda:
            host_tier = tier_for_gpu_name(self.env.get("gpu_name") or "")
            rec.peak_tflops = host_tier.peak_tflops(cell.dtype) if host_tier else None
            rec.mfu = measure.mfu(rec.flops_per_token or 0, rec.tokens_per_s, rec.peak_tflops)
            if plan["memory_limit_bytes"] and peak_device is not None:
                rec.over_tier_memory = peak_device > plan["memory_limit_bytes"]
                if rec.over_tier_memory:
                    rec.warnings.append(
                        f"device peak {peak_device / 1024**3:.2f} GiB exceeded the {plan['tier']} memory "
                        f"({plan['memory_limit_bytes'] / 1024**3:.2f} GiB) outside the torch cap: "
                        "a real card would likely have run out of memory")
        if job.get("fast_paths") and on_cuda and rec.ok and cell.backend == "unsloth":
            # Which kernels a loaded model runs is the model's, not the cell size's: profile the first
            # ok cell only (the extra step, trace export and parse cost as much as a cell's timed
            # steps) and name that cell in the summary the later records carry.
            if self.fast_paths_summary is None:
                summary = self.fast_paths(cell)
                if "_error" in summary:
                    rec.fast_paths = summary
                else:
                    self.fast_paths_summary = dict(summary, _profiled_cell=cell.cell_id)
            if self.fast_paths_summary is not None:
                rec.fast_paths = dict(self.fast_paths_summary)
        rec.finished_at = now_iso()
        self.loaded.model.zero_grad(set_to_none=True)
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
        return rec

    def fast_paths(self, cell) -> dict:
        """Which kernels one more (profiled, untimed) training step runs, after all measurements."""

        t = cell.train

        def one_step():
            train_steps(self.loaded.model, device=self.job["device"], dtype=cell.dtype, optimizer_name=t.optimizer,
                        learning_rate=t.learning_rate, seed=t.seed, batch_size=cell.batch_size,
                        seq_len=cell.seq_len, grad_accum=t.grad_accum, total_steps=1,
                        vocab_size=self.ref.vocab_size)

        try:
            return summarize_fast_paths(self.loaded.model, one_step, log_text=self.loaded.info.get("banner"))
        except Exception as exc:  # noqa: BLE001 - the measurement stands without the summary
            return {"_error": short_error(exc)}


if __name__ == "__main__":
    sys.exit(main())
