import pytest

from bench.config.tiers import GiB, TIERS, HostGpu, TierError, get_tier, plan_tier, tier_for_gpu_name, torch_memory_fraction

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
    assert plan.memory_limit_bytes == TIERS["t4"].usable_vram_bytes
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
