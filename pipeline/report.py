"""Compare every model with the baselines: per-dataset comparison plots, the summary metrics and the leaderboard.

Skill is 1 - MSE_model / MSE_persistence: above 0 beats repeating the last value, 1 is perfect. Files are read
for the (dataset, model) pairs named in params.yaml only, so results left over from a removed dataset or model
never slip into the comparison.
"""

import csv
import math

import numpy as np

from pipeline import datasets
from pipeline.artifacts import Paths, atomic_path, read_arrays, read_json, write_csv, write_json
from pipeline.errors import ArtifactError
from pipeline.params import Params

COMPARE_HEADERS = {
    "loss": ["epoch", "model", "train_loss", "val_loss"],
    "horizon": ["step", "model", "rmse"],
    "rollout": ["step", "model", "value"],
}


def _skill(mse: float | None, reference: float | None) -> float | None:
    if mse is None or reference is None or not reference > 0:
        return None
    return float(f"{1 - mse / reference:.6g}")


def _persistence(params: Params) -> str | None:
    return next((name for name, spec in params.models.items() if spec.kind == "persistence"), None)


def dataset_summary(params: Params, ds: str, paths: Paths) -> dict[str, dict]:
    """model -> headline metrics for one dataset, with skills and a rank (1 = best)."""
    evals = {m: read_json(paths.eval_metrics(ds, m)) for m in params.models}
    trains = {m: read_json(paths.train_metrics(ds, m)) for m in params.models}
    reference = evals.get(_persistence(params))
    table = {}
    for m, ev in evals.items():
        row = {"kind": params.models[m].kind, "test_rmse": ev["test"]["rmse"],
               "test_skill": _skill(ev["test"]["mse"], reference and reference["test"]["mse"])}
        if "rollout" in ev:
            row.update(rollout_rmse=ev["rollout"]["rmse"], valid_horizon=ev["rollout"]["valid_horizon"],
                       rollout_skill=_skill(ev["rollout"]["mse"], reference and reference["rollout"]["mse"]))
        row["diverged"] = bool(trains[m]["diverged"])
        table[m] = row
    key = "rollout_rmse" if all("rollout_rmse" in r for r in table.values()) else "test_rmse"
    ranked = sorted(table, key=lambda m: (table[m][key] is None, table[m][key] or 0.0, m))
    for rank, m in enumerate(ranked, start=1):
        table[m]["rank"] = rank
    return {m: table[m] for m in ranked}


def _markdown(summary: dict[str, dict]) -> str:
    columns = ["rank", "model", "kind", "test_rmse", "test_skill", "rollout_rmse", "rollout_skill",
               "valid_horizon", "diverged"]
    lines = ["# Leaderboard", "", "Skill = 1 - MSE / MSE(persistence); ranked by rollout RMSE where the dataset "
             "has a rollout, else by test RMSE.", ""]
    for ds, table in summary.items():
        lines += [f"## {ds}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for m, row in table.items():
            cells = [row.get(c, "") if c != "model" else m for c in columns]
            lines.append("| " + " | ".join("" if v is None else str(v) for v in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def summarize(params: Params, paths: Paths = Paths()) -> dict:
    """The report stage: metrics/summary.json plus the leaderboard as CSV and Markdown."""
    summary = {ds: dataset_summary(params, ds, paths) for ds in params.datasets}
    write_json(paths.summary(), summary)
    columns = ["dataset", "rank", "model", "kind", "test_rmse", "test_skill", "rollout_rmse", "rollout_skill",
               "valid_horizon", "diverged"]
    rows = [[ds, r["rank"], m] + [r.get(c) for c in columns[3:]] for ds, t in summary.items() for m, r in t.items()]
    write_csv(paths.leaderboard_csv(), columns, [["" if v is None else v for v in row] for row in rows])
    text = _markdown(summary)
    diverged = [f"{ds}/{m}" for ds, table in summary.items() for m, row in table.items() if row["diverged"]]
    if diverged:
        text += (f"\n**Diverged** (the loss exploded; the weights from before it were evaluated): "
                 f"{', '.join(diverged)}. Lower `train.lr`.\n")
    with atomic_path(paths.leaderboard_md()) as tmp:
        tmp.write_text(text)
    print(text)
    return summary


def _read_rows(path) -> list[dict]:
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; run `dvc repro` to produce it")
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _first_sequence(path, data: datasets.Dataset, model: str) -> tuple[np.ndarray, list[list]]:
    """A model's rollout of held-out sequence 0: as a (1, H, F) array for the figure, and as CSV rows."""
    features = data.meta["features"]
    pred = np.full((1,) + data.rollout_target.shape[1:], math.nan, dtype=np.float32)
    rows = []
    for r in _read_rows(path):
        if r["sequence"] == "0" and int(r["step"]) >= 1:  # steps <= 0 are the context, which has no prediction
            pred[0, int(r["step"]) - 1, features.index(r["feature"])] = float(r["prediction"])
            rows.append([r["step"], f"{model} {r['feature']}" if len(features) > 1 else model, r["prediction"]])
    return pred, rows


def _truth_rows(data: datasets.Dataset) -> list[list]:
    """Context and true continuation of held-out sequence 0, as series `context` and `truth`."""
    rows, features, window = [], data.meta["features"], data.meta["window"]
    for f, feature in enumerate(features):
        label = f" {feature}" if len(features) > 1 else ""
        rows += [[i - window + 1, f"context{label}", float(v)] for i, v in enumerate(data.rollout_context[0, :, f])]
        rows += [[i + 1, f"truth{label}", float(v)] for i, v in enumerate(data.rollout_target[0, :, f])]
    return rows


def pair_result(paths: Paths, ds: str, model: str) -> dict:
    """One pair's evaluation as `evaluation.score` returned it, read back from the evaluate stage's files."""
    arrays = read_arrays(paths.predictions(ds, model))
    result = {"metrics": read_json(paths.eval_metrics(ds, model)), "pred_test": arrays["pred_test"]}
    if "pred_rollout" in arrays:
        result.update(pred_rollout=arrays["pred_rollout"], horizon_errors=arrays["horizon_errors"],
                      threshold=float(arrays["threshold"]))
    return result


def compare(params: Params, ds: str, paths: Paths = Paths()) -> None:
    """The compare stage: one long-format CSV per kind of curve (a `model` column tells the lines apart, for
    `dvc plots`), one PNG overlaying every model's rollout against the truth, and each pair's own figure (loss,
    rollout, error against horizon), all drawn in this one process."""
    from pipeline import plotting

    data = datasets.load(paths.dataset(ds))
    results = {m: pair_result(paths, ds, m) for m in params.models}  # every input read before anything is written
    loss, horizon, rollout = [], [], []
    predictions, test_rmse = {}, {}
    for m in params.models:
        loss += [[r["epoch"], m, r["train_loss"], r["val_loss"]] for r in _read_rows(paths.train_curve(ds, m))]
        horizon += [[r["step"], m, r["rmse"]] for r in _read_rows(paths.horizon_curve(ds, m))]
        test_rmse[m] = results[m]["metrics"]["test"]["rmse"]
        if data.has_rollout:
            predictions[m], rows = _first_sequence(paths.rollout_curve(ds, m), data, m)
            rollout += rows
    if data.has_rollout:
        rollout = _truth_rows(data) + rollout
    for what, rows in (("loss", loss), ("horizon", horizon), ("rollout", rollout)):
        write_csv(paths.compare_curve(what, ds), COMPARE_HEADERS[what], rows)
    plotting.compare_figure(paths.compare_figure(ds), data, predictions, test_rmse)
    for m in params.models:
        plotting.pair_figure(paths.pair_figure(ds, m), data, m, paths.train_curve(ds, m), results[m])
