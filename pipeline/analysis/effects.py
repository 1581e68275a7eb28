"""How large a change is and how sure, for `python -m pipeline diff`: the false discovery rate over a whole diff,
and the Hodges-Lehmann shift between two sets of replicas with its exact confidence interval.

Why Benjamini-Hochberg: one diff compares about a hundred (dataset, model, metric) rows. At alpha 0.05 each,
about five come out "changed" when nothing changed. Controlling the false discovery rate instead keeps the
expected share of false ones among the rows called changed at most `fdr`. The rows are not independent (the
metrics of one pair move together, and so do pairs trained on one dataset), but their dependence is positive
(a change that helps test RMSE tends to help the rollout too), which is the case (PRDS) in which Benjamini and
Hochberg's procedure still controls the rate (Benjamini & Yekutieli 2001); their own, more conservative
correction for arbitrary dependence would cost another factor of about ln(100) + 0.58 = 5.2 in power.

Why Hodges-Lehmann: it is the shift that goes with the rank test `stats.rank_test` uses, the median of all
n1 x n2 differences between a B replica and an A replica, robust to one replica that went wrong just as the
test is. Its confidence interval is exact: it is read off the sorted differences at the ranks that the exact
null distribution of the Mann-Whitney statistic gives (Hollander & Wolfe, Nonparametric Statistical Methods,
ch. 4), at the level that matches the test. For an error metric (positive values, lower is better) the shift is
taken on the log scale, so it reads as a factor: "rollout RMSE 3.1x lower [1.8x-5.2x]".
"""

from functools import lru_cache
from math import comb

import numpy as np

from pipeline.analysis.stats import EXACT_LIMIT, as_values, rank_test, splits


def bh_qvalues(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the order given: q_(i) = min over j >= i of
    m p_(j) / j, at most 1. A row is a discovery at false discovery rate `fdr` when its q <= fdr."""
    m = len(p_values)
    if m == 0:
        return []
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="mergesort")
    scaled = p[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    q = np.empty(m)
    q[order] = q_sorted
    return [float(v) for v in q]


@lru_cache(maxsize=64)
def _u_distribution(n1: int, n2: int) -> np.ndarray:
    """P(U <= u) for u = 0 .. n1 n2 under the null, U the Mann-Whitney count without ties: exact by enumerating
    every split of the ranks 1..n (as rank_test does), or by the recursion of counts beyond EXACT_LIMIT."""
    n = n1 + n2
    if comb(n, n1) <= EXACT_LIMIT:
        sums = (splits(n, n1) + 1).sum(axis=1) - n1 * (n1 + 1) // 2
        counts = np.bincount(sums, minlength=n1 * n2 + 1).astype(np.float64)
    else:  # counts[k][j]: splits of k items with j "wins", the classic recurrence (exact integers as floats)
        table = {(0, 0): np.array([1.0])}

        def count(a: int, b: int) -> np.ndarray:
            if (a, b) not in table:
                out = np.zeros(a * b + 1)
                if a:
                    left = count(a - 1, b)
                    out[b:b + left.size] += left
                if b:
                    right = count(a, b - 1)
                    out[:right.size] += right
                table[(a, b)] = out
            return table[(a, b)]

        counts = count(n1, n2)
    return np.cumsum(counts) / counts.sum()


def hodges_lehmann(a_values, b_values, level: float = 0.95) -> tuple[float, tuple[float, float], float]:
    """(shift of B against A, (low, high) confidence interval, its exact coverage): the median of every
    difference b_j - a_i, and the sorted differences' order statistics k and n1 n2 + 1 - k, with k the largest
    whose two-sided null tail 2 P(U <= k - 1) is at most 1 - level. With too few replicas for any interval at
    that level (3 vs 3 reaches 90% at best) the interval is every difference's range and its coverage is said."""
    a, b = as_values(a_values), as_values(b_values)
    differences = np.sort((b[None, :] - a[:, None]).ravel())
    shift = float(np.median(differences))
    cdf = _u_distribution(a.size, b.size)
    alpha = 1.0 - level
    k = int(np.searchsorted(2 * cdf, alpha, side="right"))  # 2 P(U <= k - 1) <= alpha for k - 1 < this index
    if k == 0:  # not even the whole range reaches `level`: give it with the coverage it has
        return shift, (float(differences[0]), float(differences[-1])), 1.0 - 2 * float(cdf[0])
    coverage = 1.0 - 2 * float(cdf[k - 1])
    return shift, (float(differences[k - 1]), float(differences[-k])), coverage


def log_scale(values) -> bool:
    """Whether a metric's values are positive, so that its shift is read as a factor (errors, not counts)."""
    array = np.asarray(values, dtype=np.float64)
    return bool(np.all(np.isfinite(array)) and np.all(array > 0))


def separated_pairs(values: dict[str, list[float]], fdr: float = 0.05) -> set[frozenset[str]]:
    """The pairs of models whose replicas the exact rank test tells apart with the false discovery rate over all
    of one dataset's pairs controlled (Benjamini-Hochberg); a model with one value (a deterministic baseline)
    can be told from none: no test reaches 0.05 against a single number."""
    names = [name for name, v in values.items() if len(v) >= 2]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    q = bh_qvalues([rank_test(values[a], values[b]) for a, b in pairs])
    return {frozenset(pair) for pair, qv in zip(pairs, q) if qv <= fdr}


def rank_letters(ranked: list[str], separated: set[frozenset[str]]) -> dict[str, str]:
    """Letters for a ranked list, as in a compact letter display: models that share a letter are not told apart.
    Each letter covers a run of consecutive ranks in which no two models are separated, the longest starting at
    each rank, runs inside an earlier one dropped."""
    runs: list[tuple[int, int]] = []
    for start in range(len(ranked)):
        end = start
        while end + 1 < len(ranked) and all(frozenset((ranked[k], ranked[end + 1])) not in separated
                                            for k in range(start, end + 1)):
            end += 1
        if not runs or end > runs[-1][1]:
            runs.append((start, end))
    letters = {name: "" for name in ranked}
    for index, (start, end) in enumerate(runs):
        for name in ranked[start:end + 1]:
            letters[name] += "abcdefghijklmnopqrstuvwxyz"[index % 26]
    return letters
