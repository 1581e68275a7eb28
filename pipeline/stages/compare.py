"""The compare stage: every model of one dataset side by side, as the CSVs behind `dvc plots` and as figures.

Every learned pair is trained as R replicas; the comparison CSVs hold the median replica's curve plus
`<column>_min` / `<column>_max` over all replicas, so that `dvc plots` draws a line with a band (templates in
.dvc/plots/), and the figures do the same. Files are read for the (dataset, model) pairs named in params.yaml only.
"""

import csv
import math

from pipeline.errors import ArtifactError
from pipeline.files import datasets
from pipeline.files.artifacts import Paths, read_arrays, read_json, write_csv
from pipeline.params import Params

COMPARE_HEADERS = {
    "loss": ["epoch", "model", "train_loss", "val_loss", "val_loss_min", "val_loss_max"],
    "horizon": ["step", "model", "rmse", "rmse_min", "rmse_max"],
    "rollout": ["step", "model", "value", "value_min", "value_max"],
}
# The per-pair files compare reads, with the columns it needs (REPLICAS-CONTRACT.md).
PAIR_COLUMNS = {
    "train": ["epoch", "replica", "train_loss", "val_loss"],
    "horizon": ["step", "rmse", "rmse_min", "rmse_max"],
    "rollout": ["sequence", "feature", "step", "prediction", "prediction_min", "prediction_max"],
}


def _read_rows(path, columns: list[str]) -> list[dict]:
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; run `dvc repro` to produce it")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ArtifactError(f"{path} has no column {missing[0]!r} (written before replicas existed); "
                                f"run `dvc repro`")
        return list(reader)


def _sort_key(text: str) -> float:
    """For min/max over replicas: a NaN loss (a diverged replica) counts as the largest."""
    value = float(text)
    return math.inf if math.isnan(value) else value


def _loss_rows(rows: list[dict], model: str, median: int) -> list[list]:
    """One row per epoch: the median replica's losses (empty once it has stopped early) and the min and max
    validation loss over the replicas that ran that epoch. Cells keep the per-pair file's own text."""
    by_epoch: dict[int, dict[int, dict]] = {}
    for r in rows:
        by_epoch.setdefault(int(r["epoch"]), {})[int(r["replica"])] = r
    out = []
    for epoch in sorted(by_epoch):
        replicas = by_epoch[epoch]
        values = [r["val_loss"] for r in replicas.values()]
        own = replicas.get(median)
        out.append([epoch, model, own["train_loss"] if own else "", own["val_loss"] if own else "",
                    min(values, key=_sort_key), max(values, key=_sort_key)])
    return out


def _rollout_rows(path, data: datasets.Dataset, model: str) -> list[list]:
    """A model's rollout of held-out sequence 0: the median replica's prediction and the min and max over the
    replicas (steps <= 0 are the context, which has no prediction)."""
    features = data.meta["features"]
    return [[r["step"], f"{model} {r['feature']}" if len(features) > 1 else model,
             r["prediction"], r["prediction_min"], r["prediction_max"]]
            for r in _read_rows(path, PAIR_COLUMNS["rollout"]) if r["sequence"] == "0" and int(r["step"]) >= 1]


def _truth_rows(data: datasets.Dataset) -> list[list]:
    """Context and true continuation of held-out sequence 0, as series `context` and `truth` (min = max =
    value: no band)."""
    rows, features, window = [], data.meta["features"], data.meta["window"]
    for f, feature in enumerate(features):
        label = f" {feature}" if len(features) > 1 else ""
        context, truth = data.rollout_context[0, :, f], data.rollout_target[0, :, f]
        rows += [[i - window + 1, f"context{label}"] + [float(v)] * 3 for i, v in enumerate(context)]
        rows += [[i + 1, f"truth{label}"] + [float(v)] * 3 for i, v in enumerate(truth)]
    return rows


def pair_result(paths: Paths, ds: str, model: str) -> dict:
    """One pair's evaluation read back from the evaluate stage's files: metrics, `pred_test` (R, N, F_out), and
    for a rollout `pred_rollout` (R, M, H, F), `horizon_errors` (R, H) and `threshold`; `median_replica`."""
    path = paths.predictions(ds, model)
    arrays = read_arrays(path)
    if "median_replica" not in arrays or arrays["pred_test"].ndim != 3:
        raise ArtifactError(f"{path} has no replica axis (written before replicas existed); run `dvc repro`")
    result = {"metrics": read_json(paths.eval_metrics(ds, model)), "pred_test": arrays["pred_test"],
              "median_replica": int(arrays["median_replica"])}
    if "pred_rollout" in arrays:
        result.update(pred_rollout=arrays["pred_rollout"], horizon_errors=arrays["horizon_errors"],
                      threshold=float(arrays["threshold"]))
    return result


def compare(params: Params, ds: str, paths: Paths = Paths()) -> None:
    """The compare stage: one long-format CSV per kind of curve (a `model` column tells the lines apart, and
    `<y>_min` / `<y>_max` columns span the replicas, for `dvc plots`), one PNG overlaying every model's rollout
    against the truth, and each pair's own figure (loss, rollout, error against horizon), all drawn in this one
    process. Every line is the median replica's, every band the range over all replicas."""
    from pipeline.figures import plotting

    data = datasets.load(paths.dataset(ds))
    models = params.models_on(ds)
    results = {m: pair_result(paths, ds, m) for m in models}  # every input read before anything is written
    curves = {m: _read_rows(paths.train_curve(ds, m), PAIR_COLUMNS["train"]) for m in models}
    loss, horizon, rollout = [], [], []
    for m in models:
        loss += _loss_rows(curves[m], m, results[m]["median_replica"])
        horizon += [[r["step"], m, r["rmse"], r["rmse_min"], r["rmse_max"]]
                    for r in _read_rows(paths.horizon_curve(ds, m), PAIR_COLUMNS["horizon"])]
        if data.has_rollout:
            rollout += _rollout_rows(paths.rollout_curve(ds, m), data, m)
    if data.has_rollout:
        rollout = _truth_rows(data) + rollout
    for what, rows in (("loss", loss), ("horizon", horizon), ("rollout", rollout)):
        write_csv(paths.compare_curve(what, ds), COMPARE_HEADERS[what], rows)
    plotting.compare_figure(paths.compare_figure(ds), data, results)
    for m in models:
        plotting.pair_figure(paths.pair_figure(ds, m), data, m, curves[m], results[m])
        if plotting.is_backtest(data) and "pred_rollout" in results[m]:
            plotting.backtest_figure(paths.backtest_figure(ds, m), data, m, results[m])
