"""GPU tiers: the table (bench/data/tiers.json, datasheet figures and indicative prices, with their
sources), the host GPU's description, and the native / emulated decision for a requested tier.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from bench.units import GiB, MiB

TIERS_PATH = Path(__file__).resolve().parent.parent / "data" / "tiers.json"


class TierError(ValueError):
    """A tier request that cannot run on this machine (CLI exit code 2)."""


@dataclass(frozen=True)
class GpuTier:
    name: str
    marketing_name: str
    vram_bytes: int  # memory on the card as sold (e.g. 16 GB)
    usable_vram_bytes: int  # total the driver reports (nvidia-smi "Total"), context included
    # torch's total on a real card of the tier (get_device_properties(0).total_memory, CUDA context
    # included): what a process there can have at most, and an emulated tier's memory cap. From public
    # reports (torch_total_memory_source); basis "torch", or "driver-usable-fallback" (= usable_vram_bytes)
    torch_total_memory_bytes: int
    torch_total_memory_basis: str
    torch_total_memory_source: tuple[str, ...]
    memory_bandwidth_gbps: float  # GB/s
    fp16_tflops: float  # dense fp16 tensor-core TFLOP/s with fp32 accumulate
    bf16_tflops: Optional[float]  # dense bf16 tensor TFLOP/s; None where the chip has no bf16
    compute_capability: tuple[int, int]
    supports_bf16: bool
    supports_fp8: bool
    supports_flash_attention_2: bool
    price_per_hour_usd: float
    name_patterns: tuple[str, ...]  # regexes matched against the NVML device name

    @property
    def dtype(self) -> str:
        """Training dtype a user of this card would use: bf16 where the chip has it, else fp16."""
        return "bfloat16" if self.supports_bf16 else "float16"

    @property
    def memory_cap_bytes(self) -> int:
        """The memory a process on a real card of this tier can have at most (bytes): torch's total
        there (CUDA context included). An emulated run is capped at it; fit verdicts read against it."""
        return self.torch_total_memory_bytes

    @property
    def memory_cap_text(self) -> str:
        """Where the cap comes from, in words."""
        if self.torch_total_memory_basis == "torch":
            return f"torch's total on a real {self.name} (public reports, bench/data/tiers.json)"
        return f"the {self.name}'s driver-reported total (no public report of torch's total found; may be generous)"

    def peak_tflops(self, dtype: str) -> float:
        """Dense tensor-core peak for `dtype` in TFLOP/s."""
        if dtype == "bfloat16" and self.bf16_tflops:
            return self.bf16_tflops
        return self.fp16_tflops

    def to_dict(self) -> dict:
        d = asdict(self)
        d["compute_capability"] = f"{self.compute_capability[0]}.{self.compute_capability[1]}"
        d["dtype"] = self.dtype
        return d


def _load_tiers(path: Path = TIERS_PATH) -> dict[str, GpuTier]:
    """The tier table from bench/data/tiers.json (the figures and their sources are there)."""
    out = {}
    for t in json.loads(path.read_text(encoding="utf-8"))["tiers"]:
        major, minor = (int(x) for x in t["compute_capability"].split("."))
        out[t["name"]] = GpuTier(
            name=t["name"], marketing_name=t["marketing_name"], vram_bytes=int(t["vram_gb"] * 1e9),
            usable_vram_bytes=t["usable_mib"] * MiB, torch_total_memory_bytes=t["torch_total_memory_mib"] * MiB,
            torch_total_memory_basis=t["torch_total_memory_basis"],
            torch_total_memory_source=tuple(t["torch_total_memory_source"]), memory_bandwidth_gbps=t["memory_bandwidth_gbps"],
            fp16_tflops=t["fp16_tflops"], bf16_tflops=t["bf16_tflops"], compute_capability=(major, minor),
            supports_bf16=t["bf16_tflops"] is not None, supports_fp8=t["supports_fp8"],
            supports_flash_attention_2=t["supports_flash_attention_2"],
            price_per_hour_usd=t["price_per_hour_usd"], name_patterns=tuple(t["name_patterns"]))
        DEFAULT_MATRIX[t["name"]] = t["default_matrix"]
    return out


#: The matrix `bench run --gpu-tier X` runs when no --model / --seq-len / --batch-size is given.
DEFAULT_MATRIX: dict[str, dict] = {}
TIERS: dict[str, GpuTier] = _load_tiers()


def get_tier(name: str) -> GpuTier:
    key = name.strip().lower()
    if key not in TIERS:
        raise TierError(f"unknown GPU tier {name!r}; known tiers: {', '.join(TIERS)}")
    return TIERS[key]


def tier_for_gpu_name(gpu_name: str) -> Optional[GpuTier]:
    """The tier whose name pattern matches an NVML device name, or None."""
    for tier in TIERS.values():
        if any(re.search(p, gpu_name, re.IGNORECASE) for p in tier.name_patterns):
            return tier
    return None


@dataclass(frozen=True)
class HostGpu:
    """The GPU this process runs on, as NVML / torch report it."""

    name: str
    total_memory_bytes: int
    compute_capability: tuple[int, int]
    driver: Optional[str] = None

    @property
    def tier(self) -> Optional[GpuTier]:
        return tier_for_gpu_name(self.name)

    @property
    def supports_bf16(self) -> bool:
        return self.compute_capability >= (8, 0)


@dataclass(frozen=True)
class TierPlan:
    """How a requested tier runs on the present hardware.

    mode: "native" (the tier's own GPU), "emulated" (a larger GPU capped to the tier's memory,
    with the tier's dtype), or "cpu" (smoke mode: no GPU figures at all).
    """

    tier: GpuTier
    mode: str
    host_gpu_name: Optional[str]
    host_total_memory_bytes: Optional[int]
    dtype: str
    memory_limit_bytes: Optional[int]  # the emulation cap (GpuTier.memory_cap_bytes); None when native / cpu
    emulated: tuple[str, ...]  # what emulation imposes, for the record and the report

    def to_dict(self) -> dict:
        return {
            "tier": self.tier.name,
            "mode": self.mode,
            "host_gpu_name": self.host_gpu_name,
            "host_total_memory_bytes": self.host_total_memory_bytes,
            "dtype": self.dtype,
            "memory_limit_bytes": self.memory_limit_bytes,
            "emulated": list(self.emulated),
        }


def plan_tier(tier: GpuTier, host: Optional[HostGpu], device: str = "cuda") -> TierPlan:
    """Decide native / emulated / cpu for `tier` on `host`; raise TierError when it cannot run."""
    if device == "cpu":
        return TierPlan(tier, "cpu", None, None, "float32", None, ())
    if host is None:
        raise TierError(
            f"no CUDA GPU found, so tier {tier.name!r} cannot be measured here. "
            f"Use `bench estimate --gpu-tier {tier.name}` for a prediction, or `--device cpu` for a smoke run."
        )
    host_tier = host.tier
    if host_tier is not None and host_tier.name == tier.name:
        return TierPlan(tier, "native", host.name, host.total_memory_bytes, tier.dtype, None, ())
    cap = tier.memory_cap_bytes
    if host.total_memory_bytes < cap:
        smaller = [t.name for t in TIERS.values() if t.memory_cap_bytes <= host.total_memory_bytes]
        hint = f" or a smaller tier ({', '.join(smaller)})" if smaller else ""
        raise TierError(
            f"tier {tier.name!r} needs {cap / GiB:.1f} GiB but the present GPU "
            f"({host.name}) has {host.total_memory_bytes / GiB:.1f} GiB: it cannot be emulated here. "
            f"Use `bench estimate --gpu-tier {tier.name}`{hint}."
        )
    if tier.supports_bf16 and not host.supports_bf16:
        raise TierError(f"tier {tier.name!r} trains in bf16 but the present GPU ({host.name}) has no bf16")
    emulated = [f"memory capped at {cap / GiB:.2f} GiB, {tier.memory_cap_text} (CUDA context included)"]
    emulated.append(f"dtype {tier.dtype}")
    if not tier.supports_fp8:
        emulated.append("no fp8")
    if not tier.supports_flash_attention_2:
        emulated.append("no flash-attention 2 (SDPA)")
    emulated.append("speed is the host GPU's, not the tier's")
    return TierPlan(tier, "emulated", host.name, host.total_memory_bytes, tier.dtype, cap, tuple(emulated))


def torch_memory_fraction(limit_bytes: int, non_torch_bytes: int, host_total_bytes: int) -> float:
    """Fraction for torch.cuda.set_per_process_memory_fraction that emulates a card of `limit_bytes`.

    `limit_bytes` is torch's total on a real card of the tier (GpuTier.memory_cap_bytes): on that card
    the CUDA context, cuBLAS / bitsandbytes buffers and the caching allocator all live inside it. The
    torch cap covers the caching allocator only, so what this process holds outside it at start-up
    (`non_torch_bytes`, measured on the host through NVML: the host's CUDA context and libraries) is
    taken off first. The host's context stands in for the real card's, which cannot be measured here;
    a context on a larger GPU is usually no smaller, so the cap errs on the side of less memory.
    Allocations outside torch made later are caught after the cell by NVML's peak (over_tier_memory).
    `host_total_bytes` is torch's total on the host GPU, the base the fraction is taken of.
    """
    torch_bytes = limit_bytes - non_torch_bytes
    if torch_bytes <= 0:
        raise TierError("the CUDA context alone exceeds the emulated tier's memory")
    return min(1.0, torch_bytes / host_total_bytes)


def default_matrix(tier_name: str) -> dict:
    """The models, seq_lens and batch_sizes `bench run --gpu-tier TIER` runs when none are given
    (DEFAULT_MATRIX; an unknown tier gets the t4 matrix)."""
    return DEFAULT_MATRIX.get(tier_name, DEFAULT_MATRIX["t4"])


def default_seq_len(tier_name: str) -> int:
    """The first sequence length of the tier's default matrix: what a question about "this card"
    is asked at when no --seq-len is given (estimate, fit, doctor)."""
    return default_matrix(tier_name)["seq_lens"][0]
