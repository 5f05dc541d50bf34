"""GPU tiers: datasheet specs, host GPU detection and the native / emulated decision.

Specs are the vendors' published figures (dense tensor throughput, no sparsity) and the total
memory the driver reports on that card; they are configuration, not measurements. Prices are
indicative on-demand cloud prices in USD/hour (late 2026) used only to turn measured tokens/s
into a cost; override them with `--price-per-hour`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Optional

GiB = 1024**3
MiB = 1024**2


class TierError(ValueError):
    """A tier request that cannot run on this machine (CLI exit code 2)."""


@dataclass(frozen=True)
class GpuTier:
    name: str
    marketing_name: str
    vram_bytes: int  # memory on the card as sold (e.g. 16 GB)
    usable_vram_bytes: int  # total the driver reports (nvidia-smi "Total"), context included
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


def _t(name, marketing, vram_gb, usable_mib, bw, fp16, bf16, cc, fp8, fa2, price, patterns):
    return GpuTier(
        name=name,
        marketing_name=marketing,
        vram_bytes=int(vram_gb * 1e9),
        usable_vram_bytes=usable_mib * MiB,
        memory_bandwidth_gbps=bw,
        fp16_tflops=fp16,
        bf16_tflops=bf16,
        compute_capability=cc,
        supports_bf16=bf16 is not None,
        supports_fp8=fp8,
        supports_flash_attention_2=fa2,
        price_per_hour_usd=price,
        name_patterns=patterns,
    )


# Sources: NVIDIA datasheets / architecture whitepapers (T4, L4, A100, H100, H200; GA102 and AD102
# whitepapers for the GeForce cards, fp32-accumulate rates); A10G tensor rate per AWS/Baseten.
TIERS: dict[str, GpuTier] = {
    t.name: t
    for t in [
        _t("t4", "NVIDIA T4 16GB", 16, 15360, 320, 65.0, None, (7, 5), False, False, 0.35,
           (r"\bT4\b",)),
        _t("l4", "NVIDIA L4 24GB", 24, 23034, 300, 121.0, 121.0, (8, 9), True, True, 0.70,
           (r"\bL4\b",)),
        _t("a10g", "NVIDIA A10G 24GB", 24, 23028, 600, 70.0, 70.0, (8, 6), False, True, 1.01,
           (r"\bA10G\b",)),
        _t("rtx3090", "GeForce RTX 3090 24GB", 24, 24576, 936, 71.0, 71.0, (8, 6), False, True, 0.22,
           (r"RTX 3090",)),
        _t("rtx4090", "GeForce RTX 4090 24GB", 24, 24564, 1008, 165.2, 165.2, (8, 9), True, True, 0.34,
           (r"RTX 4090",)),
        _t("a100-40gb", "NVIDIA A100 40GB", 40, 40960, 1555, 312.0, 312.0, (8, 0), False, True, 1.29,
           (r"A100.*40GB",)),
        _t("a100-80gb", "NVIDIA A100 80GB", 80, 81920, 2039, 312.0, 312.0, (8, 0), False, True, 1.79,
           (r"A100.*80GB",)),
        _t("h100", "NVIDIA H100 80GB (SXM)", 80, 81559, 3350, 989.0, 989.0, (9, 0), True, True, 2.49,
           (r"H100",)),
        _t("h200", "NVIDIA H200 141GB (SXM)", 141, 143771, 4800, 989.0, 989.0, (9, 0), True, True, 3.50,
           (r"H200",)),
    ]
}


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
    memory_limit_bytes: Optional[int]  # device bytes the tier offers; None when native / cpu
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
    if host.total_memory_bytes < tier.usable_vram_bytes:
        smaller = [t.name for t in TIERS.values() if t.usable_vram_bytes <= host.total_memory_bytes]
        hint = f" or a smaller tier ({', '.join(smaller)})" if smaller else ""
        raise TierError(
            f"tier {tier.name!r} needs {tier.usable_vram_bytes / GiB:.1f} GiB but the present GPU "
            f"({host.name}) has {host.total_memory_bytes / GiB:.1f} GiB: it cannot be emulated here. "
            f"Use `bench estimate --gpu-tier {tier.name}`{hint}."
        )
    if tier.supports_bf16 and not host.supports_bf16:
        raise TierError(f"tier {tier.name!r} trains in bf16 but the present GPU ({host.name}) has no bf16")
    emulated = [f"memory capped at {tier.usable_vram_bytes / GiB:.2f} GiB (device total incl. CUDA context)"]
    emulated.append(f"dtype {tier.dtype}")
    if not tier.supports_fp8:
        emulated.append("no fp8")
    if not tier.supports_flash_attention_2:
        emulated.append("no flash-attention 2 (SDPA)")
    emulated.append("speed is the host GPU's, not the tier's")
    return TierPlan(
        tier, "emulated", host.name, host.total_memory_bytes, tier.dtype, tier.usable_vram_bytes, tuple(emulated)
    )


def torch_memory_fraction(limit_bytes: int, non_torch_bytes: int, host_total_bytes: int) -> float:
    """Fraction for torch.cuda.set_per_process_memory_fraction that emulates a card of `limit_bytes`.

    The torch cap only covers the caching allocator, so the CUDA context and other allocations
    made outside it (`non_torch_bytes`, measured on the host) are taken off first, as they would
    be on the real card.
    """
    torch_bytes = limit_bytes - non_torch_bytes
    if torch_bytes <= 0:
        raise TierError("the CUDA context alone exceeds the emulated tier's memory")
    return min(1.0, torch_bytes / host_total_bytes)


# The matrix `bench run --gpu-tier X` runs when no --model / --seq-len / --batch-size is given:
# what a user of that card asks first (an 8B-class model at the context lengths people train).
DEFAULT_MATRIX: dict[str, dict] = {
    "t4": {"models": ["llama-3.1-8b"], "seq_lens": [1024, 2048], "batch_sizes": [1, 2]},
    "l4": {"models": ["llama-3.1-8b"], "seq_lens": [2048, 4096], "batch_sizes": [1, 2]},
    "a10g": {"models": ["llama-3.1-8b"], "seq_lens": [2048, 4096], "batch_sizes": [1, 2]},
    "rtx3090": {"models": ["llama-3.1-8b"], "seq_lens": [2048, 4096], "batch_sizes": [1, 2]},
    "rtx4090": {"models": ["llama-3.1-8b"], "seq_lens": [2048, 4096], "batch_sizes": [1, 2]},
    "a100-40gb": {"models": ["llama-3.1-8b"], "seq_lens": [2048, 4096], "batch_sizes": [2, 4]},
    "a100-80gb": {"models": ["llama-3.1-8b"], "seq_lens": [2048, 4096, 8192], "batch_sizes": [2, 4]},
    "h100": {"models": ["llama-3.1-8b"], "seq_lens": [2048, 4096, 8192], "batch_sizes": [2, 4]},
    "h200": {"models": ["llama-3.1-8b"], "seq_lens": [2048, 4096, 8192], "batch_sizes": [2, 4]},
}


def default_matrix(tier_name: str) -> dict:
    """The models, seq_lens and batch_sizes `bench run --gpu-tier TIER` runs when none are given
    (DEFAULT_MATRIX; an unknown tier gets the t4 matrix)."""
    return DEFAULT_MATRIX.get(tier_name, DEFAULT_MATRIX["t4"])


def default_seq_len(tier_name: str) -> int:
    """The first sequence length of the tier's default matrix: what a question about "this card"
    is asked at when no --seq-len is given (estimate, fit, doctor)."""
    return default_matrix(tier_name)["seq_lens"][0]
