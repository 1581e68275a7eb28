"""`python -m pipeline diff [A] [B]`: the metrics of two revisions, pair by pair, with verdicts that hold for the
whole diff: false discoveries controlled, each change with its size and a confidence interval.

For every (dataset, model) pair with eval metrics at both revisions and each headline metric it compares the
replicas of A with the replicas of B (`per_replica` in metrics/eval/<dataset>/<model>.json) by an exact two-sided
rank test (pipeline/analysis/stats.py). The p-values of all the rows that can be tested (two or more replicas a
side, not identical) are adjusted together by Benjamini-Hochberg (pipeline/analysis/effects.py says why): B is
"better" or "worse" than A where the q-value is at most `--fdr` (0.05), else "within seed noise"; "unchanged" when
both hold exactly the same values. `--per-comparison` judges each row by its own p instead (one pre-planned
question). Every compared row has the Hodges-Lehmann shift with its exact confidence interval, as a factor for
errors. A file from before replicas existed counts as one replica holding its headline values.

The metrics are read through DVC (`Repo.metrics.show`, the call behind `dvc.api.metrics_show`), so A and B may be
any git revision, an experiment name, or the workspace. `dvc.api.metrics_show` itself is not used because it
merges every file into one dict and keeps a file's name only on keys that occur in more than one file: an eval
file's `rollout` becomes a bare `rollout` when no other file has one (checked on DVC 3.67), and the pair is lost.
"""

import dataclasses
import json
import math
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.analysis import effects, stats
from pipeline.errors import ArtifactError, PipelineError

WORKSPACE = "workspace"
ALPHA = stats.ALPHA
FDR = 0.05
EVAL_FILE = re.compile(r"^metrics/eval/([^/]+)/([^/]+)\.json$")


@dataclass(frozen=True)
class Metric:
    name: str                     # as `dvc metrics show` spells it
    path: tuple[str, ...]         # the headline (median) value in the file
    replica_key: str              # its name under per_replica.<k>
    higher_is_better: bool


METRICS = (
    Metric("test.rmse", ("test", "rmse"), "test_rmse", False),
    Metric("rollout.rmse", ("rollout", "rmse"), "rollout_rmse", False),
    Metric("rollout.valid_horizon", ("rollout", "valid_horizon"), "valid_horizon", True),
)
ORDER = {stats.BETTER: 0, stats.WORSE: 0, stats.NOISE: 1, stats.UNCHANGED: 2}

Pairs = dict[tuple[str, str], dict[str, list[float]]]  # (dataset, model) -> metric name -> values per replica


@dataclass(frozen=True)
class Side:
    """One side of the comparison: what the user typed, and the commit it names (None for the workspace)."""
    name: str
    commit: str | None = None

    @property
    def is_workspace(self) -> bool:
        return self.commit is None

    def __str__(self) -> str:
        if self.commit is None or self.commit.startswith(self.name):
            return self.name if self.commit is None else self.commit[:7]
        return f"{self.name} ({self.commit[:7]})"


@dataclass(frozen=True)
class Row:
    dataset: str
    model: str
    metric: Metric
    a: list[float] | None        # values per replica, None when the metric is absent on that side
    b: list[float] | None
    verdict: str                 # better, worse, within seed noise, unchanged, added, removed
    p_value: float | None
    whole_pair: bool = False     # added/removed: the whole pair is absent on the other side, not just this metric
    q_value: float | None = None  # Benjamini-Hochberg over the diff's testable rows; None where no test is possible
    effect: float | None = None   # Hodges-Lehmann shift of B against A (a log ratio where `log`)
    effect_ci: tuple[float, float] | None = None
    coverage: float | None = None  # the interval's exact confidence level
    log: bool = False             # the effect is ln(B / A): an error metric, read as a factor

    @property
    def testable(self) -> bool:
        return (self.a is not None and self.b is not None and self.verdict != stats.UNCHANGED
                and min(len(self.a), len(self.b)) >= 2)

    def effect_text(self) -> str:
        """For an error, a factor: "3.1x lower [1.8x-5.2x]" when the whole interval is below 1 (or higher), else
        the ratio B/A with its interval, "B/A 0.91 [0.62-1.33]"; a difference otherwise, "+12 [+4, +20]"."""
        if self.effect is None:
            return "-"
        if self.effect_ci is None:  # a single replica on a side
            if not self.log:
                return f"{self.effect:+.3g}"
            return f"{math.exp(abs(self.effect)):.2g}x {'lower' if self.effect < 0 else 'higher'}"
        low, high = self.effect_ci
        if not self.log:
            return f"{self.effect:+.3g} [{low:+.3g}, {high:+.3g}]"
        if high < 0 or low > 0:
            word, sign = ("lower", -1) if high < 0 else ("higher", 1)
            near, far = sorted((sign * low, sign * high))
            return f"{math.exp(sign * self.effect):.2g}x {word} [{math.exp(near):.2g}x-{math.exp(far):.2g}x]"
        return f"B/A {math.exp(self.effect):.2g} [{math.exp(low):.2g}-{math.exp(high):.2g}]"

    @property
    def median_a(self) -> float | None:
        return None if self.a is None else stats.median(self.a)

    @property
    def median_b(self) -> float | None:
        return None if self.b is None else stats.median(self.b)

    @property
    def change(self) -> float | None:
        if self.a is None or self.b is None:
            return None
        return self.median_b - self.median_a

    @property
    def smallest_p(self) -> float | None:
        if self.a is None or self.b is None:
            return None
        return stats.smallest_p_value(len(self.a), len(self.b))

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "model": self.model, "metric": self.metric.name,
                "higher_is_better": self.metric.higher_is_better, "verdict": self.verdict,
                "median_a": self.median_a, "median_b": self.median_b,
                "change": None if self.change is None else float(f"{self.change:.12g}"),  # no binary round-off
                "replicas_a": None if self.a is None else len(self.a),
                "replicas_b": None if self.b is None else len(self.b),
                "p_value": self.p_value, "p": self.p_value, "q": self.q_value,
                "effect": self.effect, "effect_ci": None if self.effect_ci is None else list(self.effect_ci),
                "effect_scale": None if self.effect is None else ("log ratio" if self.log else "difference"),
                "effect_coverage": self.coverage,
                "smallest_p_value": self.smallest_p, "values_a": self.a, "values_b": self.b}


# ---------------------------------------------------------------------------------------------------- reading


def _number(value: Any, metric: Metric) -> float | None:
    """A metric value as a float; NaN (a rollout that blew up) counts as the worst possible value, so the rank
    test sees it as the worst replica instead of failing."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    if math.isnan(value):
        return -math.inf if metric.higher_is_better else math.inf
    return value


def _headline(data: dict, metric: Metric) -> Any:
    for key in metric.path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def replica_values(data: dict) -> dict[str, list[float]]:
    """Metric name -> values in replica order, from one eval metrics file. A file from before replicas existed
    (no `per_replica`), or a metric missing from `per_replica`, counts as one replica holding the headline value."""
    per_replica = data.get("per_replica")
    replicas = []
    if isinstance(per_replica, dict):
        keys = sorted(per_replica, key=lambda key: (not key.isdigit(), int(key) if key.isdigit() else 0, key))
        replicas = [per_replica[key] for key in keys if isinstance(per_replica[key], dict)]
    found = {}
    for metric in METRICS:
        values = [_number(replica.get(metric.replica_key), metric) for replica in replicas]
        values = [value for value in values if value is not None]
        if not values:
            headline = _number(_headline(data, metric), metric)
            values = [] if headline is None else [headline]
        if values:
            found[metric.name] = values
    return found


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.rsplit(", ", 1)[-1] if text.startswith("unable to read") else text


def _pairs(entry: dict, side: Side) -> Pairs:
    """The eval metrics of one revision's `Repo.metrics.show` entry."""
    if "error" in entry:
        raise PipelineError(f"DVC cannot read the metrics of {side}: {_reason(entry['error'])}")
    pairs: Pairs = {}
    for path, result in (entry.get("data") or {}).items():
        match = EVAL_FILE.match(path.lstrip("/"))
        if not match:
            continue
        if "error" in result:
            if isinstance(result["error"], FileNotFoundError):  # declared in dvc.yaml, not produced there yet
                continue
            raise ArtifactError(f"{match.group(0)} at {side} cannot be read ({_reason(result['error'])})")
        values = replica_values(result.get("data") or {})
        if values:
            pairs[(match.group(1), match.group(2))] = values
    return pairs


def read(a: str, b: str, root: str | Path | None = None) -> tuple[Side, Pairs, Side, Pairs]:
    """Resolve A and B (git revisions, experiment names, or "workspace") and read their eval metrics."""
    (side_a, pairs_a), (side_b, pairs_b) = read_many([a, b], root)
    for pairs in (pairs_a, pairs_b):
        if isinstance(pairs, PipelineError):
            raise pairs
    return side_a, pairs_a, side_b, pairs_b


def read_many(names: list[str], root: str | Path | None = None) -> list[tuple[Side, Pairs | PipelineError]]:
    """Each name's side and eval metrics, read in one pass; a revision whose metrics cannot be read gets its
    error instead, so that a sweep's one broken experiment does not hide the others' diffs. A name that is no
    revision at all raises: nothing is read."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo
    from dvc.scm import resolve_rev

    try:
        repo = Repo(str(root) if root is not None else None)
    except NotDvcRepoError:
        raise PipelineError("not inside a DVC project: run `python -m pipeline diff` in the project's folder") \
            from None
    with repo:
        sides = []
        for name in names:
            if name == WORKSPACE:
                sides.append(Side(name))
                continue
            try:
                sides.append(Side(name, resolve_rev(repo.scm, name)))
            except DvcException:
                raise PipelineError(f"unknown revision '{name}': neither a git revision nor an experiment name "
                                    f"DVC knows (see `git log` and `dvc exp list -A`)") from None
        # One call for every side, by full commit: DVC names each revision it reads after the revisions given for
        # it, joined by commas ("HEAD,main" when both name one commit), and rebuilds its index for every call.
        commits = list(dict.fromkeys(side.commit for side in sides if side.commit)) or None
        try:
            shown = repo.metrics.show(revs=commits, on_error="return", hide_workspace=False)
        except DvcException as error:
            raise PipelineError(f"DVC cannot read the metrics of {' and '.join(map(str, sides))}: {error}") \
                from None
    found: list[tuple[Side, Pairs | PipelineError]] = []
    for side in sides:
        # A commit from before the DVC project existed is left out by DVC: nothing there, every pair is "added".
        try:
            found.append((side, _pairs(shown.get(side.commit or (WORKSPACE if commits else "")) or {}, side)))
        except PipelineError as error:
            found.append((side, error))
    return found


# ---------------------------------------------------------------------------------------------------- comparing


def compare(a_pairs: Pairs, b_pairs: Pairs, alpha: float = ALPHA, fdr: float | None = FDR) -> list[Row]:
    """One row per (dataset, model, metric): compared rows first (real changes, then within seed noise, then
    unchanged; each by dataset, model and metric), then those present on one side only (added, removed).
    Verdicts from Benjamini-Hochberg q-values at `fdr`, or from each row's own p at `alpha` when `fdr` is None."""
    compared, one_sided = [], []
    order = {metric.name: index for index, metric in enumerate(METRICS)}
    for dataset, model in sorted(a_pairs.keys() | b_pairs.keys()):
        a_metrics, b_metrics = a_pairs.get((dataset, model), {}), b_pairs.get((dataset, model), {})
        for metric in METRICS:
            a, b = a_metrics.get(metric.name), b_metrics.get(metric.name)
            if a is None and b is None:
                continue
            if a is None or b is None:
                whole = not (a_metrics if a is None else b_metrics)
                one_sided.append(Row(dataset, model, metric, a, b, "added" if a is None else "removed", None, whole))
                continue
            same = stats.verdict(a, b, metric.higher_is_better, alpha) == stats.UNCHANGED
            compared.append(_with_effect(Row(dataset, model, metric, a, b, stats.UNCHANGED if same else stats.NOISE,
                                             1.0 if same else stats.rank_test(a, b)), 1 - alpha))
    testable = [i for i, row in enumerate(compared) if row.testable]
    for i, q in zip(testable, effects.bh_qvalues([compared[i].p_value for i in testable])):
        compared[i] = dataclasses.replace(compared[i], q_value=q)
    compared = [dataclasses.replace(row, verdict=_verdict(row, alpha, fdr)) for row in compared]
    compared.sort(key=lambda row: (ORDER[row.verdict], row.dataset, row.model, order[row.metric.name]))
    one_sided.sort(key=lambda row: (row.verdict, row.dataset, row.model, order[row.metric.name]))
    return compared + one_sided


def _with_effect(row: Row, level: float) -> Row:
    """The row with B's Hodges-Lehmann shift against A and its interval: on the log scale for an error metric
    whose values are all positive (a factor), else as a difference; none for identical sides."""
    if row.verdict == stats.UNCHANGED:
        return row
    log = not row.metric.higher_is_better and effects.log_scale(row.a + row.b)
    a, b = ([math.log(v) for v in side] for side in (row.a, row.b)) if log else (row.a, row.b)
    shift, interval, coverage = effects.hodges_lehmann(a, b, level)
    if min(len(a), len(b)) < 2:  # one value on a side: a difference, but no interval
        interval, coverage = None, None
    return dataclasses.replace(row, effect=shift, effect_ci=interval, coverage=coverage, log=log)


def _verdict(row: Row, alpha: float, fdr: float | None) -> str:
    if row.verdict == stats.UNCHANGED or not row.testable:
        return row.verdict
    decided = row.p_value <= alpha if fdr is None else row.q_value <= fdr
    if not decided or row.median_a == row.median_b:
        return stats.NOISE
    return stats.BETTER if (row.median_b > row.median_a) == row.metric.higher_is_better else stats.WORSE


def undecided(rows: list[Row], alpha: float = ALPHA, fdr: float | None = FDR) -> list[Row]:
    """The rows more replicas could decide: significant on their own (p <= alpha) but not after the diff's false
    discovery control."""
    if fdr is None:
        return []
    return [row for row in rows if row.verdict == stats.NOISE and row.testable and row.p_value <= alpha]


def replicas_to_decide(rows: list[Row], fdr: float = FDR) -> int:
    """The fewest replicas a side at which one row could pass `fdr` on its own among this many tests: two sides
    that do not overlap at all then give p = 2 / C(2R, R) <= fdr / m (the strictest Benjamini-Hochberg bar)."""
    m = max(1, sum(row.testable for row in rows))
    r = 2
    while stats.smallest_p_value(r, r) > fdr / m:
        r += 1
    return r


def suggest(rows: list[Row], alpha: float = ALPHA, fdr: float = FDR) -> str:
    """The -S setting that would settle the undecided rows: more replicas on their datasets, for both sides."""
    open_rows = undecided(rows, alpha, fdr)
    if not open_rows:
        return "Nothing to settle: no row is significant on its own without passing the false discovery control."
    replicas = replicas_to_decide(rows, fdr)
    datasets = sorted({row.dataset for row in open_rows})
    # `++`: set the key whether or not params.yaml has it (a plain -S only overrides an existing key)
    overrides = " ".join(f"-S ++data.{ds}.train.replicas={replicas}" for ds in datasets)
    return (f"{len(open_rows)} row{'s' if len(open_rows) != 1 else ''} would be decided by more replicas "
            f"({', '.join(f'{r.dataset}/{r.model} {r.metric.name}' for r in open_rows)}). Run both sides again with "
            f"{replicas} replicas on {', '.join(datasets)}: add\n  {overrides}\nto A's run (`dvc exp run {overrides}` "
            f"on its commit) and to B's own -S settings, then diff the two experiments. Where a side was trained "
            f"in this workspace, its full networks of replicas come from the replica cache and only the new ones "
            f"train (docs/experiments.md, \"More replicas\").")


def test_name(alpha: float = ALPHA, fdr: float | None = FDR) -> str:
    if fdr is None:
        return f"exact two-sided rank test over replicas, each row at alpha {alpha:g} (per comparison)"
    return f"exact two-sided rank test over replicas, false discovery rate {fdr:g} over the diff (Benjamini-Hochberg)"


def summary(rows: list[Row], fdr: float | None = FDR) -> str:
    counts = {verdict: sum(row.verdict == verdict for row in rows)
              for verdict in (stats.BETTER, stats.WORSE, stats.NOISE, stats.UNCHANGED)}
    text = ", ".join(f"{count} {verdict}" for verdict, count in counts.items())
    if fdr is not None:
        found, tested = counts[stats.BETTER] + counts[stats.WORSE], sum(row.testable for row in rows)
        text += (f"; {found} change{'s' if found != 1 else ''} found among {tested} tested rows at false discovery "
                 f"rate {fdr:g}: at most {fdr * found:.2g} of them expected to be false")
    for kind in ("added", "removed"):
        pairs = {(row.dataset, row.model) for row in rows if row.verdict == kind}
        if pairs:
            text += f", {len(pairs)} pair{'s' if len(pairs) != 1 else ''} {kind}"
    return text


def _number_text(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.6g}" if signed else f"{value:.6g}"


def render(rows: list[Row], a: Side, b: Side, alpha: float = ALPHA, fdr: float | None = FDR) -> str:
    """The terminal table: aligned columns, 6 significant digits, footnotes for rows that cannot be significant."""
    lines = [f"A: {a}  B: {b}  verdict of B against A: {test_name(alpha, fdr)}"]
    compared = [row for row in rows if row.verdict in ORDER]
    notes: dict[tuple[int, int], str] = {}
    if compared:
        table = [("dataset", "model", "metric", "median A", "median B", "change", "replicas", "p", "q",
                  "effect of B [interval]", "verdict")]
        for row in compared:
            counts = (len(row.a), len(row.b))
            marker = ""
            if row.verdict != stats.UNCHANGED and row.smallest_p > alpha:
                marker = "*"
                notes[counts] = _footnote(counts, alpha)
            table.append((row.dataset, row.model, row.metric.name, _number_text(row.median_a),
                          _number_text(row.median_b), _number_text(row.change, signed=True),
                          f"{counts[0]}/{counts[1]}{marker}", f"{row.p_value:.3g}",
                          "-" if row.q_value is None else f"{row.q_value:.3g}", row.effect_text(), row.verdict))
        widths = [max(len(line[column]) for line in table) for column in range(len(table[0]))]
        right = {3, 4, 5, 7, 8}
        lines.append("")
        for line in table:
            cells = [cell.rjust(width) if column in right else cell.ljust(width)
                     for column, (cell, width) in enumerate(zip(line, widths))]
            lines.append("  ".join(cells).rstrip())
    else:
        lines += ["", "No (dataset, model) pair has eval metrics (metrics/eval/<dataset>/<model>.json) on both sides."]
    one_sided = [textwrap.fill(f"{kind.capitalize()} ({where}): {named}", width=116, subsequent_indent="  ",
                               break_on_hyphens=False)
                 for kind, where in (("added", "only in B"), ("removed", "only in A"))
                 if (named := _one_sided(row for row in rows if row.verdict == kind))]
    if one_sided:
        lines += ["", *one_sided]
    if notes:
        lines.append("")
        lines += [notes[counts] for counts in sorted(notes)]
    lines.append("")
    open_rows = undecided(rows, alpha, fdr)
    if open_rows:
        lines.append(f"{len(open_rows)} row{'s' if len(open_rows) != 1 else ''} significant on {'its' if len(open_rows) == 1 else 'their'} own "
                     f"(p <= {alpha:g}) but not after the false discovery control; more replicas would decide "
                     f"{'it' if len(open_rows) == 1 else 'them'}: `python -m pipeline diff --suggest`")
    levels = sorted({round(row.coverage, 3) for row in rows if row.coverage is not None})
    if levels:
        lines.append(f"Effects: Hodges-Lehmann shift of B against A (a factor for errors) with its exact "
                     f"confidence interval ({', '.join(f'{100 * v:.1f}%' for v in levels)}); where no verdict is "
                     f"given, no change outside the interval is consistent with the replicas, and none inside it "
                     f"can be excluded.")
    lines.append(summary(rows, fdr))
    return "\n".join(lines)


def _footnote(counts: tuple[int, int], alpha: float) -> str:
    n1, n2 = counts
    if min(n1, n2) < 2:
        return f"* {n1}/{n2} replicas: one value on a side allows no test, so a change there counts as seed noise"
    return (f"* {n1}/{n2} replicas: the smallest possible p is {stats.smallest_p_value(n1, n2):.3g} > {alpha:g}, "
            f"never better or worse; train more replicas")


def _one_sided(rows) -> str:
    """'sine/gru2, sincos/gru (rollout.rmse)': whole pairs by name, single metrics in brackets."""
    by_pair: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        by_pair.setdefault((row.dataset, row.model), []).append("" if row.whole_pair else row.metric.name)
    return ", ".join(f"{dataset}/{model}" + (f" ({', '.join(names)})" if all(names) else "")
                     for (dataset, model), names in by_pair.items())


def run(a: str = "HEAD", b: str = WORKSPACE, as_json: bool = False, root: str | Path | None = None,
        fdr: float | None = FDR, suggestion: bool = False) -> str:
    """The text `python -m pipeline diff A B` prints: the table, or with `as_json` a JSON list of rows; with
    `suggestion` the -S settings that would settle the undecided rows. `fdr` None: per-comparison verdicts."""
    side_a, a_pairs, side_b, b_pairs = read(a, b, root)
    rows = compare(a_pairs, b_pairs, fdr=fdr)
    if as_json:
        return json.dumps([row.as_dict() for row in rows], indent=2)
    if suggestion:
        return suggest(rows, fdr=FDR if fdr is None else fdr)
    return render(rows, side_a, side_b, fdr=fdr)
