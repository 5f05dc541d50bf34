import json
import math
import re

import pytest

from bench.config.tiers import (TIERS, TIERS_PATH, GiB, HostGpu, TierError, get_tier, plan_tier, tier_for_gpu_name,
                                torch_memory_fraction)
from bench.units import MiB

H100 = HostGpu("NVIDIA H100 80GB HBM3", 85017493504, (9, 0))
T4 = HostGpu("Tesla T4", 15828320256, (7, 5))


@pytest.mark.parametrize("name,tier", [
    ("Tesla T4", "t4"), ("NVIDIA L4", "l4"), ("NVIDIA A10G", "a10g"), ("NVIDIA GeForce RTX 3090", "rtx3090"),
    ("NVIDIA GeForce RTX 4090", "rtx4090"), ("NVIDIA A100-SXM4-40GB", "a100-40gb"), ("NVIDIA A100 80GB PCIe", "a100-80gb"),
    ("NVIDIA A100-SXM4-80GB", "a100-80gb"), ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"),
])
def test_gpu_names_map_to_tiers(name, tier):
    assert tier_for_gpu_name(name).name == tier


def test_unknown_gpu_has_no_tier():
    assert tier_for_gpu_name("NVIDIA GeForce GTX 1080") is None


def test_all_nine_tiers_with_specs():
    assert set(TIERS) == {"t4", "l4", "a10g", "rtx3090", "rtx4090", "a100-40gb", "a100-80gb", "h100", "h200"}
    for t in TIERS.values():
        assert t.usable_vram_bytes <= t.vram_bytes * 1.1 and t.memory_bandwidth_gbps > 0 and t.price_per_hour_usd > 0


def test_native_when_the_tier_is_the_gpu():
    plan = plan_tier(get_tier("h100"), H100)
    assert plan.mode == "native" and plan.memory_limit_bytes is None and plan.dtype == "bfloat16"


def test_t4_emulated_on_h100_takes_t4_memory_and_fp16():
    plan = plan_tier(get_tier("t4"), H100)
    assert plan.mode == "emulated"
    assert plan.memory_limit_bytes == TIERS["t4"].torch_total_memory_bytes < TIERS["t4"].usable_vram_bytes
    assert plan.dtype == "float16"  # the T4 has no bf16
    assert any("speed is the host GPU's" in e for e in plan.emulated)
    assert plan.host_gpu_name == H100.name


def test_larger_tier_than_gpu_is_refused_with_a_pointer():
    with pytest.raises(TierError, match="bench estimate"):
        plan_tier(get_tier("a100-40gb"), T4)


def test_no_gpu_is_refused_unless_cpu_mode():
    with pytest.raises(TierError, match="no CUDA GPU"):
        plan_tier(get_tier("t4"), None)
    assert plan_tier(get_tier("t4"), None, device="cpu").mode == "cpu"


def test_bf16_tier_cannot_be_emulated_on_a_gpu_without_bf16():
    big_old = HostGpu("Tesla V100-SXM2-32GB", 34 * GiB, (7, 0))
    with pytest.raises(TierError, match="bf16"):
        plan_tier(get_tier("l4"), big_old)


def test_unknown_tier():
    with pytest.raises(TierError, match="known tiers"):
        get_tier("v100")


def test_memory_fraction_leaves_room_for_the_context():
    frac = torch_memory_fraction(limit_bytes=15 * GiB, non_torch_bytes=1 * GiB, host_total_bytes=80 * GiB)
    assert frac == pytest.approx(14 / 80)
    with pytest.raises(TierError):
        torch_memory_fraction(limit_bytes=GiB, non_torch_bytes=2 * GiB, host_total_bytes=80 * GiB)


TABLE = {t["name"]: t for t in json.loads(TIERS_PATH.read_text(encoding="utf-8"))["tiers"]}
H200 = HostGpu("NVIDIA H200", TABLE["h200"]["usable_mib"] * MiB, (9, 0))


@pytest.mark.parametrize("name", [n for n in TABLE if n != "h200"])
def test_emulation_caps_at_torchs_total_on_the_real_card(name):
    """The cap handed to an emulated run is the table's torch figure for the tier (context included),
    never the larger driver total; the plan says where the figure comes from."""
    plan = plan_tier(get_tier(name), H200)
    assert plan.mode == "emulated"
    assert plan.memory_limit_bytes == TABLE[name]["torch_total_memory_mib"] * MiB
    assert plan.memory_limit_bytes <= TABLE[name]["usable_mib"] * MiB
    basis = "torch's total on a real" if TABLE[name]["torch_total_memory_basis"] == "torch" else "driver-reported"
    assert basis in plan.emulated[0]


def _quoted_gib(source: str) -> list[float]:
    return [float(x) for x in re.findall(r"total capacity of ([0-9.]+) GiB|([0-9.]+) GiB total capacity", source)
            for x in x if x]


@pytest.mark.parametrize("name", list(TABLE))
def test_every_torch_figure_cites_its_public_sources(name):
    """Each tier's torch figure is the smallest cited report, read as the lower bound of its two-decimal GiB
    figure (or a deviceQuery byte count); a tier without one falls back to the driver total and says so."""
    row = TABLE[name]
    sources = row["torch_total_memory_source"]
    assert sources and all(isinstance(s, str) and s for s in sources)
    if row["torch_total_memory_basis"] == "driver-usable-fallback":
        assert row["torch_total_memory_mib"] == row["usable_mib"] and "falls back" in sources[0]
        return
    assert row["torch_total_memory_basis"] == "torch"
    assert all(s.startswith("https://") for s in sources)
    bounds = [math.floor((g - 0.005) * 1024) for s in sources for g in _quoted_gib(s)]
    bounds += [int(b) // MiB for s in sources for b in re.findall(r"\(([0-9]+) bytes\)", s)]
    assert bounds and row["torch_total_memory_mib"] == min(bounds)


def test_t4_on_an_h200_leaves_the_hosts_context_out_of_the_torch_cap():
    """The fraction handed to torch: the real T4's torch total less what the process holds outside torch
    on the host (its CUDA context), over the host's total."""
    t4 = plan_tier(get_tier("t4"), H200)
    context = 512 * MiB
    frac = torch_memory_fraction(t4.memory_limit_bytes, context, H200.total_memory_bytes)
    assert frac * H200.total_memory_bytes == pytest.approx(TABLE["t4"]["torch_total_memory_mib"] * MiB - context)
