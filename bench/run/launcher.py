"""Runs a matrix: one worker subprocess per (recipe, model), or per cell with isolate="cell".

The launcher never imports a recipe's libraries or touches CUDA itself. It feeds cells to workers,
turns crashes and timeouts into that cell's status, appends every record to the results file
as it arrives, and fills in the parity verdict when the second cell of a pair finishes.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from bench.schema.pairs import annotate_parity
from bench.config.settings import Cell, ConfigError, RunConfig, dominates, expand_groups
from bench.config.models import ModelRef, resolve_model
from bench.run.checkpoint import default_cache_dir
from bench.run.workerproc import WorkerProcess
from bench.schema.record import FINISHED_STATUSES, SCHEMA_VERSION, ResultRecord, ResultsError
from bench.schema.store import append_record, latest_per_cell, read_records
from bench.config.tiers import TierPlan, get_tier, plan_tier
from bench.run.device import detect_host_gpu

class OutputExists(ConfigError):
    """The results file exists and the run was not asked to resume it."""

    def __init__(self, path: Path):
        super().__init__(f"{path} exists: resume it, or write the results elsewhere")
        self.path = Path(path)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@dataclass
class Plan:
    """Everything decided before any worker starts; building it validates the whole request."""

    config: RunConfig
    tier_plan: TierPlan
    models: list[ModelRef]
    groups: list[tuple[str, ModelRef, list[Cell]]]  # (recipe, model, cells in run order)

    @property
    def cells(self) -> list[Cell]:
        return [c for _, _, cells in self.groups for c in cells]


def make_plan(config: RunConfig, host=None, detect: bool = True) -> Plan:
    config.validate()
    tier = get_tier(config.tier)
    if detect and host is None and config.device == "cuda":
        host = detect_host_gpu()
    tier_plan = plan_tier(tier, host, config.device)
    models = [resolve_model(m, config.trust_remote_code) for m in config.models]
    groups = expand_groups(config, models, tier_plan.tier.name, tier_plan.mode, tier_plan.dtype)
    return Plan(config, tier_plan, models, groups)


@dataclass
class Callbacks:
    """Hooks for the console; all optional."""

    on_status: Callable[[Cell, str], None] = lambda cell, text: None
    on_record: Callable[[ResultRecord], None] = lambda record: None


@dataclass
class Runner:
    plan: Plan
    out_path: Path
    resume: bool = False
    cache_dir: Optional[Path] = None
    callbacks: Callbacks = field(default_factory=Callbacks)

    def __post_init__(self):
        self.run_id = new_run_id()
        self.records: dict[str, ResultRecord] = {}
        self.finished: set[str] = set()
        if self.out_path.exists():
            if not self.resume:
                raise OutputExists(self.out_path)
            try:
                existing = latest_per_cell(read_records(self.out_path))
            except ResultsError as exc:
                raise ResultsError(f"cannot resume: {exc}") from exc
            self.records = {r.cell_id: r for r in existing}
            self.finished = {r.cell_id for r in existing if r.status in FINISHED_STATUSES}
        self.log_dir = self.out_path.with_suffix(".logs")
        self.last_env: dict = {}

    # -- records -------------------------------------------------------------------------
    def write(self, record: ResultRecord) -> ResultRecord:
        """Append the record (fsync'ed), then tell the console, with its parity against the reference
        when the reference's cell of that configuration has finished (parity is not stored: readers
        compute it, bench.schema.pairs)."""
        append_record(self.out_path, record)
        self.records[record.cell_id] = record
        group = [r for r in self.records.values() if r.pair_key == record.pair_key]
        annotate_parity(group, self.plan.config.reference)
        self.callbacks.on_record(record)
        return record

    def failure_record(self, cell: Cell, status: str, error: str, **extra) -> ResultRecord:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        t = cell.train
        rec = ResultRecord(
            schema_version=SCHEMA_VERSION, run_id=self.run_id, cell_id=cell.cell_id, pair_key=cell.pair_key,
            backend=cell.backend, recipe=cell.recipe, driver=t.driver, model=cell.model,
            model_source=self._ref(cell).source, tier=cell.tier,
            mode=cell.mode, seq_len=cell.seq_len, batch_size=cell.batch_size, grad_accum=t.grad_accum,
            lora_r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
            target_modules=list(cell.target_modules), optimizer=t.optimizer, learning_rate=t.learning_rate,
            gradient_checkpointing=cell.gradient_checkpointing, dtype=cell.dtype,
            attn_implementation=self.plan.config.attn_implementation, steps=t.steps, warmup_steps=t.warmup_steps,
            seed=t.seed, status=status, error=error, started_at=now, finished_at=now,
            tokens_per_step=cell.tokens_per_step, memory_limit_bytes=self.plan.tier_plan.memory_limit_bytes,
            env=self.last_env or _launcher_env(),
        )
        for k, v in extra.items():
            setattr(rec, k, v)
        return rec

    def _ref(self, cell: Cell) -> ModelRef:
        return next(r for r in self.plan.models if r.name == cell.model)

    # -- workers -------------------------------------------------------------------------
    def job_for(self, recipe: str, ref: ModelRef, cells: list[Cell]) -> dict:
        c = cells[0]
        cfg = self.plan.config
        t = c.train
        return {
            "recipe": recipe,
            "family": c.backend,
            "data": {"path": t.data_path, "packing": bool(t.packing)} if t.data_path else None,
            "run_id": self.run_id,
            "device": cfg.device,
            "cache_dir": str(self.cache_dir or default_cache_dir()),
            "fast_paths": cfg.fast_paths,
            "plan": self.plan.tier_plan.to_dict(),
            "model_ref": asdict(ref),
            "recipe_settings": {
                "dtype": c.dtype, "device": cfg.device, "lora_r": c.train.lora_r, "lora_alpha": c.train.lora_alpha,
                "lora_dropout": c.train.lora_dropout, "target_modules": list(c.target_modules),
                "checkpointing": c.gradient_checkpointing, "max_seq_len": max(x.seq_len for x in cells),
                "seed": c.train.seed, "attn_implementation": cfg.attn_implementation,
                "trust_remote_code": cfg.trust_remote_code,
            },
        }

    def start_worker(self, recipe: str, ref: ModelRef, cells: list[Cell], first: Cell):
        """Start a worker and wait until it has loaded the model; return it, or a failure (status, error)."""
        safe = ref.name.replace("/", "_")
        log = self.log_dir / f"{recipe}-{safe}.log"
        worker = WorkerProcess(self.job_for(recipe, ref, cells), log)
        deadline = time.monotonic() + self.plan.config.load_timeout_s
        while True:
            ev = worker.next_event(max(0.0, deadline - time.monotonic()))
            if ev is None:
                worker.close(kill=True)
                return None, ("timeout", f"model load took over {self.plan.config.load_timeout_s:.0f} s")
            kind = ev["event"]
            if kind == "hello":
                self.last_env = ev.get("env") or {}
            elif kind == "status":
                self.callbacks.on_status(first, ev["text"])
            elif kind == "loaded":
                return worker, None
            elif kind == "load_failed":
                worker.close(kill=True)
                detail = ev.get("traceback", "")
                return None, (ev["status"], f"load failed: {ev['error']}\n{detail[-1200:]}".strip())
            elif kind == "exit":
                tail = worker.log_tail()
                worker.close()
                return None, ("error", f"worker exited with code {ev['returncode']} while loading: {tail[-800:]}")

    def run_on_worker(self, worker: WorkerProcess, cell: Cell):
        """Send one cell; return (record or None, worker still usable)."""
        worker.send(cell.to_dict())
        deadline = time.monotonic() + self.plan.config.cell_timeout_s
        while True:
            ev = worker.next_event(max(0.0, deadline - time.monotonic()))
            if ev is None:
                worker.close(kill=True)
                return self.failure_record(
                    cell, "timeout", f"cell took over {self.plan.config.cell_timeout_s:.0f} s"), False
            kind = ev["event"]
            if kind == "step":
                self.callbacks.on_status(cell, f"step {ev['step'] + 1}/{ev['of']}  loss {ev['loss']:.4f}")
            elif kind == "record":
                return ResultRecord.from_dict(ev["record"]), True
            elif kind == "exit":
                tail = worker.log_tail()
                worker.close()
                status = "oom" if "out of memory" in tail.lower() else "error"
                return self.failure_record(
                    cell, status, f"worker died (exit code {ev['returncode']}): {tail[-800:]}"), False

    def run(self) -> list[ResultRecord]:
        isolate_cells = self.plan.config.isolate == "cell"
        for recipe, ref, cells in self.plan.groups:
            worker = None
            oom_cells: list[Cell] = [
                c for c in cells if c.cell_id in self.records and self.records[c.cell_id].status == "oom"]
            load_failure = None
            for cell in cells:
                if cell.cell_id in self.finished:
                    continue
                if self.plan.config.skip_dominated:
                    blocker = next((o for o in oom_cells if dominates(cell, o)), None)
                    if blocker is not None:
                        self.write(self.failure_record(
                            cell, "skipped", f"not run: at least as large as {blocker.cell_id}, which ran out of memory"))
                        continue
                if load_failure is not None:
                    self.write(self.failure_record(cell, *load_failure))
                    continue
                if worker is None:
                    self.callbacks.on_status(cell, f"starting {recipe} worker")
                    worker, failure = self.start_worker(recipe, ref, cells, cell)
                    if worker is None:
                        load_failure = failure
                        self.write(self.failure_record(cell, *failure))
                        if failure[0] == "oom":
                            oom_cells.append(cell)
                        continue
                record, alive = self.run_on_worker(worker, cell)
                self.write(record)
                if record.status == "oom":
                    oom_cells.append(cell)
                if not alive:
                    worker = None
                elif isolate_cells:
                    worker.close()
                    worker = None
            if worker is not None:
                worker.close()
        return [self.records[c.cell_id] for c in self.plan.cells if c.cell_id in self.records]


def _launcher_env() -> dict:
    """Environment without touching CUDA (the launcher must not hold a CUDA context)."""
    from bench.run.env import git_commit, package_versions
    from bench.run.device import detect_host_gpu

    host = detect_host_gpu()
    env = {"gpu_name": host.name if host else None, "gpu_memory_bytes": host.total_memory_bytes if host else None,
           "driver": host.driver if host else None, "packages": package_versions()}
    env.update(git_commit())
    return env
