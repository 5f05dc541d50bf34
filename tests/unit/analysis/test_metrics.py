import pytest

from bench.analysis import metrics as measure
from bench.config.models import SHIPPED
from bench.run.checkpoint import parameter_counts


def test_throughput_over_timed_steps():
    assert measure.throughput([4096] * 3, [0.5, 0.5, 1.0]) == pytest.approx(4096 * 3 / 2.0)
    assert measure.throughput([100, 300], [1.0, 1.0]) == pytest.approx(200.0)  # --data: tokens vary per step
    assert measure.throughput([], []) is None
    assert measure.throughput([1, 2], [1.0]) is None  # mismatched lists are not a throughput


def test_flops_per_token_of_tiny_llama_by_hand():
    """tiny-llama (bench/config/architectures/tiny-llama.json): hidden 64, 4 heads x head_dim 16, 2 key-value
    heads, intermediate 128, 2 layers, vocab 512, untied lm_head; at seq_len 32."""
    config = SHIPPED["tiny-llama"].config_dict()
    per_layer = (64 * 64          # q_proj: hidden -> 4 heads x 16
                 + 64 * 32 * 2    # k_proj, v_proj: hidden -> 2 kv heads x 16
                 + 64 * 64        # o_proj
                 + 64 * 128 * 3)  # gate_proj, up_proj, down_proj
    head = 512 * 64  # lm_head: hidden -> vocab
    n = 2 * per_layer + head
    assert (per_layer, head, n) == (36_864, 32_768, 106_496)
    counts = parameter_counts(config)  # the real transformers class, on the meta device
    assert (counts["matmul"], counts["head"]) == (n, head)
    layers, width = measure.attention_dims(config)
    assert (layers, width) == (2, 64)
    attention = 2 * 2 * 32 * 64  # causal: 2 x layers x seq x width, half of non-causal 4 x ...
    assert attention == 8_192 and measure.causal_attention_flops(2, 64, 32) == attention
    model = 4 * n + 3 * attention  # forward 2N + A, activation gradients 2N + 2A
    assert model == 450_560
    assert measure.flops_per_token(n, layers, width, 32) == model
    recompute = 2 * (n - head) + attention  # the decoder layers' forward again; lm_head is not recomputed
    assert recompute == 155_648
    assert measure.hardware_flops_per_token(n, head, layers, width, 32, checkpointing=True) == model + recompute
    assert measure.hardware_flops_per_token(n, head, layers, width, 32, checkpointing=False) == model


def _dims(name: str, seq_len: int) -> dict:
    config = SHIPPED[name].config_dict()
    counts = parameter_counts(config)
    layers, width = measure.attention_dims(config)
    return dict(matmul_params=counts["matmul"], head_params=counts["head"], n_layers=layers, attn_width=width,
                seq_len=seq_len)


def test_mfu_below_hfu_with_checkpointing_equal_without():
    dims = _dims("llama-3.1-8b", 2048)
    model = measure.flops_per_token(dims["matmul_params"], dims["n_layers"], dims["attn_width"], dims["seq_len"])
    with_ckpt = measure.hardware_flops_per_token(**dims, checkpointing=True)
    without = measure.hardware_flops_per_token(**dims, checkpointing=False)
    tokens_per_s, peak = 3000.0, 989.0
    assert measure.mfu(model, tokens_per_s, peak) < measure.hfu(with_ckpt, tokens_per_s, peak)
    assert measure.mfu(model, tokens_per_s, peak) == measure.hfu(without, tokens_per_s, peak)
    # the recompute adds a forward (2 of the 4 units per weight, less lm_head): HFU / MFU near 1.5
    assert 1.4 < with_ckpt / model < 1.5


def test_the_old_mfu_overstated_by_about_one_and_a_half():
    """Issue 11: before schema 3, MFU counted the recompute and non-causal attention, 6N + 4 x (4 L s d) with
    checkpointing: about 1.5x the model FLOPs of today's convention (4N + 3 x 2 L s d)."""
    for name, seq in (("llama-3.1-8b", 2048), ("mistral-7b-v0.3", 1024), ("llama-3.2-1b", 512)):
        d = _dims(name, seq)
        old = 6 * d["matmul_params"] + 4 * (4 * d["n_layers"] * seq * d["attn_width"])
        new = measure.flops_per_token(d["matmul_params"], d["n_layers"], d["attn_width"], seq)
        assert 1.45 < old / new < 1.65, (name, old / new)


def test_mfu_and_hfu_unknown_without_a_figure():
    assert measure.mfu(1e9, 1000.0, 1.0) == pytest.approx(1.0)
    assert measure.hfu(2e9, 1000.0, 1.0) == pytest.approx(2.0)
    for args in ((1e9, None, 1.0), (1e9, 10.0, None), (None, 10.0, 1.0)):
        assert measure.mfu(*args) is None and measure.hfu(*args) is None


def test_energy_per_thousand_tokens():
    # NVML's counter in millijoules: 1,250,000 mJ -> 1,500,500 mJ is 250.5 J
    assert measure.energy_between(1_250_000, 1_500_500) == pytest.approx(250.5)
    assert measure.joules_per_1k_tokens(250.5, 50_100) == pytest.approx(5.0)  # 250.5 J x 1000 / 50,100 tokens
    assert measure.energy_between(None, 5) is None and measure.energy_between(5, None) is None
    assert measure.energy_between(2_000, 1_000) is None  # the counter restarts when the driver reloads
    assert measure.joules_per_1k_tokens(None, 100) is None and measure.joules_per_1k_tokens(10.0, 0) is None


def test_speedup_and_memory_reduction():
    assert measure.speedup(100.0, 200.0) == 2.0
    assert measure.memory_reduction(10, 4) == pytest.approx(0.6)
    assert measure.memory_reduction(10, 12) == pytest.approx(-0.2)
    assert measure.memory_reduction(None, 4) is None


def test_parity_matches_on_equal_counts_and_close_losses():
    v = measure.parity(100, 100, 11.7600, 11.7605)
    assert v["matched"] and not v["reasons"]


def test_parity_fails_on_trainable_count_or_loss():
    v = measure.parity(100, 101, 11.76, 11.76)
    assert not v["matched"] and "trainable parameters differ" in v["reasons"][0]
    v = measure.parity(100, 100, 11.76, 11.90)
    assert not v["matched"] and "first-step losses differ" in v["reasons"][0]
    assert not measure.parity(100, 100, None, 11.9)["matched"]


def test_relative_difference_symmetric():
    assert measure.relative_difference(1.0, 2.0) == measure.relative_difference(2.0, 1.0) == 0.5
    assert measure.relative_difference(0.0, 0.0) == 0.0
