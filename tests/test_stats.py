"""pipeline/analysis/stats.py on hand-made replica sets: median and spread, the exact rank test (ties, its smallest possible
p-values, the deterministic Monte Carlo branch) and the verdict that `python -m pipeline diff` prints."""

from itertools import combinations
from math import comb

import numpy as np
import pytest

from pipeline.analysis import stats

FIVE_VS_FIVE = 2 / 252  # the smallest two-sided p for 5 vs 5: only the two completely separated splits


def reference_p(a, b) -> float:
    """A slow, independent two-sided rank-sum permutation test: mid-ranks by counting, every split enumerated."""
    pooled = list(a) + list(b)
    ranks = [sum(v < x for v in pooled) + (sum(v == x for v in pooled) + 1) / 2 for x in pooled]
    n, n1 = len(pooled), len(a)
    centre = n1 * (n + 1) / 2
    observed = abs(sum(ranks[:n1]) - centre)
    splits = list(combinations(range(n), n1))
    extreme = sum(abs(sum(ranks[i] for i in split) - centre) >= observed - 1e-9 for split in splits)
    return extreme / len(splits)


def test_median_and_spread_on_hand_made_arrays():
    assert stats.median([0.3, 0.1, 0.2]) == pytest.approx(0.2)
    assert stats.median([4, 1, 3, 2]) == 2.5
    assert stats.spread([5, 1, 4, 2, 3]) == {"min": 1.0, "q1": 2.0, "q3": 4.0, "max": 5.0}
    assert stats.spread([1, 2, 3, 4]) == {"min": 1.0, "q1": 1.75, "q3": 3.25, "max": 4.0}  # numpy linear
    assert stats.spread([0.7]) == {"min": 0.7, "q1": 0.7, "q3": 0.7, "max": 0.7}  # one replica: all equal


def test_median_refuses_nan_and_empty():
    with pytest.raises(ValueError):
        stats.median([])
    with pytest.raises(ValueError):
        stats.rank_test([1.0, float("nan")], [1.0, 2.0])


def test_identical_sets_are_unchanged_with_p_1():
    values = [0.12, 0.03, 0.25, 0.11, 0.18]
    assert stats.rank_test(values, values) == 1.0
    assert stats.verdict(values, values, higher_is_better=False) == stats.UNCHANGED
    assert stats.verdict(values, values[::-1], higher_is_better=True) == stats.UNCHANGED  # same values, any order
    assert stats.rank_test([1, 1, 1], [1, 1, 1]) == 1.0  # all tied


def test_clearly_separated_five_vs_five_is_better_or_worse_with_p_2_over_252():
    a = [0.10, 0.11, 0.12, 0.13, 0.14]
    b = [0.05, 0.06, 0.07, 0.08, 0.09]
    assert stats.rank_test(a, b) == pytest.approx(FIVE_VS_FIVE, abs=1e-15)
    assert stats.rank_test(b, a) == pytest.approx(FIVE_VS_FIVE, abs=1e-15)
    assert stats.smallest_p_value(5, 5) == pytest.approx(FIVE_VS_FIVE)
    assert stats.verdict(a, b, higher_is_better=False) == stats.BETTER   # lower error in B
    assert stats.verdict(b, a, higher_is_better=False) == stats.WORSE
    assert stats.verdict(a, b, higher_is_better=True) == stats.WORSE     # e.g. fewer valid steps in B
    assert stats.verdict(b, a, higher_is_better=True) == stats.BETTER


def test_one_exploding_replica_does_not_hide_a_real_improvement():
    """A rollout RMSE of 100 in one of A's replicas would swamp a t-test; on ranks it is just A's largest value."""
    a = [0.10, 0.11, 0.12, 0.13, 100.0]
    b = [0.05, 0.06, 0.07, 0.08, 0.09]
    assert stats.rank_test(a, b) == pytest.approx(FIVE_VS_FIVE)
    assert stats.verdict(a, b, higher_is_better=False) == stats.BETTER


def test_overlapping_sets_are_within_seed_noise():
    gru_seeds = [0.122, 0.026, 0.248, 0.114, 0.178]     # sine rollout RMSE over 5 seeds (issue 13)
    other_seeds = [0.164, 0.140, 0.045, 0.585, 0.642]
    p = stats.rank_test(gru_seeds, other_seeds)
    assert 0.05 < p < 1
    assert stats.verdict(gru_seeds, other_seeds, higher_is_better=False) == stats.NOISE


def test_too_few_replicas_can_never_be_significant():
    assert stats.smallest_p_value(3, 3) == pytest.approx(0.1)
    assert stats.rank_test([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)   # completely separated, still 0.1
    assert stats.verdict([1, 2, 3], [4, 5, 6], higher_is_better=True) == stats.NOISE
    assert stats.smallest_p_value(4, 4) == pytest.approx(2 / 70)
    assert stats.smallest_p_value(3, 5) == pytest.approx(2 / 56)
    # A single value on either side: no test at all (p = 1), however far apart.
    assert stats.smallest_p_value(1, 5) == stats.smallest_p_value(1, 1) == 1.0
    assert stats.rank_test([0.5], [0.1, 0.11, 0.12, 0.13, 0.14]) == 1.0
    assert stats.rank_test([0.5], [0.1]) == 1.0
    assert stats.verdict([0.5], [0.1], higher_is_better=False) == stats.NOISE
    assert stats.verdict([0.5], [0.5], higher_is_better=False) == stats.UNCHANGED


def test_ties_use_mid_ranks_and_match_a_brute_force_reference():
    a, b = [1, 1, 2, 2, 3], [2, 3, 3, 4, 4]
    assert stats.rank_test(a, b) == pytest.approx(reference_p(a, b), abs=1e-12)
    generator = np.random.default_rng(0)
    for _ in range(30):
        n1, n2 = generator.integers(2, 7, size=2)
        a = generator.integers(0, 4, size=n1).astype(float)  # few distinct values: many ties
        b = generator.integers(1, 5, size=n2).astype(float)
        assert stats.rank_test(a, b) == pytest.approx(reference_p(a, b), abs=1e-12), (a, b)


def test_equal_medians_are_noise_even_when_distributions_differ():
    assert stats.verdict([1, 2, 3, 4, 5], [3, 3, 3, 3, 3], higher_is_better=False) == stats.NOISE


def test_the_monte_carlo_branch_is_deterministic_and_close_to_exact(monkeypatch):
    generator = np.random.default_rng(3)
    a, b = generator.normal(size=7), generator.normal(size=7) + 1.0
    exact = stats.rank_test(a, b)  # C(14, 7) = 3432 splits: enumerated
    monkeypatch.setattr(stats, "EXACT_LIMIT", 100)
    estimate = stats.rank_test(a, b)
    assert estimate == stats.rank_test(a, b)  # fixed-seed generator: the same answer every time
    assert estimate != exact and estimate == pytest.approx(exact, abs=0.01)  # s.e. < 0.002 at 100000 draws


def test_large_samples_take_the_monte_carlo_branch_quickly():
    a = np.linspace(0.0, 1.0, 12)
    b = a + 0.6
    assert comb(24, 12) > stats.EXACT_LIMIT
    p = stats.rank_test(a, b)
    assert p == stats.rank_test(a, b)
    assert 1 / (1 + stats.MONTE_CARLO_DRAWS) <= p < 0.05
    assert stats.rank_test(a, a.copy()) == 1.0
