"""Measured max-fit search: the longest sequence and the largest batch that train under a tier's cap.

Two layers, kept apart so the search can be tested without a GPU:
  * `search_max` (pure): find the largest integer x in [lo, hi] for which a monotone predicate
    probe(x) holds (fits for small x, not for large), starting from an estimate. Probes the
    estimate, steps outward (x 1.25, then doubling / halving) until it has a fitting and a failing
    point, then bisects between them for a bounded number of steps.
  * `ProbeSession` (GPU): each probe is one real training cell (`make_plan` + the launcher's
    `Runner`, worker subprocess, a few optimizer steps) appended to a results JSONL. The loaded
    model is reused between probes and the worker restarted after a probe that failed, so an
    out-of-memory state never leaks into the next measurement. With resume, probes already in
    the file are read back instead of run again, so an interrupted search continues.

A probe "fits" when its cell finished ok and, on an emulated tier, the device peak stayed within
the tier's memory (`over_tier_memory` false): the torch cap does not cover memory outside torch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from bench.schema.record import FINISHED_STATUSES, ResultRecord

SEQ_MULTIPLE = 256  # sequence lengths probed are multiples of this (tokens)


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
    then x0.5) while they fail,
    at most `max_steps_out` times, clamped to [lo, hi]; then bisects the bracket until it is no
    wider than `resolution` (default `multiple_of`) or `max_bisect_steps` probes were spent.
    `should_stop()` returning a reason ends the search early (time budget). Each x is probed at
    most once. Probes only ever land between the largest fit and the smallest failure seen, so
    the answer is read off a monotone record.
    """
    if multiple_of <= 0:
        raise FitError("multiple_of must be > 0")
    lo = _snap_up(max(lo, multiple_of), multiple_of)
    hi = _snap_down(hi, multiple_of)
    if hi < lo:
        raise FitError(f"empty search range after rounding to multiples of {multiple_of}")
    resolution = max(resolution or multiple_of, multiple_of)
    result = SearchResult(None, None)
    seen: dict[int, bool] = {}

    def ask(x: int) -> Optional[bool]:
        if x in seen:
            return seen[x]
        reason = should_stop()
        if reason:
            result.stopped = reason
            return None
        fits = bool(probe(x))
        seen[x] = fits
        result.probes.append((x, fits))
        if fits and (result.max_fit is None or x > result.max_fit):
            if result.min_fail is None or x < result.min_fail:
                result.max_fit = x
        if not fits and (result.min_fail is None or x < result.min_fail):
            result.min_fail = x
        return fits

    x = min(max(_snap_down(seed, multiple_of) if seed else lo, lo), hi)
    fits = ask(x)
    if fits is None:
        return result
    # Step outward until the answer is bracketed (or a bound of the range is reached).
    # Gentle steps first (a good seed is bracketed by its first neighbour), then doubling / halving.
    ups, downs = (1.1, 1.2, 1.5), (0.9, 0.8, 0.6)
    steps = 0
    while result.max_fit is None or result.min_fail is None:
        if (fits and x >= hi) or (not fits and x <= lo):
            return result  # the whole range fits, or even the smallest fails
        if steps == max_steps_out:
            result.stopped = f"not bracketed after {max_steps_out} steps"
            return result
        factor = (ups if fits else downs)[steps] if steps < 3 else (2.0 if fits else 0.5)
        steps += 1
        if fits:
            x = min(max(_snap_up(x * factor, multiple_of), x + multiple_of), hi)
        else:
            x = max(min(_snap_down(x * factor, multiple_of), x - multiple_of), lo)
        fits = ask(x)
        if fits is None:
            return result
    # Bisect the bracket.
    for _ in range(max_bisect_steps):
        gap = result.min_fail - result.max_fit
        if gap <= resolution:
            return result
        mid = _snap_down((result.max_fit + result.min_fail) / 2, multiple_of)
        if mid <= result.max_fit:
            return result
        if ask(mid) is None:
            return result
    if result.min_fail - result.max_fit > resolution and result.stopped is None:
        result.stopped = f"bisection steps used up ({max_bisect_steps})"
    return result


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
    """Runs probe cells of one (backend, model) on one tier through the launcher, one at a time.

    `config` is the RunConfig the probes share (tier, one model, one backend, training settings);
    its seq_lens / batch_sizes are replaced per probe. `max_seq_len` is what the worker is told
    the longest sequence will be (Unsloth sizes its RoPE cache and chooses its checkpointing by it).
    The loaded model is kept between probes (Unsloth compiles each new shape: reusing the process
    keeps that cost to the first shapes). After an out-of-memory probe the worker goes on, as the
    launcher's own runs do, unless `fresh_after_failure`; a probe that then errors (not an OOM) is
    run once more in a fresh worker, so a process left unusable by an OOM cannot end a search.
    """

    def __init__(self, config, out_path: Path, *, resume: bool, cache_dir: Optional[Path] = None,
                 callbacks=None, host=None, max_seq_len: int, fresh_after_failure: bool = False):
        from bench.run.launcher import Callbacks, Runner, make_plan

        if len(config.backends) != 1 or len(config.models) != 1:
            raise FitError("a probe session needs exactly one backend and one model")
        self.config = config
        self.host = host
        self.detect = host is None and config.device == "cuda"
        plan = make_plan(replace(config, seq_lens=[max_seq_len], batch_sizes=[1]), host=host, detect=self.detect)
        self.host_plan = plan
        self.runner = Runner(plan, Path(out_path), resume=resume, cache_dir=cache_dir,
                             callbacks=callbacks or Callbacks())
        self.backend, self.ref, self.max_cells = plan.groups[0]
        self.worker = None
        self.worker_saw_failure = False
        self.fresh_after_failure = fresh_after_failure

    @property
    def tier_plan(self):
        return self.host_plan.tier_plan

    def cell(self, seq_len: int, batch_size: int):
        from bench.run.launcher import make_plan

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
                runner.callbacks.on_status(cell, f"starting {self.backend} worker")
                self.worker, failure = runner.start_worker(self.backend, self.ref, self.max_cells, cell)
                self.worker_saw_failure = False
                if self.worker is None:
                    return self._keep(runner.write(runner.failure_record(cell, *failure)), reused=False)
            dirty = self.worker_saw_failure
            record, alive = runner.run_on_worker(self.worker, cell)
            runner.write(record)
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

    def _keep(self, record: ResultRecord, reused: bool) -> Probe:
        return Probe(record.seq_len, record.batch_size, record.fits_tier, record.status, record.peak_device_bytes,
                     reused)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None


# -- one tier x backend x model: both searches ----------------------------------------------------


@dataclass
class FitOutcome:
    tier: str
    mode: str
    host_gpu_name: Optional[str]
    backend: str
    model: str
    batch_size: int  # the batch the seq search ran at
    seq_len: int  # the seq the batch search ran at
    seq: SearchResult
    batch: SearchResult


def estimator_seeds(config_dict: dict, backend: str, usable_bytes: int, batch_size: int, seq_len: int,
                    max_seq_len: int, max_batch_size: int, **estimate_kw) -> tuple[Optional[int], Optional[int]]:
    """The estimator's largest seq (at batch_size) and batch (at seq_len) under usable_bytes.

    `estimate_kw`: the training settings `bench.analysis.estimate.estimate` takes (lora_r, target_modules,
    optimizer, gradient_checkpointing, dtype, compute_capability)."""
    from bench.analysis.estimate import max_fit_batch_size, max_fit_seq_len

    kw = estimate_kw
    seq = max_fit_seq_len(config_dict, backend, batch_size, usable_bytes, multiple_of=SEQ_MULTIPLE,
                          max_seq_len=max_seq_len, **kw)
    batch = max_fit_batch_size(config_dict, backend, seq_len, usable_bytes, max_batch_size=max_batch_size, **kw)
    return seq, batch


def run_fit(
    config,
    out_path: Path,
    *,
    batch_size: int,
    seq_len: int,
    max_seq_len: int,
    max_batch_size: int = 256,
    resume: bool = False,
    cache_dir: Optional[Path] = None,
    callbacks=None,
    host=None,
    time_budget_s: Optional[float] = None,
    max_bisect_steps: int = 1,
    seq_resolution: int = SEQ_MULTIPLE,
    fresh_after_failure: bool = False,
    on_probe: Callable[[str, Probe], None] = lambda backend, p: None,
) -> list[FitOutcome]:
    """Measure max seq_len (at batch_size) and max batch_size (at seq_len) per backend of `config`.

    `config` is a RunConfig with one model and the backends to search. Every probe is appended to
    `out_path`. With `time_budget_s`, no probe starts after that many seconds; outcomes say where
    they stopped and a later call with resume=True continues from the recorded probes.
    """
    from bench.analysis.estimate import compute_capability_of
    from bench.config.models import resolve_model
    from bench.config.tiers import get_tier

    out_path = Path(out_path)
    if out_path.exists() and not resume:
        from bench.config.settings import ConfigError

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
    for backend in config.backends:
        cfg = replace(config, backends=[backend])
        session = ProbeSession(cfg, out_path, resume=True, cache_dir=cache_dir, callbacks=callbacks, host=host,
                               max_seq_len=max_seq_len, fresh_after_failure=fresh_after_failure)
        host_cc = compute_capability_of(session.tier_plan.host_gpu_name) or tier.compute_capability
        usable = tier.usable_vram_bytes
        train = config.train
        seq_seed, batch_seed = estimator_seeds(
            ref.config, backend, usable, batch_size, seq_len, max_seq_len, max_batch_size, lora_r=train.lora_r,
            target_modules=train.target_modules, optimizer=train.optimizer,
            gradient_checkpointing=train.gradient_checkpointing, compute_capability=host_cc,
            dtype=session.tier_plan.dtype)

        def probe_seq(s: int) -> bool:
            p = session.probe(s, batch_size)
            on_probe(backend, p)
            return p.fits

        def probe_batch(b: int) -> bool:
            p = session.probe(seq_len, b)
            on_probe(backend, p)
            return p.fits

        try:
            seq_result = search_max(probe_seq, SEQ_MULTIPLE, max_seq_len, seq_seed, multiple_of=SEQ_MULTIPLE,
                                    resolution=seq_resolution, max_bisect_steps=max_bisect_steps,
                                    should_stop=should_stop)
            batch_result = search_max(probe_batch, 1, max_batch_size, batch_seed, multiple_of=1, resolution=1,
                                      max_bisect_steps=max_bisect_steps + 1, should_stop=should_stop)
        finally:
            session.close()
        tp = session.tier_plan
        outcomes.append(FitOutcome(
            tier=tier.name, mode=tp.mode, host_gpu_name=tp.host_gpu_name, backend=backend, model=ref.name,
            batch_size=batch_size, seq_len=seq_len, seq=seq_result, batch=batch_result,
        ))
    return outcomes


# -- the "longest context per tier" table, from recorded probes -------------------------------------


@dataclass
class MaxFitRow:
    tier: str
    mode: str
    host_gpu_name: Optional[str]
    backend: str
    model: str
    batch_size: int
    max_seq_len: Optional[int]
    seq_fail: Optional[int]
    seq_fail_status: Optional[str]
    seq_len: int
    max_batch_size: Optional[int]
    batch_fail: Optional[int]
    batch_fail_status: Optional[str]
    probes: int
    predicted_max_seq_len: Optional[int] = None
    predicted_max_batch_size: Optional[int] = None


def _bracket(points: list[tuple[int, bool, str]]) -> tuple[Optional[int], Optional[int], Optional[str]]:
    """(largest fitting x below the smallest failure, smallest failure, its status) of (x, fits, status)."""
    fails = sorted((x, st) for x, ok, st in points if not ok)
    min_fail, status = (fails[0] if fails else (None, None))
    fitting = [x for x, ok, _ in points if ok and (min_fail is None or x < min_fail)]
    return (max(fitting) if fitting else None), min_fail, status


def max_fit_rows(records: list[ResultRecord], batch_size_for: Callable[[str], int],
                 seq_len_for: Callable[[str], int], predict: bool = True) -> list[MaxFitRow]:
    """One row per (tier, mode, backend, model) from probe records (latest per cell).

    The seq search is read from the records at batch `batch_size_for(tier)`, the batch search
    from those at seq `seq_len_for(tier)`. Monotone reading: the largest fitting value below the
    smallest failing one. With `predict`, the estimator's answers for the same settings (those of
    the group's records, on the host GPU they ran on) are filled in beside.
    """
    groups: dict[tuple, list[ResultRecord]] = {}
    for r in records:
        groups.setdefault((r.tier, r.mode, r.backend, r.model), []).append(r)
    rows = []
    for (tier, mode, backend, model), recs in sorted(groups.items()):
        b0, s0 = batch_size_for(tier), seq_len_for(tier)
        seq_pts = [(r.seq_len, r.fits_tier, r.fit_outcome) for r in recs if r.batch_size == b0]
        batch_pts = [(r.batch_size, r.fits_tier, r.fit_outcome) for r in recs if r.seq_len == s0]
        ms, sf, sst = _bracket(seq_pts)
        mb, bf, bst = _bracket(batch_pts)
        host = next(((r.env or {}).get("gpu_name") for r in recs if (r.env or {}).get("gpu_name")), None)
        row = MaxFitRow(tier, mode, host, backend, model, b0, ms, sf, sst, s0, mb, bf, bst, len(recs))
        if predict and mode != "cpu":  # the estimator predicts GPU memory; cpu smoke runs have none
            row.predicted_max_seq_len, row.predicted_max_batch_size = _predict_for(recs[0], host, b0, s0)
        rows.append(row)
    return rows


def _predict_for(template: ResultRecord, host_gpu_name: Optional[str], batch_size: int, seq_len: int):
    """The estimator's max seq / batch for a record's settings on its tier (None, None if unknown)."""
    from bench.analysis.estimate import EstimateError, compute_capability_of
    from bench.config.models import ModelError, resolve_model
    from bench.config.tiers import TierError, get_tier

    try:
        tier = get_tier(template.tier)
        ref = resolve_model(template.model)
        max_seq = ref.max_positions or 131072
        cc = compute_capability_of(host_gpu_name) or tier.compute_capability
        return estimator_seeds(ref.config, template.backend, tier.usable_vram_bytes, batch_size, seq_len,
                               max_seq, 4096, lora_r=template.lora_r, target_modules=template.target_modules,
                               optimizer=template.optimizer, gradient_checkpointing=template.gradient_checkpointing,
                               compute_capability=cc, dtype=template.dtype)
    except (EstimateError, ModelError, TierError):
        return None, None


def render_max_fit_markdown(rows: list[MaxFitRow], sources: list[str]) -> str:
    """The "longest context per tier" table as markdown, with where each number came from."""
    lines = [
        "# Longest context and largest batch per tier (measured)",
        "",
        "Generated by `bench fit` from the probe records in: " + ", ".join(f"`{s}`" for s in sources) + ".",
        "Each number is the largest value whose real training cell (optimizer steps, both backends",
        "with identical settings) finished without running out of memory under the tier's memory; the",
        "next column is the smallest value that failed and how. `emulated` tiers ran on a larger GPU",
        "capped to the tier's memory and dtype (speed is the host's; memory behaves as on the tier).",
        f"`predicted` is the estimator's largest size for the same settings, on the search's grid "
        f"(sequence lengths in multiples of {SEQ_MULTIPLE}), for comparison.",
        "",
        "| tier | mode | backend | model | batch | max seq_len | first failing seq_len | predicted max seq_len "
        "| seq | max batch | first failing batch | predicted max batch | probes |",
        "|---|---|---|---|---:|---:|---|---:|---:|---:|---|---:|---:|",
    ]

    def num(x):
        return "-" if x is None else f"{x:,}"

    def fail(x, st):
        return "none found" if x is None else f"{x:,} ({st})"

    for r in rows:
        mode = r.mode + (f" on {r.host_gpu_name}" if r.mode == "emulated" and r.host_gpu_name else "")
        lines.append(
            f"| {r.tier} | {mode} | {r.backend} | {r.model} | {r.batch_size} | {num(r.max_seq_len)} | "
            f"{fail(r.seq_fail, r.seq_fail_status)} | {num(r.predicted_max_seq_len)} | {r.seq_len:,} | "
            f"{num(r.max_batch_size)} | {fail(r.batch_fail, r.batch_fail_status)} | "
            f"{num(r.predicted_max_batch_size)} | {r.probes} |")
    lines += ["", "A \"-\" max means even the smallest probe failed; \"none found\" means no probe failed up to "
              "the search's maximum (`--max-seq-len` / `--max-batch-size`): the true limit is higher. "
              "\"over tier memory\" means the step ran under the torch allocator's cap but NVML's device peak "
              "(CUDA context and non-torch memory included) exceeded the tier's memory: on the real card "
              "it would not fit, so it counts as a failure."]
    return "\n".join(lines) + "\n"
