"""Measured max-fit search: the longest sequence and the largest batch that train under a tier's cap.

Two layers, kept apart so the search can be tested without a GPU:
  * `search_max` (pure): find the largest integer x in [lo, hi] for which a monotone predicate
    probe(x) holds (fits for small x, not for large), starting from a seed (the estimator's
    prediction). Probes the seed, steps outward (x1.1, x1.2, x1.5, then doubling / halving) until
    it has a fitting and a failing point, then bisects between them for a bounded number of steps.
  * `ProbeSession` (GPU): each probe is one real training cell (`make_plan` + the launcher's
    `Runner`, worker subprocess, a few optimizer steps) appended to a results JSONL. The loaded
    model is reused between probes and the worker restarted after a probe that failed, so an
    out-of-memory state never leaks into the next measurement. With resume, probes already in
    the file are read back instead of run again, so an interrupted search continues.

`run_fit` runs both searches per recipe. The seeds come from a callable the caller passes (the
CLI passes `bench.analysis.fit.estimator_seeds`), so this stage does not depend on the estimator.

A probe "fits" when its cell finished ok and, on an emulated tier, the device peak stayed within
the tier's memory (`over_tier_memory` false): the torch cap does not cover memory outside torch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from bench.config.models import resolve_model
from bench.config.settings import FIT_SEQ_MULTIPLE, ConfigError, RunConfig, TrainSettings
from bench.config.tiers import GpuTier, HostGpu, get_tier, tier_for_gpu_name
from bench.run.executors import placement
from bench.run.groups import GpuSlot, GroupRun
from bench.run.launcher import Callbacks, Runner, make_plan
from bench.schema.record import FINISHED_STATUSES, ResultRecord

SEQ_MULTIPLE = FIT_SEQ_MULTIPLE  # sequence lengths probed are multiples of this (tokens)
PROBES_DIR = Path("reports/results")  # where probe files go by default (relative to the working directory)


class FitError(ValueError):
    """A search that cannot start (CLI exit code 2)."""


# -- the pure search ------------------------------------------------------------------------------


@dataclass
class SearchResult:
    """What a search established: x <= max_fit fits, min_fail does not (None: not found)."""

    max_fit: Optional[int]
    min_fail: Optional[int]
    probes: list[tuple[int, bool]] = field(default_factory=list)  # (x, fits) in probe order
    stopped: Optional[str] = None  # why it stopped before reaching the resolution, if it did

    @property
    def resolved_to(self) -> Optional[int]:
        """Width of the remaining bracket (min_fail - max_fit), None when open-ended."""
        if self.max_fit is None or self.min_fail is None:
            return None
        return self.min_fail - self.max_fit


def _snap_down(x: float, multiple: int) -> int:
    return int(math.floor(x / multiple)) * multiple


def _snap_up(x: float, multiple: int) -> int:
    return int(math.ceil(x / multiple)) * multiple


class _Search:
    """The probes asked so far and the bracket they establish; each x is probed at most once."""

    def __init__(self, probe: Callable[[int], bool], should_stop: Callable[[], Optional[str]]):
        self.probe, self.should_stop = probe, should_stop
        self.result = SearchResult(None, None)
        self.seen: dict[int, bool] = {}

    def ask(self, x: int) -> Optional[bool]:
        """probe(x), recorded; None when `should_stop` ended the search first."""
        if x in self.seen:
            return self.seen[x]
        reason = self.should_stop()
        if reason:
            self.result.stopped = reason
            return None
        fits = bool(self.probe(x))
        self.seen[x] = fits
        result = self.result
        result.probes.append((x, fits))
        if fits and (result.max_fit is None or x > result.max_fit):
            if result.min_fail is None or x < result.min_fail:
                result.max_fit = x
        if not fits and (result.min_fail is None or x < result.min_fail):
            result.min_fail = x
        return fits

    def step_out(self, x: int, lo: int, hi: int, multiple_of: int, max_steps_out: int) -> bool:
        """From x, step up while probes fit or down while they fail until the answer is bracketed.
        Gentle steps first (a good seed is bracketed by its first neighbour), then doubling /
        halving. False when the search ends here (range bound reached, steps or time used up)."""
        result = self.result
        fits = self.ask(x)
        if fits is None:
            return False
        ups, downs = (1.1, 1.2, 1.5), (0.9, 0.8, 0.6)
        steps = 0
        while result.max_fit is None or result.min_fail is None:
            if (fits and x >= hi) or (not fits and x <= lo):
                return False  # the whole range fits, or even the smallest fails
            if steps == max_steps_out:
                result.stopped = f"not bracketed after {max_steps_out} steps"
                return False
            factor = (ups if fits else downs)[steps] if steps < 3 else (2.0 if fits else 0.5)
            steps += 1
            if fits:
                x = min(max(_snap_up(x * factor, multiple_of), x + multiple_of), hi)
            else:
                x = max(min(_snap_down(x * factor, multiple_of), x - multiple_of), lo)
            fits = self.ask(x)
            if fits is None:
                return False
        return True

    def bisect(self, multiple_of: int, resolution: int, max_bisect_steps: int) -> None:
        """Halve the bracket until it is no wider than `resolution` or the steps are spent."""
        result = self.result
        for _ in range(max_bisect_steps):
            if result.min_fail - result.max_fit <= resolution:
                return
            mid = _snap_down((result.max_fit + result.min_fail) / 2, multiple_of)
            if mid <= result.max_fit or self.ask(mid) is None:
                return
        if result.min_fail - result.max_fit > resolution and result.stopped is None:
            result.stopped = f"bisection steps used up ({max_bisect_steps})"


def search_max(
    probe: Callable[[int], bool],
    lo: int,
    hi: int,
    seed: Optional[int] = None,
    *,
    multiple_of: int = 1,
    resolution: Optional[int] = None,
    max_bisect_steps: int = 3,
    max_steps_out: int = 12,
    should_stop: Callable[[], Optional[str]] = lambda: None,
) -> SearchResult:
    """Largest x in [lo, hi] (multiples of `multiple_of`) with probe(x) True.

    `seed` is where to start (the estimator's prediction; `lo` when None). From it the search
    steps up (x1.1, x1.2, x1.5, then x2 each time) while probes fit, or down (x0.9, x0.8, x0.6,
    then x0.5) while they fail, at most `max_steps_out` times, clamped to [lo, hi]; then bisects
    the bracket until it is no wider than `resolution` (default `multiple_of`) or
    `max_bisect_steps` probes were spent. `should_stop()` returning a reason ends the search early
    (time budget). Each x is probed at most once. Probes only ever land between the largest fit
    and the smallest failure seen, so the answer is read off a monotone record.
    """
    if multiple_of <= 0:
        raise FitError("multiple_of must be > 0")
    lo = _snap_up(max(lo, multiple_of), multiple_of)
    hi = _snap_down(hi, multiple_of)
    if hi < lo:
        raise FitError(f"empty search range after rounding to multiples of {multiple_of}")
    resolution = max(resolution or multiple_of, multiple_of)
    search = _Search(probe, should_stop)
    start = min(max(_snap_down(seed, multiple_of) if seed else lo, lo), hi)
    if search.step_out(start, lo, hi, multiple_of, max_steps_out):
        search.bisect(multiple_of, resolution, max_bisect_steps)
    return search.result


# -- probes on the GPU through the launcher ---------------------------------------------------------


@dataclass
class Probe:
    seq_len: int
    batch_size: int
    fits: bool  # ResultRecord.fits_tier
    status: str
    peak_device_bytes: Optional[int]
    reused: bool  # read back from the results file instead of run


class ProbeSession:
    """Runs probe cells of one (recipe, model) on one tier through the launcher, one at a time.

    `config` is the RunConfig the probes share (tier, one model, one recipe, training settings);
    its seq_lens / batch_sizes are replaced per probe. `max_seq_len` is what the worker is told
    the longest sequence will be (Unsloth sizes its RoPE cache and chooses its checkpointing by it).
    The loaded model is kept between probes (Unsloth compiles each new shape: reusing the process
    keeps that cost to the first shapes). After an out-of-memory probe the worker goes on, as the
    launcher's own runs do, unless `fresh_after_failure`; a probe that then errors (not an OOM) is
    run once more in a fresh worker, so a process left unusable by an OOM cannot end a search.
    """

    def __init__(self, config: RunConfig, out_path: Path, *, resume: bool, cache_dir: Optional[Path] = None,
                 callbacks: Optional[Callbacks] = None, host: Optional[HostGpu] = None, max_seq_len: int,
                 fresh_after_failure: bool = False):
        if len(config.recipes) != 1 or len(config.models) != 1:
            raise FitError("a probe session needs exactly one recipe and one model")
        self.config = config
        self.host = host
        self.detect = host is None and config.device == "cuda"
        plan = make_plan(replace(config, seq_lens=[max_seq_len], batch_sizes=[1]), host=host, detect=self.detect)
        self.host_plan = plan
        self.runner = Runner(plan, Path(out_path), resume=resume, cache_dir=cache_dir,
                             callbacks=callbacks or Callbacks())
        self.recipe, self.ref, self.max_cells = plan.groups[0]
        job = self.runner.group_job(self.recipe, self.ref, self.max_cells)
        self.where = placement("serial", GpuSlot())
        self.group = GroupRun(job, lambda ev: self.runner.on_event(job, ev, self.where))
        self.worker = None
        self.worker_saw_failure = False
        self.fresh_after_failure = fresh_after_failure

    @property
    def tier_plan(self):
        return self.host_plan.tier_plan

    def cell(self, seq_len: int, batch_size: int):
        plan = make_plan(replace(self.config, seq_lens=[seq_len], batch_sizes=[batch_size]), host=self.host,
                         detect=self.detect)
        return plan.cells[0]

    def probe(self, seq_len: int, batch_size: int) -> Probe:
        cell = self.cell(seq_len, batch_size)
        known = self.runner.records.get(cell.cell_id)
        if known is not None and known.status in FINISHED_STATUSES:
            return self._keep(known, reused=True)
        runner = self.runner
        for attempt in (1, 2):
            if self.worker is None:
                runner.callbacks.on_status(cell, f"starting {self.recipe} worker")
                self.worker, failure = self.group.start_worker(cell)
                self.worker_saw_failure = False
                if self.worker is None:
                    return self._keep(self._write(self.group.failure_record(cell, *failure)), reused=False)
            dirty = self.worker_saw_failure
            record, alive = self.group.run_on_worker(self.worker, cell)
            self._write(record)
            if not alive:
                self.worker = None
            if record.status in ("error", "timeout") and dirty and attempt == 1:
                self.close()  # maybe the earlier OOM broke the process: once more in a fresh one
                continue
            break
        if not record.fits_tier:
            self.worker_saw_failure = True
            if self.fresh_after_failure:
                self.close()
        return self._keep(record, reused=False)

    def _write(self, record: ResultRecord) -> ResultRecord:
        record.placement = dict(self.where, cells_beside=0)
        return self.runner.write(record)

    def _keep(self, record: ResultRecord, reused: bool) -> Probe:
        return Probe(record.seq_len, record.batch_size, record.fits_tier, record.status, record.peak_device_bytes,
                     reused)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None


# -- one tier x model: both searches per recipe -----------------------------------------------------


@dataclass
class FitOutcome:
    tier: str
    mode: str
    host_gpu_name: Optional[str]
    recipe: str
    driver: str
    model: str
    batch_size: int  # the batch the seq search ran at
    seq_len: int  # the seq the batch search ran at
    seq: SearchResult
    batch: SearchResult


#: seeds(model config dict, recipe, usable_bytes, batch_size, seq_len, max_seq_len, max_batch_size,
#: driver=, lora_r=, target_modules=, optimizer=, gradient_checkpointing=, compute_capability=, dtype=)
#: -> (seq seed at batch_size, batch seed at seq_len), either None for no seed: where each search
#: starts (`bench.analysis.fit.estimator_seeds` is the estimator's answer).
Seeds = Callable[..., tuple[Optional[int], Optional[int]]]


@dataclass(frozen=True)
class FitPlan:
    """What `bench fit` runs: the probes' shared RunConfig, how the tier runs here, where probes go."""

    config: RunConfig
    mode: str  # "native" | "emulated" | "cpu"
    results_path: Path
    seq_len: int  # the sequence length the batch search runs at


def plan_fit(tier: GpuTier, model: str, recipes: list[str], *, batch_size: int, seq_len: int,
             train: TrainSettings, device: str = "cuda", host: Optional[HostGpu] = None,
             cell_timeout_s: float = 600.0, load_timeout_s: float = 600.0,
             results_path: Optional[Path] = None) -> FitPlan:
    """The RunConfig the probes share (validated; `train.driver` is the driver), the tier's mode on
    `host`, and the probe file (default reports/results/fit-<tier>-<mode>.jsonl). The fit needs peaks,
    not the kernel summary, so the probes skip the profiled fast-path step."""
    config = RunConfig(tier=tier.name, models=[model], recipes=list(recipes), seq_lens=[seq_len],
                       batch_sizes=[batch_size], train=train, device=device, cell_timeout_s=cell_timeout_s,
                       load_timeout_s=load_timeout_s, fast_paths=False)
    config.validate()
    mode = make_plan(config, host=host, detect=False).tier_plan.mode
    return FitPlan(config, mode, results_path or PROBES_DIR / f"fit-{tier.name}-{mode}.jsonl", seq_len)


def _search_recipe(session: ProbeSession, recipe: str, seeds: tuple[Optional[int], Optional[int]], *,
                    batch_size: int, seq_len: int, max_seq_len: int, max_batch_size: int, seq_resolution: int,
                    max_bisect_steps: int, should_stop: Callable[[], Optional[str]],
                    on_probe: Callable[[str, Probe], None]) -> tuple[SearchResult, SearchResult]:
    """Both searches of one recipe: seq_len at batch_size, then batch_size at seq_len."""
    def probe_seq(s: int) -> bool:
        p = session.probe(s, batch_size)
        on_probe(recipe, p)
        return p.fits

    def probe_batch(b: int) -> bool:
        p = session.probe(seq_len, b)
        on_probe(recipe, p)
        return p.fits

    seq_seed, batch_seed = seeds
    try:
        seq_result = search_max(probe_seq, SEQ_MULTIPLE, max_seq_len, seq_seed, multiple_of=SEQ_MULTIPLE,
                                resolution=seq_resolution, max_bisect_steps=max_bisect_steps,
                                should_stop=should_stop)
        batch_result = search_max(probe_batch, 1, max_batch_size, batch_seed, multiple_of=1, resolution=1,
                                  max_bisect_steps=max_bisect_steps + 1, should_stop=should_stop)
    finally:
        session.close()
    return seq_result, batch_result


def run_fit(
    config: RunConfig,
    out_path: Path,
    *,
    batch_size: int,
    seq_len: int,
    max_seq_len: int,
    max_batch_size: int = 256,
    seeds: Optional[Seeds] = None,
    resume: bool = False,
    cache_dir: Optional[Path] = None,
    callbacks: Optional[Callbacks] = None,
    host: Optional[HostGpu] = None,
    time_budget_s: Optional[float] = None,
    max_bisect_steps: int = 1,
    seq_resolution: int = SEQ_MULTIPLE,
    fresh_after_failure: bool = False,
    on_probe: Callable[[str, Probe], None] = lambda recipe, p: None,
) -> list[FitOutcome]:
    """Measure max seq_len (at batch_size) and max batch_size (at seq_len) per recipe of `config`.

    `config` is a RunConfig with one model and the recipes to search (its train.driver drives
    every probe). `seeds` gives each search
    its start (None: the bottom of the range). Every probe is appended to `out_path`. With
    `time_budget_s` (seconds), no probe starts after that; outcomes say where they stopped and a
    later call with resume=True continues from the recorded probes.
    """
    out_path = Path(out_path)
    if out_path.exists() and not resume:
        raise ConfigError(f"{out_path} exists: pass --resume to continue it, or another --out")
    if len(config.models) != 1:
        raise FitError("bench fit searches one model at a time")
    if seq_len <= 0 or batch_size <= 0 or max_seq_len <= 0:
        raise FitError("seq-len, batch-size and max-seq-len must be > 0")
    tier = get_tier(config.tier)
    ref = resolve_model(config.models[0], config.trust_remote_code)
    if ref.max_positions:
        max_seq_len = min(max_seq_len, ref.max_positions)
    if seq_len > max_seq_len:
        raise FitError(f"seq-len {seq_len} is over the search's maximum {max_seq_len}")
    started = time.monotonic()

    def should_stop() -> Optional[str]:
        if time_budget_s is not None and time.monotonic() - started > time_budget_s:
            return f"time budget of {time_budget_s:.0f} s spent (continue with --resume)"
        return None

    outcomes = []
    for recipe in config.recipes:
        session = ProbeSession(replace(config, recipes=[recipe]), out_path, resume=True, cache_dir=cache_dir,
                               callbacks=callbacks, host=host, max_seq_len=max_seq_len,
                               fresh_after_failure=fresh_after_failure)
        tp = session.tier_plan
        host_tier = tier_for_gpu_name(tp.host_gpu_name) if tp.host_gpu_name else None
        train = config.train
        start = (None, None) if seeds is None else seeds(
            ref.config, recipe, tier.memory_cap_bytes, batch_size, seq_len, max_seq_len, max_batch_size,
            driver=train.driver, lora_r=train.lora_r, target_modules=train.target_modules, optimizer=train.optimizer,
            gradient_checkpointing=train.gradient_checkpointing,
            compute_capability=(host_tier or tier).compute_capability, dtype=tp.dtype)
        seq_result, batch_result = _search_recipe(
            session, recipe, start, batch_size=batch_size, seq_len=seq_len, max_seq_len=max_seq_len,
            max_batch_size=max_batch_size, seq_resolution=seq_resolution, max_bisect_steps=max_bisect_steps,
            should_stop=should_stop, on_probe=on_probe)
        outcomes.append(FitOutcome(
            tier=tier.name, mode=tp.mode, host_gpu_name=tp.host_gpu_name, recipe=recipe, driver=train.driver,
            model=ref.name,
            batch_size=batch_size, seq_len=seq_len, seq=seq_result, batch=batch_result,
        ))
    return outcomes
