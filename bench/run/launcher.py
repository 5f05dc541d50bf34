"""Runs a matrix: the public API of the run stage (`make_plan`, `Runner`).

The plan's worker groups (one recipe x model, cells smallest first; bench.run.groups) go to an
executor (bench.run.executors: one after another, over local GPUs, or a Dask cluster). The launcher
never imports a recipe's libraries or touches CUDA itself; it is the only writer of the results file:
every record is appended and fsync'ed as it arrives, with where it ran and how many cells ran beside it.
"""

from __future__ import annotations

import fcntl
import functools
import threading
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from bench.schema.key import TABLE_FIELDS, CellKey
from bench.schema.pairs import annotate_parity
from bench.config.settings import Cell, ConfigError, RunConfig, dominates, expand_groups
from bench.config.models import ModelRef, resolve_model
from bench.run.checkpoint import default_cache_dir
from bench.run.executors import Executor, SerialExecutor
from bench.run.groups import GroupJob
from bench.schema.record import FINISHED_STATUSES, SCHEMA_VERSION, ResultRecord, ResultsError
from bench.schema.store import append_record, cell_finished, latest_repeat_indexes, read_records, representative
from bench.config.tiers import TierPlan, get_tier, plan_tier
from bench.run.device import detect_host_gpu
from bench.run.env import git_commit, package_versions

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
    executor: Executor = field(default_factory=SerialExecutor)

    def __post_init__(self):
        self.run_id = new_run_id()
        self.repeat_records: dict[str, dict[int, ResultRecord]] = {}  # cell_id -> repeat -> its latest record
        self.records: dict[str, ResultRecord] = {}  # cell_id -> the record that stands for it (store.representative)
        if self.out_path.exists():
            if not self.resume:
                raise OutputExists(self.out_path)
            try:
                existing = read_records(self.out_path)
            except ResultsError as exc:
                raise ResultsError(f"cannot resume: {exc}") from exc
            for indexes in latest_repeat_indexes(existing):
                self.repeat_records[existing[indexes[0]].cell_id] = {existing[i].repeat: existing[i] for i in indexes}
            self.records = {cell_id: representative(self.repeats_of(cell_id)) for cell_id in self.repeat_records}
        self.log_dir = self.out_path.with_suffix(".logs")
        self._file_lock = lock_results(self.out_path, self.log_dir)
        if self.records:
            cfg = self.plan.config
            check_same_settings(self.out_path, [r for reps in self.repeat_records.values() for r in reps.values()],
                                self.plan.cells, cfg.attn_implementation, cfg.repeats)
        self._lock = threading.RLock()  # executors call back from several threads
        self._running: dict[str, int] = {}  # cell_id -> most cells seen running beside it
        self._cells = {c.cell_id: c for c in self.plan.cells}

    @functools.cached_property
    def launcher_env(self) -> dict:
        """The launcher's environment (`_launcher_env`: NVML, package versions, git), read once per run."""
        return _launcher_env()

    def repeats_of(self, cell_id: str) -> list[ResultRecord]:
        """The cell's latest record of each repeat so far, ordered by repeat."""
        by_repeat = self.repeat_records.get(cell_id, {})
        return [by_repeat[k] for k in sorted(by_repeat)]

    @property
    def finished(self) -> set[str]:
        """cell_ids --resume leaves alone: every repeat finished (bench.schema.store.cell_finished)."""
        return {c for c in self.repeat_records if cell_finished(self.repeats_of(c), self.plan.config.repeats)}

    def repeat_finished(self, cell_id: str, repeat: int) -> bool:
        """Whether measurement `repeat` of the cell needs no (re-)run: the cell is finished, or that repeat is."""
        have = self.repeat_records.get(cell_id, {}).get(repeat)
        done = have is not None and have.status in FINISHED_STATUSES and have.repeats == self.plan.config.repeats
        return done or cell_finished(self.repeats_of(cell_id), self.plan.config.repeats)

    # -- records -------------------------------------------------------------------------
    def write(self, record: ResultRecord) -> ResultRecord:
        """Append the record (fsync'ed), then tell the console, with its parity against the reference
        when the reference's cell of that configuration has finished (parity is not stored: readers
        compute it, bench.schema.pairs)."""
        with self._lock:
            append_record(self.out_path, record)
            self.repeat_records.setdefault(record.cell_id, {})[record.repeat] = record
            self.records[record.cell_id] = representative(self.repeats_of(record.cell_id))
            group = [record if r.cell_id == record.cell_id else r for r in self.records.values()
                     if r.pair_key == record.pair_key]
            annotate_parity(group, self.plan.config.reference)
            self.callbacks.on_record(record)
        return record

    def on_event(self, job: GroupJob, event: dict, where: dict) -> None:
        """An executor's event: status to the console, a record to the file (with its placement)."""
        with self._lock:
            kind = event["kind"]
            cell = self._cells.get(event.get("cell_id") or event.get("record", {}).get("cell_id"))
            if kind == "status" and cell is not None:
                self.callbacks.on_status(cell, event["text"])
            elif kind == "cell_start":
                for other in self._running:
                    self._running[other] = max(self._running[other], len(self._running))
                self._running[event["cell_id"]] = len(self._running)
            elif kind == "record":
                record = ResultRecord.from_dict(event["record"])
                record.placement = dict(where, cells_beside=self._running.pop(record.cell_id, 0))
                self.write(record)

    # -- workers -------------------------------------------------------------------------
    def job_for(self, recipe: str, ref: ModelRef, cells: list[Cell], repeat: int = 0) -> dict:
        c = cells[0]
        cfg = self.plan.config
        t = c.train
        return {
            "recipe": recipe,
            "family": c.backend,
            "data": {"path": t.data_path, "packing": bool(t.packing)} if t.data_path else None,
            "run_id": self.run_id,
            "repeat": repeat,
            "repeats": cfg.repeats,
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

    def group_jobs(self, repeat: int = 0) -> list[GroupJob]:
        """The plan's groups that still have cells to run in measurement `repeat`, as jobs an executor can run
        anywhere (each a fresh worker)."""
        jobs = [self.group_job(recipe, ref, cells, self.launcher_env, repeat)
                for recipe, ref, cells in self.plan.groups]
        return [job for job in jobs if len(job.finished) < len(job.cells)]

    def group_job(self, recipe: str, ref: ModelRef, cells: list[Cell], env: Optional[dict] = None,
                  repeat: int = 0) -> GroupJob:
        """One worker group's measurement `repeat` as a job (bench.run.groups)."""
        safe = ref.name.replace("/", "_")
        repeats = self.plan.config.repeats
        log = f"{recipe}-{safe}" + (f"-repeat{repeat}" if repeats > 1 else "")
        oom = {c for c, reps in self.repeat_records.items() if any(r.status == "oom" for r in reps.values())}
        return GroupJob(
            run_id=self.run_id, recipe=recipe, model_source=ref.source, cells=[c.to_dict() for c in cells],
            worker_job=self.job_for(recipe, ref, cells, repeat), log_path=str(self.log_dir / f"{log}.log"),
            cell_timeout_s=self.plan.config.cell_timeout_s, load_timeout_s=self.plan.config.load_timeout_s,
            skip_dominated=self.plan.config.skip_dominated, isolate_cells=self.plan.config.isolate == "cell",
            finished=[c.cell_id for c in cells if self.repeat_finished(c.cell_id, repeat)],
            oom_cells=[c.cell_id for c in cells if c.cell_id in oom],
            memory_limit_bytes=self.plan.tier_plan.memory_limit_bytes,
            attn_implementation=self.plan.config.attn_implementation,
            launcher_env=env if env is not None else self.launcher_env, repeat=repeat, repeats=repeats)

    def run(self) -> list[ResultRecord]:
        """Measure every cell `repeats` times: repeat 0 of every group, then repeat 1, ... (each group's repeat
        in a fresh worker), so a slow drift of the GPU (its clocks, its temperature) spreads over every recipe
        instead of landing on the ones measured last, and a later repeat skips the cells an earlier one found
        out of memory. One record per cell (bench.schema.store.representative), with its parity."""
        for repeat in range(self.plan.config.repeats):
            self.executor.run(self.group_jobs(repeat), self.on_event)
        records = [self.records[c.cell_id] for c in self.plan.cells if c.cell_id in self.records]
        return annotate_parity(records, self.plan.config.reference)

    def measurements(self) -> int:
        """Cell measurements already finished (each repeat counts one; a finished cell counts all its repeats):
        the progress bar's start on --resume."""
        n, finished = self.plan.config.repeats, self.finished
        return sum(n if c.cell_id in finished else sum(self.repeat_finished(c.cell_id, k) for k in range(n))
                   for c in self.plan.cells)


#: What must be equal between a results file's cells and a run that resumes it (sizes, models and
#: recipes may differ: a resumed run may add or drop them).
RESUME_FIELDS = ("tier", "mode") + TABLE_FIELDS


def check_same_settings(path: Path, records: list[ResultRecord], cells: list[Cell], attn: str, repeats: int = 1) -> None:
    """Refuse to resume a results file whose cells were run with other settings, naming what differs: the
    cells' settings (RESUME_FIELDS), then --repeats and --min-seconds (a record before it had none: 0)."""
    wanted = {CellKey.of(_cell_view(c, attn)).values(RESUME_FIELDS) for c in cells}
    for r in records:
        have = CellKey.of(r).values(RESUME_FIELDS)
        if have in wanted:
            continue
        close = min(wanted, key=lambda w: sum(a != b for a, b in zip(w, have)))
        diff = [f"{name} {a} in the file, {b} now" for name, a, b in zip(RESUME_FIELDS, have, close) if a != b]
        raise ConfigError(f"cannot resume {path}: its cells were run with other settings ({'; '.join(diff)}); "
                          "resume with the same settings, or write the results elsewhere")
    min_seconds = cells[0].train.min_seconds if cells else 0.0
    for r in records:
        for option, have, now in (("--repeats", r.repeats, repeats), ("--min-seconds", r.min_seconds or 0.0, min_seconds)):
            if have != now:
                raise ConfigError(f"cannot resume {path}: its cells were measured with {option} {have:g}, {now:g} now; "
                                  "resume with the same settings, or write the results elsewhere")


def _cell_view(cell: Cell, attn: str) -> dict:
    """A cell's identity fields named as a record names them."""
    t = cell.train
    return {"recipe": cell.recipe, "backend": cell.backend, "driver": t.driver, "data_sha256": t.data_sha256,
            "packing": t.packing, "model": cell.model, "tier": cell.tier, "mode": cell.mode, "seq_len": cell.seq_len,
            "batch_size": cell.batch_size, "grad_accum": t.grad_accum, "lora_r": t.lora_r, "lora_alpha": t.lora_alpha,
            "lora_dropout": t.lora_dropout, "target_modules": list(cell.target_modules), "optimizer": t.optimizer,
            "learning_rate": t.learning_rate, "gradient_checkpointing": cell.gradient_checkpointing,
            "dtype": cell.dtype, "attn_implementation": attn, "steps": t.steps, "warmup_steps": t.warmup_steps,
            "seed": t.seed}


#: Results files this process holds the lock of (resolved path -> open lock file): one process may open
#: several Runners on one file in turn (bench fit: one per recipe; a resumed run in tests).
_HELD_LOCKS: dict[Path, object] = {}


def lock_results(out_path: Path, log_dir: Path):
    """Take an exclusive lock for writing `out_path` (a lock file in its log folder), held until this process
    exits; ConfigError when another process holds it (two runs appending to one file would duplicate cells)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    key = Path(out_path).resolve()
    if key in _HELD_LOCKS:
        return _HELD_LOCKS[key]
    fh = open(log_dir / ".lock", "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise ConfigError(f"{out_path} is being written by another bench run: wait for it to finish, "
                          "or write the results elsewhere") from None
    _HELD_LOCKS[key] = fh
    return fh


def _launcher_env() -> dict:
    """Environment without touching CUDA (the launcher must not hold a CUDA context)."""
    host = detect_host_gpu()
    env = {"gpu_name": host.name if host else None, "gpu_memory_bytes": host.total_memory_bytes if host else None,
           "driver": host.driver if host else None, "packages": package_versions()}
    env.update(git_commit())
    return env
