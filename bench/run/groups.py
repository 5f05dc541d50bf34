"""One worker group: the cells of one recipe x model, run in order (smallest first) on one worker
subprocess, on one GPU. A GroupJob is plain data, so an executor can run it in a thread of the launcher
or in a task on another machine (Dask); `run_group` reports what happens through `emit(event)`:

- {"kind": "status", "cell_id", "text"}: progress for the console;
- {"kind": "cell_start", "cell_id"}: the worker took a cell (concurrency accounting);
- {"kind": "record", "record": dict}: a finished cell (ok or not), for the launcher to write.

Crashes, timeouts and load failures become the cell's status; cells at least as large as one that ran
out of memory are recorded as skipped (skip_dominated); the run goes on.
"""

from __future__ import annotations

import os
import re
import socket
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from bench.config.settings import Cell, dominates
from bench.run.workerproc import INTERRUPTED, WorkerProcess
from bench.schema.record import SCHEMA_VERSION, ResultRecord

Emit = Callable[[dict], None]


@dataclass
class GpuSlot:
    """The physical GPU a worker runs on (its NVML index and UUID); None index: whatever is visible."""

    index: Optional[int] = None
    uuid: Optional[str] = None
    name: Optional[str] = None


@dataclass
class GroupJob:
    run_id: str
    recipe: str
    model_source: str
    cells: list[dict]  # Cell.to_dict(), in run order
    worker_job: dict  # what bench.run.worker reads (the launcher's job_for)
    log_path: str
    cell_timeout_s: float
    load_timeout_s: float
    skip_dominated: bool = True
    isolate_cells: bool = False
    finished: list[str] = field(default_factory=list)  # cell ids already finished (resume): not run
    oom_cells: list[str] = field(default_factory=list)  # cell ids that ran out of memory before (resume)
    memory_limit_bytes: Optional[int] = None
    attn_implementation: str = "sdpa"
    launcher_env: dict = field(default_factory=dict)  # env for records written without a worker's hello
    repeat: int = 0  # which measurement of its cells this group's fresh worker makes (0-based)
    repeats: int = 1


EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning))(: .*)?$")


def exit_cause(returncode: int, log_text: str) -> str:
    """Why a worker process ended, in one line: killed by the OS, or the last exception its log shows."""
    if returncode in (-9, 137):
        return "killed by the OS (SIGKILL; out of host memory?)"
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    exc = next((ln for ln in reversed(lines) if EXCEPTION_LINE.match(ln) and "Warning" not in ln.split(":")[0]),
               None)
    return f"worker exited with code {returncode}" + (f": {exc[:300]}" if exc else "")


def step_text(ev: dict) -> str:
    """A worker's `step` event for the console: 'warm-up 1/2', then the timed window's steps against its
    minimum, and its seconds against --min-seconds while it asks for some ('step 7/10+ 4.2/10 s'), and
    the loss. An event of an older worker (only `of`) reads 'step 3/6'."""
    loss = f"  loss {ev['loss']:.4f}" if ev.get("loss") is not None else ""
    if "min_of" not in ev:
        return f"step {ev['step'] + 1}/{ev['of']}{loss}"
    warm, step = ev["warmup"], ev["step"] + 1
    if step <= warm:
        return f"warm-up {step}/{warm}{loss}"
    timed, least = step - warm, ev["min_of"] - warm
    if not ev.get("min_seconds"):
        return f"step {timed}/{least}{loss}"
    return f"step {timed}/{least}+ {ev['timed_s']:.1f}/{ev['min_seconds']:g} s{loss}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class GroupRun:
    """Runs a GroupJob (see the module docstring); `slot` places its worker on one GPU."""

    def __init__(self, job: GroupJob, emit: Emit, slot: Optional[GpuSlot] = None, cell_lock=None):
        self.job, self.emit, self.slot = job, emit, slot or GpuSlot()
        self.cell_lock = cell_lock or nullcontext()  # held while a cell is measured (--exclusive)
        self.cells = [Cell.from_dict(c) for c in job.cells]
        self.last_env = dict(job.launcher_env)

    def failure_record(self, cell: Cell, status: str, error: str, detail: str = "") -> ResultRecord:
        """A record for a cell that did not train: `error` is one line (the cause and the log to read),
        `detail` (a traceback or log tail) goes to backend_info."""
        now, t, job = now_iso(), cell.train, self.job
        return ResultRecord(
            schema_version=SCHEMA_VERSION, run_id=job.run_id, cell_id=cell.cell_id, pair_key=cell.pair_key,
            backend=cell.backend, recipe=cell.recipe, driver=t.driver, model=cell.model, model_source=job.model_source,
            tier=cell.tier, mode=cell.mode, seq_len=cell.seq_len, batch_size=cell.batch_size, grad_accum=t.grad_accum,
            lora_r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
            target_modules=list(cell.target_modules), optimizer=t.optimizer, learning_rate=t.learning_rate,
            gradient_checkpointing=cell.gradient_checkpointing, dtype=cell.dtype,
            attn_implementation=job.attn_implementation, steps=t.steps, warmup_steps=t.warmup_steps, seed=t.seed,
            status=status, error=error, started_at=now, finished_at=now, tokens_per_step=cell.tokens_per_step,
            repeat=job.repeat, repeats=job.repeats, min_seconds=t.min_seconds,
            memory_limit_bytes=job.memory_limit_bytes, env=self.last_env,
            backend_info={"traceback_tail": detail[-3000:]} if detail else {})

    def _record(self, record: ResultRecord) -> None:
        self.emit({"kind": "record", "record": asdict(record)})

    def _status(self, cell: Cell, text: str) -> None:
        self.emit({"kind": "status", "cell_id": cell.cell_id, "text": text})

    def start_worker(self, first: Cell):
        """Start a worker and wait until it has loaded the model; return it, or a failure (status, error)."""
        env = {"CUDA_VISIBLE_DEVICES": str(self.slot.index)} if self.slot.index is not None else {}
        job = dict(self.job.worker_job, gpu=asdict(self.slot))
        worker = WorkerProcess(job, Path(self.job.log_path), extra_env=env)
        deadline = time.monotonic() + self.job.load_timeout_s
        while True:
            ev = worker.next_event(max(0.0, deadline - time.monotonic()))
            if ev is None:
                worker.close(kill=True)
                return None, ("timeout", f"model load took over {self.job.load_timeout_s:.0f} s (log: {self.job.log_path})",
                              worker.log_tail())
            kind = ev["event"]
            if kind == "hello":
                self.last_env = ev.get("env") or {}
            elif kind == "status":
                self._status(first, ev["text"])
            elif kind == "loaded":
                return worker, None
            elif kind == "load_failed":
                worker.close(kill=True)
                return None, (ev["status"], f"load failed: {ev['error']} (log: {self.job.log_path})",
                              ev.get("traceback", ""))
            elif kind == "exit":
                if INTERRUPTED.is_set():
                    raise KeyboardInterrupt
                tail = worker.log_tail(8000)
                worker.close()
                return None, ("error", f"{exit_cause(ev['returncode'], tail)} while loading (log: {self.job.log_path})",
                              tail)

    def run_on_worker(self, worker: WorkerProcess, cell: Cell):
        """Send one cell; return (record, worker still usable)."""
        worker.send(cell.to_dict())
        deadline = time.monotonic() + self.job.cell_timeout_s
        while True:
            ev = worker.next_event(max(0.0, deadline - time.monotonic()))
            if ev is None:
                worker.close(kill=True)
                return self.failure_record(cell, "timeout", f"cell took over {self.job.cell_timeout_s:.0f} s "
                                                            f"(log: {self.job.log_path})"), False
            kind = ev["event"]
            if kind == "cell_start":
                self.emit({"kind": "cell_start", "cell_id": cell.cell_id})
            elif kind == "step":
                self._status(cell, step_text(ev))
            elif kind == "record":
                return ResultRecord.from_dict(ev["record"]), True
            elif kind == "exit":
                if INTERRUPTED.is_set():  # the launcher stopped it: the cell did not finish, no record
                    raise KeyboardInterrupt
                tail = worker.log_tail(8000)
                worker.close()
                status = "oom" if "out of memory" in tail.lower() else "error"
                cause = exit_cause(ev["returncode"], tail)
                return self.failure_record(cell, status, f"{cause} (log: {self.job.log_path})", tail), False

    def run(self) -> None:
        job = self.job
        worker, load_failure = None, None
        oom = [c for c in self.cells if c.cell_id in set(job.oom_cells)]
        try:
            for cell in self.cells:
                if cell.cell_id in set(job.finished):
                    continue
                blocker = next((o for o in oom if dominates(cell, o)), None) if job.skip_dominated else None
                if blocker is not None:
                    self._record(self.failure_record(
                        cell, "skipped", f"not run: at least as large as {blocker.cell_id}, which ran out of memory"))
                    continue
                if load_failure is not None:
                    self._record(self.failure_record(cell, *load_failure))
                    continue
                if worker is None:
                    self._status(cell, f"starting {job.recipe} worker")
                    worker, load_failure = self.start_worker(cell)
                    if worker is None:
                        self._record(self.failure_record(cell, *load_failure))
                        if load_failure[0] == "oom":
                            oom.append(cell)
                        continue
                with self.cell_lock:
                    record, alive = self.run_on_worker(worker, cell)
                self._record(record)
                if record.status == "oom":
                    oom.append(cell)
                if not alive:
                    worker = None
                elif job.isolate_cells:
                    worker.close()
                    worker = None
        except BaseException:  # interrupted: never leave a worker training on a GPU
            if worker is not None:
                worker.close(kill=True)
                worker = None
            raise
        finally:
            if worker is not None:
                worker.close()


def run_group(job: GroupJob, emit: Emit, slot: Optional[GpuSlot] = None) -> None:
    """Run every cell of `job` (see GroupRun); events go to `emit`."""
    GroupRun(job, emit, slot).run()


def where() -> str:
    """This machine, for records placed by a distributed executor."""
    return f"{socket.gethostname()}:{os.getpid()}"
