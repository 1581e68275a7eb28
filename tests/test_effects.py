"""The statistics behind the diff's verdicts (pipeline/analysis/effects.py) on hand-made numbers: Benjamini-Hochberg
q-values against a hand computation, the Hodges-Lehmann shift and its exact interval, and the rows the diff says
more replicas would decide."""

import math

import numpy as np
import pytest

from pipeline.analysis import effects, stats
from pipeline.experiments import diff


@pytest.mark.parametrize("p, q", [
    ([0.01, 0.04, 0.03, 0.2], [0.04, 0.16 / 3, 0.16 / 3, 0.2]),  # sorted 0.01 0.03 0.04 0.2: 4p/1 4p/2 4p/3 4p/4
    ([0.02, 0.02, 0.02], [0.02, 0.02, 0.02]),                     # ties: the largest rank's bound holds for all
    ([0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]),                 # all equal
    ([0.3], [0.3]),                                              # a single row: its own p
    ([0.9, 0.95], [0.95, 0.95]),                                 # never above 1, monotone in p
    ([], []),
])
def test_bh_qvalues_equal_a_hand_computation(p, q):
    assert effects.bh_qvalues(p) == pytest.approx(q)


def test_a_change_found_at_the_fdr_is_one_whose_q_passes():
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    q = effects.bh_qvalues(p)
    assert [v <= 0.05 for v in q] == [True, True] + [False] * 8  # 0.039 x 10 / 3 = 0.13: only the first two


def test_hodges_lehmann_shift_and_exact_interval_of_a_clean_shift():
    """B = A + 10 for A = 1..5: the 25 differences are 6, 7, 7, 8, 8, 8, ..., 14; their median is 10; the exact
    interval at 95% is the 3rd to the 23rd (P(U <= 2) = 4 / 252 each side), 7 to 13, covering 1 - 8/252."""
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    shift, (low, high), coverage = effects.hodges_lehmann(a, [v + 10 for v in a])
    assert (shift, low, high) == (10.0, 7.0, 13.0)
    assert coverage == pytest.approx(1 - 8 / 252)


def test_hodges_lehmann_is_robust_to_one_wild_replica():
    a = [1.0, 1.1, 0.9, 1.2, 1.05]
    shift, (low, high), _ = effects.hodges_lehmann(a, [2.0, 2.1, 1.9, 2.2, 500.0])
    assert shift == pytest.approx(1.0, abs=0.1) and low > 0.5 and high < 2000


def test_too_few_replicas_give_the_whole_range_with_the_coverage_it_has():
    shift, interval, coverage = effects.hodges_lehmann([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert shift == 3.0 and interval == (1.0, 5.0) and coverage == pytest.approx(0.9)  # 1 - 2 / C(6, 3)


def test_the_null_distribution_by_recursion_equals_the_enumerated_one(monkeypatch):
    enumerated = effects._u_distribution(4, 6)
    effects._u_distribution.cache_clear()
    monkeypatch.setattr(effects, "EXACT_LIMIT", 0)
    try:
        np.testing.assert_allclose(effects._u_distribution(4, 6), enumerated)
    finally:
        effects._u_distribution.cache_clear()


def test_an_error_metric_reads_as_a_factor_and_a_count_as_a_difference():
    a = {("sine", "gru"): {"test.rmse": [1.0, 1.1, 0.9, 1.2, 1.05], "rollout.valid_horizon": [10, 11, 12, 13, 14]}}
    b = {("sine", "gru"): {"test.rmse": [0.31, 0.33, 0.29, 0.35, 0.32], "rollout.valid_horizon": [20, 21, 22, 23, 24]}}
    rows = {row.metric.name: row for row in diff.compare(a, b)}
    rmse, horizon = rows["test.rmse"], rows["rollout.valid_horizon"]
    assert rmse.log and rmse.effect == pytest.approx(math.log(0.32 / 1.05), abs=0.05)
    assert rmse.effect_text().startswith("3.") and " lower [" in rmse.effect_text()
    assert not horizon.log and horizon.effect == 10.0 and horizon.effect_text() == "+10 [+7, +13]"
    assert rmse.verdict == stats.BETTER and horizon.verdict == stats.BETTER  # q = 0.0079 x 2 / 2 for both


def test_rows_significant_alone_but_not_after_the_fdr_are_named_with_the_replicas_that_would_decide_them():
    """One real change among 20 rows of noise: its p (0.0079, the smallest 5 vs 5 gives) is under 0.05 but its q
    (x 21) is not, so the diff calls it seed noise and --suggest names it, with the replicas at which two
    separated sides would pass: 2 / C(2R, R) <= 0.05 / 21 = 0.0024 first at R = 6 (2 / 924)."""
    rng = np.random.default_rng(0)
    a = {("noise", f"m{i}"): {"test.rmse": list(rng.uniform(1, 2, 5))} for i in range(20)}
    b = {("noise", f"m{i}"): {"test.rmse": list(rng.uniform(1, 2, 5))} for i in range(20)}
    a[("sine", "gru")] = {"test.rmse": [1.0, 1.1, 1.2, 1.3, 1.4]}
    b[("sine", "gru")] = {"test.rmse": [0.5, 0.6, 0.7, 0.8, 0.9]}
    rows = diff.compare(a, b)
    gru = next(row for row in rows if row.model == "gru")
    assert gru.p_value == pytest.approx(2 / 252) and gru.q_value > 0.05 and gru.verdict == stats.NOISE
    assert gru in diff.undecided(rows)
    assert diff.replicas_to_decide(rows) == 6
    text = diff.suggest(rows)
    assert "sine/gru test.rmse" in text and "-S ++data.sine.train.replicas=6" in text
    per_comparison = {row.model: row.verdict for row in diff.compare(a, b, fdr=None)}
    assert per_comparison["gru"] == stats.BETTER  # the old behaviour, for one pre-planned question


# --- the leaderboard's rank groups -------------------------------------------------------------------------------

def test_rank_letters_group_the_models_no_test_separates():
    """a < b < c < d by rank; a and c, a and d, b and d are separated: runs a-b (a), b-c (b), c-d (c)."""
    separated = {frozenset(p) for p in (("a", "c"), ("a", "d"), ("b", "d"))}
    assert effects.rank_letters(["a", "b", "c", "d"], separated) == {"a": "a", "b": "ab", "c": "bc", "d": "c"}
    assert effects.rank_letters(["a", "b", "c"], set()) == {"a": "a", "b": "a", "c": "a"}  # a three-way tie
    everything = {frozenset(p) for p in (("a", "b"), ("a", "c"), ("b", "c"))}
    assert effects.rank_letters(["a", "b", "c"], everything) == {"a": "a", "b": "b", "c": "c"}


def test_separated_pairs_need_replicas_and_pass_the_fdr_over_the_datasets_pairs():
    values = {"gru": [0.10, 0.11, 0.12, 0.13, 0.14], "lstm": [0.50, 0.51, 0.52, 0.53, 0.54],
              "rnn": [0.105, 0.115, 0.125, 0.135, 0.145], "linear": [0.01]}
    # gru-lstm and rnn-lstm: p 0.0079, q 0.012 each (3 pairs); gru-rnn overlap; linear has no replicas
    assert effects.separated_pairs(values) == {frozenset(("gru", "lstm")), frozenset(("rnn", "lstm"))}
