"""Small statistics over replicas (pure numpy): median, spread, and the test behind `python -m pipeline diff`.

Why a rank test, and why exact:
- Rollout errors over replicas are heavy-tailed: one replica whose free-running rollout loses the signal can be
  10x worse than the others (sine lstm spans 0.10-1.15 over five seeds). A t-test or a mean would let that one
  replica decide; a test on ranks only sees that it is the largest, so one exploding replica moves the answer
  no more than any other replica that is merely the worst.
- With 5 replicas a side there is no "large sample": the normal approximation to the rank-sum statistic is poor
  there, and with ties it is worse. Enumerating every way of splitting the pooled values into the two groups
  gives the exact permutation distribution instead (252 splits for 5 vs 5), so the p-value is exact.
- The price of exactness with few replicas: the smallest two-sided p-value that n1 vs n2 replicas can ever give
  is 2 / C(n1 + n2, n1) (both groups completely separated). 5 vs 5 gives 2/252 = 0.0079; 3 vs 3 gives
  2/20 = 0.1, so 3 replicas a side can NEVER be significant at alpha 0.05, however large the effect.
  `smallest_p_value` tells the caller, so a report can say so instead of silently calling it noise.
"""

from functools import lru_cache
from itertools import combinations
from math import comb

import numpy as np

EXACT_LIMIT = 200_000       # enumerate every split while there are at most this many
MONTE_CARLO_DRAWS = 100_000  # otherwise this many random splits ...
MONTE_CARLO_SEED = 20240613  # ... from a fixed-seed generator, so the same inputs always give the same p-value
ALPHA = 0.05

BETTER, WORSE, NOISE, UNCHANGED = "better", "worse", "within seed noise", "unchanged"


def as_values(values) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError("no values")
    if np.isnan(array).any():
        raise ValueError("NaN among the values; map it to a worst value (+-inf) first")
    return array


def median(values) -> float:
    """The median over replicas: the headline number of a pair (robust to one replica that went wrong)."""
    return float(np.median(as_values(values)))


def spread(values) -> dict[str, float]:
    """min, first quartile, third quartile and max over replicas (numpy's linear-interpolated percentiles),
    the same definition as the `spread` entries of the eval metrics."""
    array = as_values(values)
    q1, q3 = np.percentile(array, [25, 75])
    return {"min": float(array.min()), "q1": float(q1), "q3": float(q3), "max": float(array.max())}


def _doubled_midranks(pooled: np.ndarray) -> np.ndarray:
    """Twice the mid-ranks (1-based) of `pooled`: tied values share the mean of their ranks. Doubled so they are
    integers (a mean of consecutive integers is a multiple of 0.5) and every comparison below is exact."""
    order = np.argsort(pooled, kind="mergesort")
    ordered = pooled[order]
    starts = np.concatenate([[0], np.flatnonzero(ordered[1:] != ordered[:-1]) + 1])
    ends = np.concatenate([starts[1:], [pooled.size]])
    doubled = np.empty(pooled.size, dtype=np.int64)
    doubled[order] = np.repeat(starts + 1 + ends, ends - starts)  # ranks start+1 .. end: their sum/2 doubled
    return doubled


@lru_cache(maxsize=32)
def splits(n: int, n1: int) -> np.ndarray:
    """Every choice of n1 positions out of n, as a (C(n, n1), n1) index array."""
    return np.fromiter((i for split in combinations(range(n), n1) for i in split), dtype=np.int64,
                       count=comb(n, n1) * n1).reshape(-1, n1)


def smallest_p_value(n1: int, n2: int) -> float:
    """The smallest p-value `rank_test` can return for n1 vs n2 replicas: 2 / C(n1 + n2, n1), reached only when
    the two groups do not overlap at all; 1 when either side has a single value (no test)."""
    if min(n1, n2) < 2:
        return 1.0
    return min(1.0, 2.0 / comb(n1 + n2, n1))


def rank_test(a_values, b_values) -> float:
    """Two-sided permutation test of the Wilcoxon rank-sum (Mann-Whitney) statistic, mid-ranks for ties.

    Under "A and B come from the same distribution" every split of the pooled values into groups of sizes n1 and
    n2 is equally likely. The p-value is the fraction of splits whose group-A rank sum lies at least as far from
    its mean n1 (n + 1) / 2 as the observed one. All C(n, n1) splits are enumerated while there are at most
    EXACT_LIMIT of them (exact); beyond that MONTE_CARLO_DRAWS random splits from a fixed-seed generator estimate
    it (deterministic; (1 + hits) / (1 + draws), which never returns 0).

    Identical samples give 1 (every split is as extreme as the observed one). A single value on either side gives
    1: there is no test (see `smallest_p_value`)."""
    a, b = as_values(a_values), as_values(b_values)
    n1, n2 = a.size, b.size
    if min(n1, n2) < 2:
        return 1.0
    n = n1 + n2
    ranks = _doubled_midranks(np.concatenate([a, b]))
    centre = n1 * (n + 1)  # twice the expected rank sum of group A
    observed = abs(int(ranks[:n1].sum()) - centre)
    if comb(n, n1) <= EXACT_LIMIT:
        sums = ranks[splits(n, n1)].sum(axis=1)
        return float(np.count_nonzero(np.abs(sums - centre) >= observed) / sums.size)
    generator = np.random.default_rng(MONTE_CARLO_SEED)
    hits, left = 0, MONTE_CARLO_DRAWS
    chunk = max(1, min(MONTE_CARLO_DRAWS, 2_000_000 // n))
    while left:
        draws = min(chunk, left)
        shuffled = generator.permuted(np.broadcast_to(ranks, (draws, n)), axis=1)
        hits += int(np.count_nonzero(np.abs(shuffled[:, :n1].sum(axis=1) - centre) >= observed))
        left -= draws
    return (1 + hits) / (1 + MONTE_CARLO_DRAWS)


def verdict(a_values, b_values, higher_is_better: bool, alpha: float = ALPHA) -> str:
    """How B compares with A on one metric, from the replicas of each:

    - "unchanged": both sides hold exactly the same values (e.g. a deterministic baseline on unchanged data);
    - "better" / "worse": the rank test rejects "same distribution" at `alpha` (p <= alpha), and B's median is
      better / worse than A's (lower for errors, higher when `higher_is_better`);
    - "within seed noise": otherwise, including when too few replicas make a significant p impossible
      (`smallest_p_value(n1, n2) > alpha`, e.g. 3 vs 3 or a single value on a side).
    """
    a, b = as_values(a_values), as_values(b_values)
    if a.size == b.size and np.array_equal(np.sort(a), np.sort(b)):
        return UNCHANGED
    median_a, median_b = float(np.median(a)), float(np.median(b))
    if median_a == median_b or rank_test(a, b) > alpha:
        return NOISE
    return BETTER if (median_b > median_a) == higher_is_better else WORSE
