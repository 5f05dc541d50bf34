"""The one result record: what a cell measured, where, with what, and how it ended.

One record per cell (a recipe x model x seq_len x batch_size configuration). Memory fields are
bytes, time fields seconds, throughput tokens per second. Storage is `bench.schema.store`.

Schema versions: 3 (repeats, the timed window's statistics, mfu / hfu, energy, the GPU's state) is
written; 2 (recipes, drivers, data) and 1 (before recipes) are still read, by `upgrade`: a version-1
record ran the hand-written loop on synthetic data, its `backend` names what it ran (hf: the hf-kbit
recipe; unsloth: the unsloth recipe); a version-2 or -1 record is repeat 0 of 1, and its `mfu` and
`flops_per_token` read as None: they counted the recompute and non-causal attention, today's `hfu`
counts causal attention, so neither figure is today's (bench/analysis/metrics.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING as dataclass_missing
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable, Optional

from bench.analysis import stats
from bench.schema.gpu_state import with_state_warnings

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
STATUSES = ("ok", "oom", "error", "timeout", "skipped", "nan_loss")
#: What a version-1 record's backend ran, as a recipe (bench.config.recipes).
LEGACY_RECIPE = {"hf": "hf-kbit", "unsloth": "unsloth"}
LEGACY_DRIVER = "loop"
FINISHED_STATUSES = ("ok", "oom", "skipped", "nan_loss")  # what --resume does not run again


class ResultsError(ValueError):
    """An unreadable or inconsistent results file (CLI exit code 2)."""


@dataclass
class ResultRecord:
    # identity
    schema_version: int
    run_id: str
    cell_id: str
    pair_key: str  # same for every recipe's cell of one configuration
    backend: str  # the recipe's library family: "hf" | "unsloth"
    recipe: str  # bench.config.recipes: hf-trl, hf-kbit, hf-liger, unsloth, hf-lora16, unsloth-lora16
    driver: str  # "trainer" (TRL's SFTTrainer) | "loop" (the suite's plain loop)
    model: str  # shipped name, local path or hub id
    model_source: str  # "synthetic" | "local" | "hub"
    tier: str
    mode: str  # "native" | "emulated" | "cpu"
    # configuration
    seq_len: int
    batch_size: int
    grad_accum: int
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: list[str]
    optimizer: str
    learning_rate: float
    gradient_checkpointing: str  # "none" | "standard" | "unsloth"
    dtype: str
    attn_implementation: str
    steps: int  # the timed window's minimum optimizer steps (--min-steps; it also runs --min-seconds)
    warmup_steps: int  # untimed optimizer steps before them (the first one is first_step_s)
    seed: int
    # outcome
    status: str
    error: Optional[str] = None
    # repeats: this record is measurement `repeat` (0-based) of `repeats`, each in a fresh worker
    repeat: int = 0
    repeats: int = 1
    min_seconds: Optional[float] = None  # the timed window's minimum seconds (--min-seconds); None: steps only
    # memory (bytes); GPU fields are None in cpu mode
    peak_allocated_bytes: Optional[int] = None  # torch.cuda.max_memory_allocated over the cell
    peak_reserved_bytes: Optional[int] = None  # torch.cuda.max_memory_reserved over the cell
    # times torch's caching allocator freed its cache and retried a cudaMalloc during the cell (memory
    # pressure near the cap; each retry synchronises the GPU and slows that step); None: not read (cpu, older)
    allocator_retries: Optional[int] = None
    peak_device_bytes: Optional[int] = None  # NVML used memory, sampled in a thread (context incl.)
    device_memory_source: Optional[str] = None  # "nvml-process" | "nvml-device" | None
    memory_limit_bytes: Optional[int] = None  # emulation cap: torch's total on a real card of the tier; None if native
    torch_memory_fraction: Optional[float] = None  # cap handed to torch when emulating
    over_tier_memory: Optional[bool] = None  # device peak above the tier's memory (emulated only)
    peak_rss_bytes: Optional[int] = None  # process peak RSS (all modes)
    # time (seconds)
    load_s: Optional[float] = None  # model load + quantise + LoRA wrap, once per worker
    first_step_s: Optional[float] = None  # first optimizer step, compilation included
    step_s: list[float] = field(default_factory=list)  # every optimizer step, warm-up included
    timed_steps: Optional[int] = None  # optimizer steps in the timed window (>= steps)
    step_s_median: Optional[float] = None  # median timed step (s)
    step_s_p20: Optional[float] = None  # 20th percentile of the timed steps (s)
    step_s_p80: Optional[float] = None  # 80th percentile of the timed steps (s)
    step_s_cv: Optional[float] = None  # coefficient of variation of the timed steps (stdev / mean)
    tokens_per_step: Optional[int] = None  # batch_size * seq_len * grad_accum (the padded size with --data)
    tokens_per_s: Optional[float] = None  # timed steps only; non-padding tokens
    tokens_per_s_padded: Optional[float] = None  # timed steps, padding counted (= tokens_per_s on synthetic data)
    step_tokens: list[int] = field(default_factory=list)  # non-padding tokens of every optimizer step
    flops_per_token: Optional[float] = None  # model FLOPs per trained token (see bench/analysis/metrics.py)
    hardware_flops_per_token: Optional[float] = None  # FLOPs the GPU executes per token, recompute included
    peak_tflops: Optional[float] = None  # the host GPU's dense peak for `dtype`
    mfu: Optional[float] = None  # 0..1: model FLOPs utilisation against the host GPU's peak
    hfu: Optional[float] = None  # 0..1: hardware FLOPs utilisation (recompute counted)
    energy_j: Optional[float] = None  # NVML energy counter over the timed window (J); None: unsupported
    joules_per_1k_tokens: Optional[float] = None  # energy_j per 1,000 trained (non-padding) tokens
    # the GPU while the cell ran (bench/run/device.py): SM clock, temperature, power limit, throttle
    # reasons, other processes; None on a CPU
    gpu_state: Optional[dict[str, Any]] = None
    # the host's CPUs over the timed steps (bench/schema/host_cpu.py): cores kept busy by every process, by this
    # worker, by the others; None where unread (no /proc/stat, older records)
    host_cpu: Optional[dict[str, Any]] = None
    # training
    losses: list[float] = field(default_factory=list)  # one per optimizer step
    loss_first: Optional[float] = None
    loss_last: Optional[float] = None
    trainable_params: Optional[int] = None
    total_params: Optional[int] = None
    # what training really used, read back from the live model and optimizer (parity beyond step one)
    training_fingerprint: Optional[dict[str, Any]] = None
    # data: None for synthetic fixed-length token batches; else bench.run.dataset.DatasetInfo as a dict
    data: Optional[dict[str, Any]] = None
    # parity against the comparison's reference recipe (set by bench.schema.pairs.annotate_parity)
    matched: Optional[bool] = None
    parity: Optional[dict[str, Any]] = None
    # backend details
    quantization: Optional[dict[str, Any]] = None  # the bnb config read back from the model
    fast_paths: Optional[dict[str, str]] = None  # filled by kernels_check integration
    backend_info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # where it ran: executor (serial | local | dask), host, gpu_index (NVML) and gpu_uuid, and cells_beside:
    # the most other cells measured at the same time on this host or cluster while it ran
    placement: Optional[dict[str, Any]] = None
    # provenance
    started_at: Optional[str] = None  # ISO 8601 UTC
    finished_at: Optional[str] = None
    env: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """One JSON line; a non-finite number anywhere (a NaN loss, say) is written as null."""
        return json.dumps(_finite(asdict(self)), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ResultRecord":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ResultsError(f"unknown fields {unknown}")
        required = [
            f.name
            for f in fields(cls)
            if f.name not in data and f.default is dataclass_missing and f.default_factory is dataclass_missing
        ]
        if required:
            raise ResultsError(f"missing fields {required}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def data_sha256(self) -> Optional[str]:
        """The training data's content hash; None for synthetic token batches."""
        return (self.data or {}).get("sha256")

    @property
    def packing(self) -> Optional[bool]:
        """Whether examples were packed into rows (None: synthetic data, always full rows)."""
        return (self.data or {}).get("packing") if self.data else None

    @property
    def fits_tier(self) -> bool:
        """Ran ok and stayed within the tier's memory (emulated: NVML's peak too, outside the torch cap)."""
        return self.ok and not self.over_tier_memory

    @property
    def fit_outcome(self) -> str:
        """The status, with an ok cell past the tier's memory said as 'over tier memory'."""
        return "over tier memory" if self.ok and self.over_tier_memory else self.status

    def timed_step_tokens(self) -> list[int]:
        """Tokens of each timed step (`step_tokens[warmup_steps:]`); a record that did not store them
        (synthetic data before schema 3: every row full length) trained `tokens_per_step` each step."""
        timed_steps = max(len(self.step_s) - self.warmup_steps, 0)
        if self.step_tokens:
            return list(self.step_tokens[self.warmup_steps:])
        if self.data is None and self.tokens_per_step:
            return [self.tokens_per_step] * timed_steps
        return []

    def timed_rates(self) -> list[float]:
        """Per-step throughput (tokens/s) of the timed steps (`step_s[warmup_steps:]`): what a cell's speed,
        its interval and a gate baseline's samples are read from (bench.analysis.speed)."""
        return stats.rates(self.timed_step_tokens(), self.step_s[self.warmup_steps:])


def rate_groups(records: Iterable[ResultRecord]) -> list[list[float]]:
    """The timed per-step tokens/s of each ok repeat of one cell, in repeat order (one list per repeat,
    as bench.analysis.stats' bootstrap takes them); repeats without timed steps are left out."""
    ordered = sorted(records, key=lambda r: r.repeat)
    return [rates for r in ordered if r.ok and (rates := r.timed_rates())]


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A record dict of any readable schema version as a current one (version 1: see the module doc); its
    GPU-state warnings re-derived from its gpu_state (only version 3 records have one)."""
    version = data.get("schema_version")
    if version == SCHEMA_VERSION:
        if not data.get("gpu_state"):
            return data
        # warnings about the GPU's state follow today's rule (gpu_state.state_warnings), not the writer's
        return {**data, "warnings": with_state_warnings(data.get("warnings") or [], data["gpu_state"])}
    if version not in READABLE_VERSIONS:
        raise ResultsError(f"schema_version {version!r}, this qlora-bench reads {', '.join(map(str, READABLE_VERSIONS))}")
    out = dict(data)
    if version == 1:
        out.setdefault("recipe", LEGACY_RECIPE.get(data.get("backend"), data.get("backend")))
        out.setdefault("driver", LEGACY_DRIVER)
    if version in (1, 2):
        # before version 3, `mfu` counted the recompute and non-causal attention: neither today's mfu nor
        # today's hfu (which counts causal attention), so both read as unknown until re-measured
        out["mfu"] = out["flops_per_token"] = None
    out["schema_version"] = SCHEMA_VERSION
    return out


def _finite(value: Any) -> Any:
    """`value` with every non-finite float (NaN, inf) replaced by None, at any depth."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
