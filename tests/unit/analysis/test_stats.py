"""Interval and CV math against samples whose answers are known by hand."""

import math

import pytest

from bench.analysis import stats


def test_quantiles_interpolate_like_numpy():
    values = [4.0, 1.0, 3.0, 2.0, 5.0]
    assert stats.median(values) == 3.0
    assert stats.quantile(values, 0.2) == pytest.approx(1.8)  # 0.2 * 4 = 0.8 -> 1 + 0.8 * (2 - 1)
    assert stats.quantile(values, 0.8) == pytest.approx(4.2)
    assert stats.quantile([1.0, 2.0], 0.5) == 1.5
    assert stats.quantile([], 0.5) is None
    with pytest.raises(ValueError):
        stats.quantile(values, 1.5)


def test_cv_is_sample_stdev_over_mean():
    # mean 2, deviations -1, 0, 1: sample variance 1, stdev 1 -> CV 0.5
    assert stats.coefficient_of_variation([1.0, 2.0, 3.0]) == pytest.approx(0.5)
    assert stats.coefficient_of_variation([2.0, 2.0, 2.0]) == 0.0
    assert stats.coefficient_of_variation([2.0]) is None
    assert stats.coefficient_of_variation([0.0, 0.0]) is None


def test_noisy_flag_is_above_the_documented_threshold():
    assert stats.NOISY_CV == 0.05
    steady = [1.00, 1.01, 0.99, 1.00, 1.02, 0.98]
    jumpy = [1.0, 1.3, 0.8, 1.2, 0.7, 1.1]
    assert not stats.step_stats(steady).noisy
    assert stats.step_stats(jumpy).noisy
    assert not stats.is_noisy(None)
    s = stats.step_stats([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert (s.n, s.median_s, s.p20_s, s.p80_s) == (6, 3.5, 2.0, 5.0)


def test_bootstrap_interval_of_identical_values_is_a_point():
    iv = stats.bootstrap_interval([[2.0] * 10, [2.0] * 10])
    assert (iv.estimate, iv.low, iv.high) == (2.0, 2.0, 2.0)


def test_bootstrap_interval_covers_the_median_and_narrows_with_more_steps():
    few = [[1.0, 1.1, 0.9, 1.05, 0.95]]
    many = [[1.0, 1.1, 0.9, 1.05, 0.95] * 20]
    a, b = stats.bootstrap_interval(few), stats.bootstrap_interval(many)
    assert a.low <= a.estimate <= a.high and b.low <= b.estimate <= b.high
    assert (b.high - b.low) < (a.high - a.low)
    assert stats.bootstrap_interval(few) == a  # seeded: deterministic


def test_a_shift_between_repeats_widens_the_interval():
    """Resampling repeats first: two repeats 10 % apart give a wider interval than one repeat's jitter."""
    steady = [[1.0 + 0.01 * (i % 3) for i in range(20)]] * 2
    shifted = [[1.0 + 0.01 * (i % 3) for i in range(20)], [1.1 + 0.01 * (i % 3) for i in range(20)]]
    a, b = stats.bootstrap_interval(steady), stats.bootstrap_interval(shifted)
    assert (b.high - b.low) > 3 * (a.high - a.low)


def test_too_little_data_has_no_interval():
    assert not stats.bootstrap_interval([[1.0]]).known
    assert stats.bootstrap_interval([[1.0]]).estimate == 1.0
    assert stats.bootstrap_interval([[], []]).estimate is None
    assert not stats.bootstrap_ratio([[2.0]], [[1.0, 1.0]]).known
    assert stats.bootstrap_ratio([[2.0]], [[1.0, 1.0]]).estimate == 2.0
    assert stats.bootstrap_ratio([[1.0]], [[]]).estimate is None


def test_ratio_interval_clear_of_one_for_a_real_speed_up_and_not_for_noise():
    base = [[100.0, 102.0, 98.0, 101.0, 99.0, 100.0, 103.0, 97.0]]
    fast = [[150.0, 153.0, 147.0, 151.0, 149.0, 150.0, 152.0, 148.0]]
    same = [[101.0, 99.0, 100.0, 102.0, 98.0, 100.0, 97.0, 103.0]]
    up = stats.bootstrap_ratio(fast, base)
    assert up.estimate == pytest.approx(1.5)
    assert up.above(1.4) and up.excludes(1.0)
    flat = stats.bootstrap_ratio(same, base)
    assert flat.low < 1.0 < flat.high and not flat.excludes(1.0)


def test_rates_are_tokens_over_seconds_per_step():
    assert stats.rates([100, 200, 50], [1.0, 2.0, 0.0]) == [100.0, 100.0]
    assert math.isclose(stats.median(stats.rates([64] * 3, [0.5, 0.25, 1.0])), 128.0)
