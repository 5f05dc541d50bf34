import pytest

from bench.analysis import metrics as measure


def test_throughput_over_timed_steps():
    assert measure.throughput([4096] * 3, [0.5, 0.5, 1.0]) == pytest.approx(4096 * 3 / 2.0)
    assert measure.throughput([100, 300], [1.0, 1.0]) == pytest.approx(200.0)  # --data: tokens vary per step
    assert measure.throughput([], []) is None
    assert measure.throughput([1, 2], [1.0]) is None  # mismatched lists are not a throughput


def test_flops_per_token_follows_the_documented_formula():
    n, layers, width, seq = 7_000_000_000, 32, 4096, 2048
    attn = 4 * layers * seq * width
    assert measure.flops_per_token(n, layers, width, seq, checkpointing=True) == 6 * n + 4 * attn
    assert measure.flops_per_token(n, layers, width, seq, checkpointing=False) == 4 * n + 3 * attn


def test_mfu():
    assert measure.mfu(1e9, 1000.0, 1.0) == pytest.approx(1.0)
    assert measure.mfu(1e9, None, 1.0) is None and measure.mfu(1e9, 10.0, None) is None


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
