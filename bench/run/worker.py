"""Worker subprocess: loads one recipe + model once, then trains the cells it is sent with the driver
the job names (TRL's SFTTrainer or the plain loop).

Protocol: the launcher writes one Cell as JSON per line on stdin; the worker answers with JSON
events on the file descriptor `--event-fd` (stdout and stderr go to a log file, since the
libraries print freely). Events: hello, status, loaded | load_failed, cell_start, step, record.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Optional

from bench.analysis import metrics as measure
from bench.analysis.stats import step_stats
from bench.config.models import ModelRef
from bench.run.checkpoint import parameter_counts
from bench.config.settings import Cell
from bench.config.tiers import tier_for_gpu_name
from bench.run.recipes import RecipeSettings
from bench.run.device import GpuProbe, NvmlPeakSampler, TimedWindow, peak_rss_bytes, setup_device
from bench.run.env import collect_env
from bench.run.loading import load_model
from bench.run.dataset import load_tokenized
from bench.run.drivers import TrainResult, TrainSpec, restore_trainable, snapshot_trainable, train
from bench.run.drivers.loop import train_loop
from bench.schema.gpu_state import state_warnings
from bench.schema.host_cpu import host_cpu_warnings
from bench.schema.record import SCHEMA_VERSION, ResultRecord
from bench.units import GiB
from kernels_check import summarize_fast_paths


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def allocator_warnings(retries: Optional[int]) -> list[str]:
    """A cell whose allocator had to free its cache and retry (torch's num_alloc_retries) ran under memory
    pressure: its slow steps may be those retries, as they would be on a real card with that memory."""
    if not retries:
        return []
    return [f"allocator retried {retries} time{'s' if retries != 1 else ''} after freeing its cached blocks (device "
            "memory nearly full, under the cap or the card): steps that retried are slower, so step times vary"]


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
    ev = Events(args.event_fd)
    try:
        if job["family"] == "unsloth":
            import unsloth  # noqa: F401  (must come before transformers: it patches it)
        return Worker(job, ev).serve()
    except BaseException as exc:  # anything before the cell loop
        ev.emit("load_failed", status="oom" if is_oom(exc) else "error", error=short_error(exc),
                traceback=traceback.format_exc()[-4000:])
        return 3


class Worker:
    def __init__(self, job: dict, ev: Events):
        self.job = job
        self.ev = ev
        self.on_cuda = job["device"] == "cuda"
        self.retries_before = 0  # torch's num_alloc_retries when the current cell started (it counts per process)
        self.fast_paths_summary: Optional[dict] = None  # profiled once per worker (one model), then reused
        self.gpu_probe: Optional[GpuProbe] = None  # NVML energy and GPU state, opened by the first cell on CUDA

    def serve(self) -> int:
        job = self.job
        self.env = collect_env()
        self.ev.emit("hello", pid=os.getpid(), env=self.env)
        self.sampler = NvmlPeakSampler()
        self.device_info = setup_device(job["device"], job["plan"]["memory_limit_bytes"], self.sampler)
        self.ref = ModelRef(**job["model_ref"])
        load = load_model(self.ref, job["recipe"], RecipeSettings(**job["recipe_settings"]), job["device"],
                          cache_dir=job.get("cache_dir"), on_status=lambda stage, text: self.ev.emit("status", text=text))
        self.loaded, self.load_s = load.loaded, load.load_s
        self.counts = parameter_counts(self.ref.config) if self.ref.config else None
        self.snapshot = snapshot_trainable(self.loaded.model)
        self.loaded.info.update(self.device_info, checkpoint_path=load.checkpoint_path,
                                checkpoint_build_s=round(load.build_s, 2), worker_pid=os.getpid())
        self.data = None
        if job.get("data"):
            self.ev.emit("status", text=f"tokenizing {job['data']['path']}")
            self.data = load_tokenized(job["data"]["path"], self.loaded.tokenizer,
                                       synthetic=self.ref.source == "synthetic", vocab_size=self.ref.vocab_size,
                                       seq_len=job["recipe_settings"]["max_seq_len"], packing=job["data"]["packing"])
        self.ev.emit("loaded", load_s=self.load_s, trainable_params=self.loaded.trainable_params)
        for line in sys.stdin:
            if not line.strip():
                continue
            cell = Cell.from_dict(json.loads(line))
            self.ev.emit("cell_start", cell_id=cell.cell_id)
            record = self.run_cell(cell)
            self.ev.emit("record", record=asdict(record))
        return 0

    def new_record(self, cell: Cell) -> ResultRecord:
        t, job = cell.train, self.job
        return ResultRecord(
            schema_version=SCHEMA_VERSION, run_id=job["run_id"], cell_id=cell.cell_id, pair_key=cell.pair_key,
            backend=cell.backend, recipe=cell.recipe, driver=t.driver, model=cell.model,
            model_source=self.ref.source, tier=cell.tier, mode=cell.mode, seq_len=cell.seq_len,
            batch_size=cell.batch_size, grad_accum=t.grad_accum, lora_r=t.lora_r, lora_alpha=t.lora_alpha,
            lora_dropout=t.lora_dropout, target_modules=list(cell.target_modules), optimizer=t.optimizer,
            learning_rate=t.learning_rate, gradient_checkpointing=cell.gradient_checkpointing, dtype=cell.dtype,
            attn_implementation=job["recipe_settings"]["attn_implementation"], steps=t.steps,
            warmup_steps=t.warmup_steps, seed=t.seed, status="ok", started_at=now_iso(), env=self.env,
            repeat=job.get("repeat", 0), repeats=job.get("repeats", 1), min_seconds=t.min_seconds,
            load_s=round(self.load_s, 3), trainable_params=self.loaded.trainable_params,
            total_params=self.loaded.total_params, quantization=self.loaded.quantization,
            backend_info=dict(self.loaded.info), tokens_per_step=cell.tokens_per_step,
            memory_limit_bytes=job["plan"]["memory_limit_bytes"],
            torch_memory_fraction=self.device_info.get("torch_memory_fraction"),
            data=self.data_info(cell))

    def data_info(self, cell: Cell) -> Optional[dict]:
        if self.data is None:
            return None
        info = self.data.info.to_dict()
        info["truncated"] = sum(1 for n in self.data.lengths if n > cell.seq_len)
        return info

    def spec(self, cell: Cell, total_steps: Optional[int] = None) -> TrainSpec:
        """The cell's training: its timed window, or exactly `total_steps` steps when given."""
        t = cell.train
        return TrainSpec(device=self.job["device"], dtype=cell.dtype, optimizer=t.optimizer,
                         learning_rate=t.learning_rate, seed=t.seed, batch_size=cell.batch_size,
                         seq_len=cell.seq_len, grad_accum=t.grad_accum,
                         total_steps=total_steps or t.warmup_steps + t.steps, vocab_size=self.ref.vocab_size,
                         checkpointing=cell.gradient_checkpointing, recipe=cell.recipe,
                         rows=[ids[:cell.seq_len] for ids in self.data.input_ids] if self.data else None,
                         packing=bool(t.packing), warmup_steps=t.warmup_steps,
                         min_seconds=0.0 if total_steps else t.min_seconds,
                         max_steps=None if total_steps else t.warmup_steps + t.max_timed_steps)

    def run_cell(self, cell: Cell) -> ResultRecord:
        import torch

        rec = self.new_record(cell)
        restore_trainable(self.loaded.model, self.snapshot)
        gc.collect()
        if self.on_cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.retries_before = int(torch.cuda.memory_stats().get("num_alloc_retries", 0))  # cumulative per process
        self.sampler.start()
        result, failure = None, None
        on_step = self.step_events(cell)
        window = self.timed_window(cell)
        try:
            result = train(cell.train.driver, self.loaded.model, self.loaded.tokenizer, self.spec(cell),
                           initial=self.snapshot, on_step=window.wrap(on_step))
        except Exception as exc:  # noqa: BLE001 - every failure becomes this cell's status
            failure = ("oom" if self.on_cuda and is_oom(exc) else "error", short_error(exc), traceback.format_exc())
            del exc
        window.finish()
        self.read_memory(rec)
        if failure:
            self.record_failure(rec, *failure)
        if result is not None:
            self.record_result(rec, cell, result)
        self.record_speed(rec, cell)
        self.record_gpu_state(rec, cell, window)
        self.record_fast_paths(rec, cell)
        rec.finished_at = now_iso()
        self.loaded.model.zero_grad(set_to_none=True)
        gc.collect()
        if self.on_cuda:
            torch.cuda.empty_cache()
        return rec

    def step_events(self, cell: Cell):
        """The drivers' on_step(i, seconds, loss) callback: a `step` event per optimizer step, with the timed
        window's state: `of` the steps in all when the window has only a step count (no --min-seconds),
        else None (open-ended: kept for launchers of an older version, on a cluster); `min_of` warm-up + minimum
        steps, `timed_s` the seconds of timed steps so far and `min_seconds`."""
        t = cell.train
        timed_s = 0.0
        min_of = t.warmup_steps + t.steps

        def on_step(i: int, seconds: float, loss: float) -> None:
            nonlocal timed_s
            if i >= t.warmup_steps:
                timed_s += seconds
            self.ev.emit("step", cell_id=cell.cell_id, step=i, of=None if t.min_seconds else min_of, min_of=min_of,
                         warmup=t.warmup_steps, timed_s=timed_s, min_seconds=t.min_seconds,
                         seconds=seconds, loss=loss)

        return on_step

    def read_memory(self, rec: ResultRecord) -> None:
        peak_device = self.sampler.stop()
        if self.on_cuda:
            import torch

            rec.peak_allocated_bytes = int(torch.cuda.max_memory_allocated())
            rec.peak_reserved_bytes = int(torch.cuda.max_memory_reserved())
            rec.peak_device_bytes = peak_device
            rec.device_memory_source = self.sampler.source
            rec.allocator_retries = int(torch.cuda.memory_stats().get("num_alloc_retries", 0)) - self.retries_before
            rec.warnings += allocator_warnings(rec.allocator_retries)
        rec.peak_rss_bytes = peak_rss_bytes()
        limit = self.job["plan"]["memory_limit_bytes"]
        if self.on_cuda and limit and peak_device is not None:
            rec.over_tier_memory = peak_device > limit
            if rec.over_tier_memory:
                rec.warnings.append(
                    f"device peak {peak_device / GiB:.2f} GiB exceeded the {self.job['plan']['tier']} memory "
                    f"({limit / GiB:.2f} GiB) outside the torch cap: a real card would likely have run out of memory")

    def record_failure(self, rec: ResultRecord, status: str, error: str, tb: str) -> None:
        limit = self.job["plan"]["memory_limit_bytes"]
        rec.status, rec.error = status, error
        if status == "oom" and limit:
            rec.error = f"OOM at {limit / GiB:.2f} GiB cap ({self.job['plan']['tier']}): {error}"
        rec.backend_info["traceback_tail"] = tb[-3000:]

    def record_result(self, rec: ResultRecord, cell: Cell, result: TrainResult) -> None:
        warm = cell.train.warmup_steps
        rec.step_s = [round(s, 6) for s in result.step_s]
        rec.step_tokens = list(result.step_tokens)
        finite = [x if math.isfinite(x) else None for x in result.losses]
        rec.losses = finite
        rec.first_step_s = round(result.step_s[0], 6) if result.step_s else None
        rec.loss_first, rec.loss_last = (finite[0], finite[-1]) if finite else (None, None)
        rec.tokens_per_s = measure.throughput(result.step_tokens[warm:], result.step_s[warm:])
        rec.tokens_per_s_padded = measure.throughput(result.step_tokens_padded[warm:], result.step_s[warm:])
        rec.training_fingerprint = result.fingerprint or None
        rec.warnings += result.warnings
        if rec.ok and any(x is None for x in finite):
            bad = next(i for i, x in enumerate(finite) if x is None)
            rec.status, rec.error = "nan_loss", f"the loss of optimizer step {bad + 1} is not finite"
        self.record_window(rec, cell, rec.step_s[warm:])  # the stored (rounded) times: readers recompute the same
        if rec.ok and len(result.step_s) < cell.train.warmup_steps + cell.train.steps:
            rec.status, rec.error = "error", f"only {len(result.step_s)} optimizer steps ran"

    def record_window(self, rec: ResultRecord, cell: Cell, timed_s: list[float]) -> None:
        """The timed window's step count and statistics (bench.analysis.stats.step_stats); a warning when it
        stopped at --max-steps before --min-seconds."""
        stats = step_stats(timed_s)
        rec.timed_steps = stats.n
        rec.step_s_median, rec.step_s_p20, rec.step_s_p80 = stats.median_s, stats.p20_s, stats.p80_s
        rec.step_s_cv = stats.cv
        t = cell.train
        if stats.n >= t.max_timed_steps and sum(timed_s) < t.min_seconds:
            rec.warnings.append(f"the timed window stopped at --max-steps {t.max_timed_steps} after "
                                f"{sum(timed_s):.2f} s, before --min-seconds {t.min_seconds:g}")

    def record_speed(self, rec: ResultRecord, cell: Cell) -> None:
        """Model and hardware FLOPs per token, and MFU / HFU against the host GPU's peak (bench/analysis/metrics.py)."""
        if self.counts:
            layers, width = measure.attention_dims(self.ref.config)
            matmul, head = self.counts["matmul"], self.counts.get("head", 0)
            rec.flops_per_token = measure.flops_per_token(matmul, layers, width, cell.seq_len)
            rec.hardware_flops_per_token = measure.hardware_flops_per_token(
                matmul, head, layers, width, cell.seq_len, checkpointing=cell.gradient_checkpointing != "none")
        if self.on_cuda:
            host_tier = tier_for_gpu_name(self.env.get("gpu_name") or "")
            rec.peak_tflops = host_tier.peak_tflops(cell.dtype) if host_tier else None
            rec.mfu = measure.mfu(rec.flops_per_token, rec.tokens_per_s, rec.peak_tflops)
            rec.hfu = measure.hfu(rec.hardware_flops_per_token, rec.tokens_per_s_padded or rec.tokens_per_s,
                                  rec.peak_tflops)

    def timed_window(self, cell: Cell) -> TimedWindow:
        """The NVML reads around this cell (energy, the GPU's state), begun: nothing is read on a CPU or without NVML."""
        if self.on_cuda and self.gpu_probe is None:
            self.gpu_probe = GpuProbe()
            self.gpu_probe.open(uuid=self.device_info.get("gpu_uuid"))
        window = TimedWindow(self.gpu_probe, cell.train.warmup_steps)
        window.begin()
        return window

    def record_gpu_state(self, rec: ResultRecord, cell: Cell, window: TimedWindow) -> None:
        """The GPU's state, its warnings (another process, throttling), the host's CPU load and its warning (other
        processes busy on the host), and the energy of the timed steps: joules
        from the end of the warm-up to the last timed step's end, per 1,000 non-padding tokens of those steps."""
        rec.gpu_state = window.state()
        rec.warnings += state_warnings(rec.gpu_state)
        rec.host_cpu = window.host_cpu()
        rec.warnings += host_cpu_warnings(rec.host_cpu)
        rec.energy_j = window.energy_j
        if rec.energy_j is not None and window.energy_end_step is not None:
            tokens = sum(rec.step_tokens[cell.train.warmup_steps:window.energy_end_step + 1])
            rec.joules_per_1k_tokens = measure.joules_per_1k_tokens(rec.energy_j, tokens)

    def record_fast_paths(self, rec: ResultRecord, cell: Cell) -> None:
        """Which kernels a loaded model runs is the model's, not the cell size's: profile the first ok cell
        of a recipe with kernels of its own (Unsloth's, Liger's) once, and name that cell in the summary
        the later records carry (the extra step, trace export and parse cost as much as the timed steps)."""
        if not (self.job.get("fast_paths") and self.on_cuda and rec.ok
                and (cell.backend == "unsloth" or cell.recipe == "hf-liger")):
            return
        if self.fast_paths_summary is None:
            summary = self.fast_paths(cell)
            if "_error" in summary:
                rec.fast_paths = summary
                return
            self.fast_paths_summary = dict(summary, _profiled_cell=cell.cell_id)
        rec.fast_paths = dict(self.fast_paths_summary)

    def fast_paths(self, cell: Cell) -> dict:
        """Which kernels one more (profiled, untimed) training step of the plain loop runs, after all
        measurements."""
        spec = self.spec(cell, total_steps=1)
        try:
            return summarize_fast_paths(self.loaded.model, lambda: train_loop(self.loaded.model, spec),
                                        log_text=self.loaded.info.get("banner"))
        except Exception as exc:  # noqa: BLE001 - the measurement stands without the summary
            return {"_error": short_error(exc)}


if __name__ == "__main__":
    sys.exit(main())
