"""The statistics of a few seeds, all from scipy.stats: intervals of a (depth, h) over seeds with
the test set's sampling noise counted, intervals of divergence rates, and paired comparisons of
two h values seed by seed.

Why these:
- Seeds are few (3-5): the interval of the median or the interquartile mean (IQM, the mean of the
  middle half; rliable's choice for few runs) is a percentile bootstrap over seeds. With 3 seeds
  it spans nearly their range, which is the honest answer.
- Each accuracy is measured on n test examples, so it carries binomial error of its own (about
  +-1.4 points at 95 % on 1,000 examples at 90 %): the Wilson interval of the statistic's value on
  n examples is added to the seed interval's half-widths in quadrature.
- A divergence rate is k of n runs: its Wilson interval says how little "2/3 diverged" pins down.
- Runs with the same seed share their initialisation and their batches across h, so two h values
  are compared seed by seed: a sign-flip permutation test of the per-seed differences, and the
  probability of improvement P(a > b) (ties count half).
Every random choice is seeded, so the same store gives the same report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


class _OnFirstUse:
    """scipy.stats, imported when first used: it takes most of a second to import, and commands that
    read the store to check their input (noise-eval's kinds against the runs' data) must answer
    before that."""

    def __getattr__(self, name):
        from scipy import stats as scipy_stats

        return getattr(scipy_stats, name)


stats = _OnFirstUse()

LEVEL = 0.95  # default confidence level of every interval (report --level)


def level_label(level: float) -> str:
    """A confidence level as every label shows it: 95, 97.5, 99.9 (percent, at most one decimal;
    report --level accepts only levels that this shows exactly)."""
    return f"{round(100 * level, 1):g}"


def level_shown_exactly(level: float) -> bool:
    return 0.5 <= level <= 0.999 and abs(1000 * level - round(1000 * level)) < 1e-6
RESAMPLES = 4999  # bootstrap resamples; enough for stable 95 % percentile ends
SEED = 0  # of the bootstrap: a report is a function of the store
STATISTICS = ("median", "iqm")


def iqm(values, axis=-1):
    """Interquartile mean: the mean of the middle 50 % (scipy's trimmed mean, 25 % off each end)."""
    return stats.trim_mean(values, 0.25, axis=axis)


def _statistic(name: str):
    return {"median": lambda x, axis=-1: np.median(x, axis=axis), "iqm": iqm}[name]


@dataclass(frozen=True)
class Estimate:
    """A statistic of some runs' accuracies with its interval; fractions in [0, 1]."""

    value: float
    low: float
    high: float
    seeds: int  # runs it is computed from
    why_no_interval: str | None = None  # set when the interval is only the test-set noise


def test_noise_half_width(accuracy: float, n_test: int, level: float = LEVEL) -> tuple[float, float]:
    """How far below and above `accuracy` the Wilson interval of `accuracy` on n_test examples reaches."""
    k = int(round(accuracy * n_test))
    ci = stats.binomtest(k, n_test).proportion_ci(confidence_level=level, method="wilson")
    return k / n_test - ci.low, ci.high - k / n_test


def seed_estimate(accuracies, n_test: int | None, statistic: str = "median", level: float = LEVEL) -> Estimate:
    """The statistic over seeds with a bootstrap interval, widened by the test set's binomial noise."""
    x = np.asarray(accuracies, dtype=float)
    if x.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "no completed run")
    value = float(_statistic(statistic)(x))
    below = above = 0.0
    why = None
    if x.size >= 2 and np.ptp(x) > 0:
        ci = stats.bootstrap((x,), _statistic(statistic), confidence_level=level, n_resamples=RESAMPLES,
                             method="percentile", vectorized=True, random_state=np.random.default_rng(SEED))
        below, above = value - float(ci.confidence_interval.low), float(ci.confidence_interval.high) - value
    else:
        why = "one seed" if x.size < 2 else "every seed gave the same accuracy"
        why += ": the interval is the test-set noise alone"
    if n_test:
        noise_below, noise_above = test_noise_half_width(value, n_test, level)
        below, above = math.hypot(below, noise_below), math.hypot(above, noise_above)
    return Estimate(value, max(0.0, value - below), min(1.0, value + above), int(x.size), why)


def rate_interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float, float]:
    """(rate, low, high): k of n runs, with the Wilson interval of the rate."""
    if n == 0:
        return math.nan, math.nan, math.nan
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return k / n, float(ci.low), float(ci.high)


@dataclass(frozen=True)
class Paired:
    """h_a against h_b over the seeds where both finished (a diverged run, NaN, scores 0)."""

    seeds: int
    median_diff: float  # of the per-seed differences a - b where both completed (fractions)
    p_improvement: float  # P(a > b) over seeds, ties count half
    p_value: float  # two-sided sign-flip permutation test of the mean difference


def paired(a, b) -> Paired:
    """Compare per-seed accuracies `a` and `b` (same seeds, same order; NaN: that run diverged)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    both = ~np.isnan(a) & ~np.isnan(b)
    median_diff = float(np.median(a[both] - b[both])) if both.any() else math.nan
    a, b = np.nan_to_num(a, nan=0.0), np.nan_to_num(b, nan=0.0)
    d = a - b
    if d.size == 0:
        return Paired(0, math.nan, math.nan, math.nan)
    improvement = float(np.mean((d > 0) + 0.5 * (d == 0)))
    if d.size < 2:
        p = math.nan  # one seed: nothing to permute
    elif np.all(d == 0):
        p = 1.0
    else:
        test = stats.permutation_test((a, b), lambda x, y, axis=-1: np.mean(x - y, axis=axis),
                                      permutation_type="samples", alternative="two-sided", vectorized=True,
                                      n_resamples=RESAMPLES, random_state=np.random.default_rng(SEED))
        p = float(test.pvalue)
    return Paired(int(d.size), median_diff, improvement, p)


def seeds_to_separate(gap: float, seed_half: tuple[float, float], noise_half: tuple[float, float], seeds: int,
                      most: int = 1000) -> int | None:
    """About how many seeds each of two h would need for their intervals to stop overlapping, if
    their spread over seeds stayed as measured: the seed part of a half-width shrinks as
    1/sqrt(seeds), the test-set part does not. None when no number up to `most` would do (the test
    set's noise alone spans the gap: more test examples would, more seeds would not)."""
    if gap <= 0 or seeds < 1:
        return None
    if noise_half[0] + noise_half[1] >= gap:
        return None
    for n in range(seeds, most + 1):
        scale = math.sqrt(seeds / n)
        width = sum(math.hypot(s * scale, t) for s, t in zip(seed_half, noise_half))
        if width < gap:
            return n
    return None


def p_worse(leader, other, margin: float = 0.0) -> float:
    """One-sided sign-flip permutation p-value that `other` is worse than `leader` by more than
    `margin` (per-seed accuracies, same seeds and order, none diverged): the test of the mean of
    leader - other - margin > 0. Exact for up to 12 seeds (scipy enumerates the 2^n flips); with n
    seeds no p is below 2^-n, so 4 seeds or fewer can never reach 0.05."""
    d = np.asarray(leader, dtype=float) - np.asarray(other, dtype=float) - margin
    if d.size < 2:
        return math.nan
    if np.all(d == 0):
        return 1.0
    test = stats.permutation_test((d,), lambda x, axis=-1: np.mean(x, axis=axis), permutation_type="samples",
                                  alternative="greater", vectorized=True, n_resamples=RESAMPLES,
                                  random_state=np.random.default_rng(SEED))
    return float(test.pvalue)
