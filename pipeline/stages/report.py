"""The report stage: every model of every dataset beside the baselines, as metrics/summary.json and the leaderboard.

Every learned pair is trained as R replicas (`train.replicas`, training seeds derived from `seed`); the evaluate
stage writes the median over replicas under each headline name (`test.rmse`, `rollout.rmse`,
`rollout.valid_horizon`), their `spread` (min, q1, q3, max), every replica's own numbers (`per_replica`) and the
replica drawn as "the median" in figures (`median_replica`). The baselines are deterministic: one fit, one replica.
So here:

- the leaderboard ranks by the median and shows each headline number with its range over the replicas,
  `0.122 [0.026-0.248]` (a single replica, as every baseline has, shows just the number), and in how many of its
  R replicas a model beats persistence.

Skill is 1 - MSE_model / MSE_reference, from median MSEs, against persistence (above 0 beats repeating the last
value) and against the mean baseline (above 0 beats predicting the training targets' mean); 1 is perfect.
Files are read for the (dataset, model) pairs named in params.yaml only, so results left over from a removed
dataset or model never slip into the comparison.
"""

import math

from pipeline.analysis import effects, stats
from pipeline.files.artifacts import (Paths, atomic_path, number_text, read_json, significant, spread_text, write_csv,
                                      write_json)
from pipeline.data.generators import KINDS
from pipeline.errors import ArtifactError
from pipeline.params import MODEL_KINDS_LEARNED, Params

HEADLINE = ("test_rmse", "rollout_rmse", "valid_horizon")  # shown with their spread
LEADERBOARD_COLUMNS = [
    "dataset", "rank", "model", "kind", "replicas",
    "test_rmse", "test_rmse_min", "test_rmse_max", "test_skill", "test_skill_mean",
    "rollout_rmse", "rollout_rmse_min", "rollout_rmse_max", "rollout_skill",
    "valid_horizon", "valid_horizon_min", "valid_horizon_max", "valid_lyapunov_times",
    "rollout_mase", "rollout_smape",
    "beats_persistence", "diverged", "diverged_replicas", "rank_group",
]


def _skill(mse: float | None, reference: float | None) -> float | None:
    if mse is None or reference is None or not reference > 0:
        return None
    return significant(1 - mse / reference, 6)


def _baseline(params: Params, ds: str, kind: str) -> str | None:
    """The variant of baseline `kind` that runs on `ds`, if any."""
    return next((name for name in params.models_on(ds) if params.models[name].kind == kind), None)


def _read_eval(paths: Paths, ds: str, model: str) -> dict:
    path = paths.eval_metrics(ds, model)
    ev = read_json(path)
    for key in ("replicas", "spread", "per_replica"):
        if key not in ev:
            raise ArtifactError(f"{path} has no '{key}' (written before replicas existed); run `dvc repro`")
    return ev


def _beats(ev: dict, reference: dict | None, key: str) -> int | None:
    """In how many replicas the model's MSE (`rollout_mse` or `test_mse`) is below persistence's."""
    if reference is None:
        return None
    ref = reference["rollout"]["mse"] if key == "rollout_mse" else reference["test"]["mse"]
    if ref is None:
        return None
    return sum(1 for r in ev["per_replica"].values() if r.get(key) is not None and r[key] < ref)


def dataset_summary(params: Params, ds: str, paths: Paths) -> dict[str, dict]:
    """model -> headline metrics for one dataset (medians over replicas, with min and max), skills, how many
    replicas beat persistence, divergence, and a rank (1 = best, by the median)."""
    evals = {m: _read_eval(paths, ds, m) for m in params.models_on(ds)}
    trains = {m: read_json(paths.train_metrics(ds, m)) for m in params.models_on(ds)}
    persistence = _baseline(params, ds, "persistence")
    reference = evals.get(persistence)
    mean = evals.get(_baseline(params, ds, "mean"))
    table = {}
    for m, ev in evals.items():
        spread = ev["spread"]
        row = {"kind": params.models[m].kind, "replicas": int(ev["replicas"]),
               "test_rmse": ev["test"]["rmse"], "test_rmse_min": spread["test_rmse"]["min"],
               "test_rmse_max": spread["test_rmse"]["max"],
               "test_skill": _skill(ev["test"]["mse"], reference and reference["test"]["mse"]),
               "test_skill_mean": _skill(ev["test"]["mse"], mean and mean["test"]["mse"])}
        if "rollout" in ev:
            row.update(rollout_rmse=ev["rollout"]["rmse"], rollout_rmse_min=spread["rollout_rmse"]["min"],
                       rollout_rmse_max=spread["rollout_rmse"]["max"],
                       valid_horizon=ev["rollout"]["valid_horizon"],
                       valid_horizon_min=spread["valid_horizon"]["min"],
                       valid_horizon_max=spread["valid_horizon"]["max"],
                       rollout_skill=_skill(ev["rollout"]["mse"], reference and reference["rollout"]["mse"]))
            row.update({f"rollout_{k}": ev["rollout"][k] for k in ("mase", "smape") if k in ev["rollout"]})
            if "valid_lyapunov_times" in ev["rollout"]:
                row["valid_lyapunov_times"] = ev["rollout"]["valid_lyapunov_times"]
        row["beats_persistence"] = None if m == persistence else _beats(
            ev, reference, "rollout_mse" if "rollout" in ev else "test_mse")
        train = trains[m]
        row["diverged"] = bool(train["diverged"])
        row["diverged_replicas"] = int(train.get("diverged_replicas", int(bool(train["diverged"]))))
        table[m] = row
    key = "rollout_rmse" if all("rollout_rmse" in r for r in table.values()) else "test_rmse"
    # On a chaotic system every long rollout's RMSE saturates near the attractor's spread (the mean baseline's
    # constant wins it), so models are ranked by how long they stay valid, longest first.
    sign = 1.0
    if key == "rollout_rmse" and KINDS.get(params.data_kinds[ds]).chaotic:
        key, sign = "valid_horizon", -1.0
    ranked = sorted(table, key=lambda m: (table[m][key] is None, sign * (table[m][key] or 0.0), m))
    for rank, m in enumerate(ranked, start=1):
        table[m]["rank"] = rank
    replicated = [m for m in ranked if table[m]["replicas"] >= 2]
    values = {m: [math.inf if r.get(key) is None else sign * float(r[key]) for r in evals[m]["per_replica"].values()]
              for m in replicated}
    groups = effects.rank_letters(replicated, effects.separated_pairs(values))
    for m in ranked:
        table[m]["rank_group"] = groups.get(m)
    return {m: table[m] for m in ranked}


INTRO = """# Leaderboard

Each learned model is trained as several replicas (`train.replicas`: the same data and settings, other training
seeds). Every number is the **median over the replicas**, followed by **[min-max] over the replicas**; a number
without brackets comes from a single fit: the baselines (persistence, linear) are deterministic, one fit each.
Models are ranked by the median rollout RMSE where the dataset has a rollout, else by the median test RMSE; on a
chaotic system (Mackey-Glass, Lorenz) by the median steps within tolerance, longest first, since every long
rollout's RMSE saturates there.
The letters beside a learned model's rank group the models the replicas cannot tell apart: two models that share
a letter are not separated by the exact rank test over their replicas, with the false discovery rate over the
dataset's pairs at 0.05 (so "3 b" and "4 b" may be a tie); a baseline, one deterministic fit, gets none (no
test reaches 0.05 against a single number). *beats persistence* k/R: in k of its R replicas the model's MSE (rollout MSE where the dataset has a rollout,
else test MSE) is below persistence's. Skill vs persistence = 1 - MSE / MSE(persistence), from the median MSEs
(1 is perfect, below 0 is worse than repeating the last value); skill vs mean = 1 - MSE / MSE(mean), against
predicting the training targets' mean (the reference where the last value means nothing, as on the adding
problem, which has no persistence row). *steps within tolerance*: how many steps the free-running
rollout stays within `evaluate.tolerance`; on a chaotic system also in Lyapunov times (steps x time step x the
largest Lyapunov exponent). RMSEs are in the data's original units. For your own CSV data the
rollout is a rolling-origin backtest (every number over all its origins and series), with MASE (each origin's
error over its series' in-sample one-step naive error; below 1 beats that naive forecast) and sMAPE in percent.
"""


def _markdown_table(table: dict[str, dict], steps: int | None) -> list[str]:
    rollout = steps is not None
    scale_free = any(row.get("rollout_mase") is not None for row in table.values())  # a backtest of user data
    lyapunov = any(row.get("valid_lyapunov_times") is not None for row in table.values())
    header = ["rank", "model", "kind", "test RMSE"]
    if rollout:
        header += [f"{steps}-step rollout RMSE", "steps within tolerance"]
    if lyapunov:
        header += ["Lyapunov times"]
    if scale_free:
        header += ["MASE", "sMAPE %"]
    header += ["beats persistence", "test skill vs persistence", "test skill vs mean"]
    header += (["rollout skill vs persistence"] if rollout else []) + ["diverged"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m, row in table.items():
        n = row["replicas"]
        cells = [f"{row['rank']} {row['rank_group']}" if row.get("rank_group") else str(row["rank"]), m, row["kind"],
                 spread_text(row["test_rmse"], row["test_rmse_min"], row["test_rmse_max"], n)]
        if rollout:
            cells += [spread_text(row.get("rollout_rmse"), row.get("rollout_rmse_min"), row.get("rollout_rmse_max"), n),
                      spread_text(row.get("valid_horizon"), row.get("valid_horizon_min"),
                                  row.get("valid_horizon_max"), n, digits=None)]
        if lyapunov:
            cells.append(number_text(row.get("valid_lyapunov_times"), 3)
                         if row.get("valid_lyapunov_times") is not None else "")
        if scale_free:
            cells += [number_text(row.get(k), 3) if row.get(k) is not None else "" for k in ("rollout_mase",
                                                                                          "rollout_smape")]
        beats = row["beats_persistence"]
        cells.append(f"{beats}/{n}" if beats is not None else "(reference)" if row["kind"] == "persistence" else "")
        cells.append(number_text(row["test_skill"], 4) if row["test_skill"] is not None else "")
        cells.append(number_text(row["test_skill_mean"], 4) if row["test_skill_mean"] is not None else
                     "(reference)" if row["kind"] == "mean" else "")
        if rollout:
            cells.append(number_text(row.get("rollout_skill"), 4) if row.get("rollout_skill") is not None else "")
        cells.append(f"{row['diverged_replicas']}/{n}" if row["diverged"] else "no")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _markdown(summary: dict[str, dict], steps: dict[str, int | None], notes: dict[str, list[str]]) -> str:
    lines = [INTRO]
    for ds, table in summary.items():
        lines += [f"## {ds}", ""] + _markdown_table(table, steps[ds]) + [""]
        lines += [line for note in notes.get(ds, []) for line in (note, "")]
    return "\n".join(lines)


def twin(params: Params, name: str) -> str | None:
    """The teacher-forced model a free-running variant is judged against: the first `models:` entry of the same
    kind, sizes and gate bias with no training settings of its own (rnn_fr -> rnn)."""
    spec = params.models[name]
    same = (spec.kind, spec.hidden, spec.layers, spec.forget_bias)
    return next((m for m, s in params.models.items()
                 if not params.free_running(m) and m not in params.model_train
                 and (s.kind, s.hidden, s.layers, s.forget_bias) == same), None)


def twin_notes(params: Params, ds: str, paths: Paths) -> list[str]:
    """One sentence per free-running variant of `ds`: its rollout RMSE against its twin's, with the verdict of
    the exact rank test over their replicas (the test `python -m pipeline diff` uses)."""
    notes = []
    for m in params.models_on(ds):
        other = twin(params, m) if params.free_running(m) else None
        if other is None:
            continue
        mine, theirs = _read_eval(paths, ds, m), _read_eval(paths, ds, other)
        if "rollout" not in mine or "rollout" not in theirs:
            continue
        values = [[r["rollout_rmse"] for r in ev["per_replica"].values() if r.get("rollout_rmse") is not None]
                  for ev in (theirs, mine)]
        word, p = stats.verdict(*values, higher_is_better=False), stats.rank_test(*values)
        steps = read_json(paths.train_metrics(ds, m)).get("free_running", {}).get("steps")
        shown = [spread_text(ev["rollout"]["rmse"], ev["spread"]["rollout_rmse"]["min"],
                             ev["spread"]["rollout_rmse"]["max"], int(ev["replicas"])) for ev in (mine, theirs)]
        notes.append(f"*{m}* ({other} trained on {steps} fed-back steps after its teacher-forced epochs) against its "
                     f"teacher-forced twin *{other}*: rollout RMSE {shown[0]} against {shown[1]}; {word} "
                     f"(exact rank test over replicas, p = {p:.2g}).")
    return notes


def persistence_warning(params: Params, ds: str, table: dict[str, dict], paths: Paths) -> list[str]:
    """One line when no learned model beats persistence in most of its replicas: on a user's series that trends,
    the usual cause is that the test part lies outside the range the models were trained on, which a window
    normalisation fixes (docs/your-own-data.md); the line names the settings to try."""
    learned = [row for row in table.values() if row["kind"] in MODEL_KINDS_LEARNED and row["beats_persistence"] is not None]
    if not learned or any(2 * row["beats_persistence"] > row["replicas"] for row in learned):
        return []
    mode = params.normalise(ds)
    if mode == "none" and KINDS.get(params.data_kinds[ds]).rolls_out:
        fix = (f"if its series trend, set `data.{ds}.normalise: window` (or `difference`); else try more epochs "
               f"(`data.{ds}.train.epochs`) or a longer window (`data.{ds}.window`)")
    else:
        fix = (f"try another `data.{ds}.normalise` (it is {mode}), more epochs (`data.{ds}.train.epochs`) or a "
               f"longer window (`data.{ds}.window`)")
    return [f"**Warning**: no learned model beats persistence in most of its replicas on {ds}; {fix}."]


def _rollout_steps(params: Params, ds: str, paths: Paths) -> int | None:
    for m in params.models_on(ds):
        ev = read_json(paths.eval_metrics(ds, m))
        if "rollout" in ev:
            return int(ev["rollout"]["steps"])
    return None


def summarize(params: Params, paths: Paths = Paths()) -> dict:
    """The report stage: metrics/summary.json plus the leaderboard as CSV and Markdown."""
    summary = {ds: dataset_summary(params, ds, paths) for ds in params.datasets}
    write_json(paths.summary(), summary)
    rows = [[ds, r["rank"], m] + [r.get(c) for c in LEADERBOARD_COLUMNS[3:]]
            for ds, t in summary.items() for m, r in t.items()]
    write_csv(paths.leaderboard_csv(), LEADERBOARD_COLUMNS, [["" if v is None else v for v in row] for row in rows])
    text = _markdown(summary, {ds: _rollout_steps(params, ds, paths) for ds in summary},
                     {ds: persistence_warning(params, ds, summary[ds], paths) + twin_notes(params, ds, paths)
                      for ds in summary})
    diverged = [f"{ds}/{m}" for ds, table in summary.items() for m, row in table.items() if row["diverged"]]
    if diverged:
        text += (f"\n**Diverged** (the loss exploded; the weights from before it were evaluated): "
                 f"{', '.join(diverged)}. Lower `train.lr`. The *diverged* column says in how many replicas.\n")
    with atomic_path(paths.leaderboard_md()) as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(text)
    return summary
