"""The statistics on synthetic results whose truth is known: seeds drawn from known distributions,
each accuracy measured on a binomial test set."""

import numpy as np
import pytest

from robustres import stats

N_TEST = 1000


def draw(rng, true_acc, seeds, seed_sd=0.01):
    """Accuracies of `seeds` runs: a per-seed true accuracy, measured on N_TEST binomial examples."""
    p = np.clip(rng.normal(true_acc, seed_sd, seeds), 0, 1)
    return rng.binomial(N_TEST, p) / N_TEST


def separated(a: stats.Estimate, b: stats.Estimate) -> bool:
    return a.low > b.high or b.low > a.high


def test_identical_h_values_are_told_apart_no_more_often_than_the_level_allows():
    rng = np.random.default_rng(1)
    experiments = 200
    apart = significant = 0
    for _ in range(experiments):
        a, b = draw(rng, 0.9, 8), draw(rng, 0.9, 8)
        apart += separated(stats.seed_estimate(a, N_TEST), stats.seed_estimate(b, N_TEST))
        significant += stats.paired(a, b).p_value < 0.05
    assert apart / experiments <= 0.05  # non-overlapping 95 % intervals: rarer than 5 %
    assert significant / experiments <= 0.09  # the permutation test errs at about its level


def test_a_clearly_better_h_is_found():
    rng = np.random.default_rng(2)
    better, worse = draw(rng, 0.95, 8), draw(rng, 0.90, 8)
    a, b = stats.seed_estimate(better, N_TEST), stats.seed_estimate(worse, N_TEST)
    assert separated(a, b) and a.low > b.high
    comparison = stats.paired(better, worse)
    assert comparison.p_improvement == 1.0 and comparison.p_value < 0.01
    assert comparison.median_diff == pytest.approx(0.05, abs=0.02)


def test_the_interval_of_the_median_covers_the_truth_at_about_its_level():
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(200):
        e = stats.seed_estimate(draw(rng, 0.9, 10), N_TEST)
        hits += e.low <= 0.9 <= e.high
    assert hits / 200 >= 0.9


def test_binomial_test_set_noise_is_counted():
    same = [0.9, 0.9, 0.9]  # three seeds that agree exactly: only the test set's noise is left
    with_noise, without = stats.seed_estimate(same, N_TEST), stats.seed_estimate(same, None)
    assert without.low == without.high == 0.9
    low, high = stats.test_noise_half_width(0.9, N_TEST)
    assert with_noise.low == pytest.approx(0.9 - low) and with_noise.high == pytest.approx(0.9 + high)
    assert 0.015 < low < 0.022 and 0.015 < high < 0.022  # about +-1.9 points at 95 % on 1,000 examples
    assert "test-set noise alone" in with_noise.why_no_interval
    small = stats.seed_estimate(same, 100)  # fewer test examples: a wider interval
    assert small.high - small.low > with_noise.high - with_noise.low


def test_a_divergence_rate_has_a_wilson_interval():
    rate, low, high = stats.rate_interval(2, 3)
    assert rate == pytest.approx(2 / 3) and 0.15 < low < 0.25 and 0.9 < high < 0.97  # 2/3 pins little down
    assert stats.rate_interval(0, 5)[1] == 0 and stats.rate_interval(0, 5)[2] > 0.4


def test_iqm_and_median_of_few_seeds():
    x = [0.80, 0.90, 0.91, 0.92, 0.99]
    assert stats.seed_estimate(x, None, "median").value == pytest.approx(0.91)
    assert stats.seed_estimate(x, None, "iqm").value == pytest.approx(np.mean([0.90, 0.91, 0.92]))
    e = stats.seed_estimate(x, None, "median")
    assert e.low <= 0.90 and e.high >= 0.92


def test_a_diverged_run_loses_its_pair_and_stays_out_of_the_median_difference():
    nan = float("nan")
    result = stats.paired([0.96, 0.95, 0.97], [0.95, nan, 0.96])
    assert result.p_improvement == 1.0 and result.median_diff == pytest.approx(0.01)


def test_seeds_to_separate_shrinks_only_the_seed_part():
    # a gap of 3 points; each interval +-2 from seeds and +-0.5 from the test set, with 3 seeds now
    n = stats.seeds_to_separate(0.03, (0.02, 0.02), (0.005, 0.005), 3)
    assert n is not None and n > 3
    scale = (3 / n) ** 0.5
    assert 2 * ((0.02 * scale) ** 2 + 0.005 ** 2) ** 0.5 < 0.03  # separated at n
    scale = (3 / (n - 1)) ** 0.5
    assert 2 * ((0.02 * scale) ** 2 + 0.005 ** 2) ** 0.5 >= 0.03  # and not one seed earlier
    # the test set's noise alone spans the gap: no number of seeds separates them
    assert stats.seeds_to_separate(0.01, (0.001, 0.001), (0.012, 0.012), 3) is None
