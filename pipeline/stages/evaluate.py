"""The evaluate stage: every model of one dataset scored on its held-out data (pipeline/analysis/scoring.py), the
metrics, curves and predictions written for the compare and report stages.

The baselines are numpy, and so is the forward pass of every built-in learned model (pipeline/models/inference.py):
the stage starts without importing torch; a kind without a numpy forward runs through torch on the configured
device.
"""

from pathlib import Path

import numpy as np

from pipeline.analysis.scoring import Predictor, combine, score
from pipeline.files import checkpoints, datasets
from pipeline.files.artifacts import Paths, write_arrays, write_csv, write_json
from pipeline.models import baselines, inference, normalisation
from pipeline.params import Params


def rollout_rows(data: datasets.Dataset, pred: np.ndarray | None, n_sequences: int,
                 median: int = 0) -> list[list]:
    """Long-format rows (sequence, feature, step, truth, prediction, prediction_min, prediction_max) for
    (R, M, H, F) replica predictions: the median replica's prediction and the range over all replicas. Context
    steps are <= 0 and have no prediction."""
    rows = []
    if pred is None:
        return rows
    window = data.meta["window"]
    low, high = pred.min(axis=0), pred.max(axis=0)
    for s in range(min(n_sequences, pred.shape[1])):
        for f, feature in enumerate(data.meta["features"]):
            for i, value in enumerate(data.rollout_context[s, :, f]):
                rows.append([s, feature, i - window + 1, float(value), "", "", ""])
            for i in range(pred.shape[2]):
                rows.append([s, feature, i + 1, float(data.rollout_target[s, i, f]), float(pred[median, s, i, f]),
                             float(low[s, i, f]), float(high[s, i, f])])
    return rows


def horizon_rows(errors: np.ndarray | None, median: int = 0) -> list[list]:
    """(step, rmse, rmse_min, rmse_max) from (R, H) errors: the median replica's curve and the replicas' range."""
    if errors is None:
        return []
    low, high = errors.min(axis=0), errors.max(axis=0)
    return [[i + 1, float(errors[median, i]), float(low[i]), float(high[i])] for i in range(errors.shape[1])]


def load_predictors(params: Params, path: Path, normalise: str = "none") -> tuple[list[Predictor], bool]:
    """Every replica a checkpoint holds, behind the numpy interface (reading windows as the dataset's
    `normalise` says, as they were trained), and whether it is a deterministic baseline. Baselines and every
    built-in learned kind run in numpy on the CPU (inference.py), so this stage needs no torch; a kind without a
    numpy forward runs through torch on the configured device."""
    checkpoint = checkpoints.load(path)
    if checkpoint.kind in baselines.BASELINES:
        return [normalisation.applied(checkpoint.kind, baselines.restore(checkpoint), normalise)], True
    if checkpoint.kind in inference.FORWARDS:
        return [normalisation.applied(checkpoint.kind, inference.restore(checkpoint, r), normalise)
                for r in range(len(checkpoint.replicas))], False
    from pipeline.learning import models
    from pipeline.learning.runtime import configure, resolve_device

    device = resolve_device(params.device)
    configure(params.threads)
    return [normalisation.applied(checkpoint.kind, models.NumpyPredictor(models.restore(checkpoint, device, r)),
                                  normalise) for r in range(len(checkpoint.replicas))], False


def prediction_arrays(results: list[dict], median: int) -> dict[str, np.ndarray]:
    """What the pair's figure is drawn from (the compare stage draws it), with a leading replica axis: test
    predictions, and for a rollout its predictions, RMSE per step ahead and the valid-horizon threshold."""
    arrays = {"pred_test": np.stack([res["pred_test"] for res in results])}
    if "pred_rollout" in results[0]:
        arrays.update(pred_rollout=np.stack([res["pred_rollout"] for res in results]),
                      horizon_errors=np.stack([res["horizon_errors"] for res in results]),
                      threshold=np.array(results[0]["threshold"]))
    arrays["median_replica"] = np.array(median)
    return arrays


def run_dataset(params: Params, dataset: str, paths: Paths = Paths()) -> dict[str, dict]:
    """The evaluate stage: every model of one dataset, each scored by `run`. One stage per dataset, not per
    pair: scoring a pair takes a fraction of a second, while DVC spends over a second around each stage (it
    re-reads and rewrites all of dvc.lock), so per-pair stages cost the default run more than a minute."""
    data = datasets.load(paths.dataset(dataset))
    names = params.models_on(dataset)
    for name in names:  # a missing or damaged checkpoint stops the stage before it writes anything
        checkpoints.load(paths.checkpoint(dataset, name))
    return {name: run(params, dataset, name, paths, data) for name in names}


def run(params: Params, dataset: str, model_name: str, paths: Paths = Paths(),
        data: datasets.Dataset | None = None) -> dict:
    """One pair: dataset and checkpoint in; metrics JSON, rollout and horizon CSVs and the predictions out,
    every replica scored (test metrics and the full rollout). It draws nothing: the compare stage draws every
    figure of a dataset in one process, importing matplotlib once."""
    if data is None:
        data = datasets.load(paths.dataset(dataset))
    predictors, deterministic = load_predictors(params, paths.checkpoint(dataset, model_name), data.normalise)
    results = [score(data, model, params.evaluate) for model in predictors]
    metrics = combine(results, deterministic)
    median = metrics["median_replica"]
    arrays = prediction_arrays(results, median)
    write_json(paths.eval_metrics(dataset, model_name), metrics)
    write_csv(paths.rollout_curve(dataset, model_name),
              ["sequence", "feature", "step", "truth", "prediction", "prediction_min", "prediction_max"],
              rollout_rows(data, arrays.get("pred_rollout"), params.evaluate.plot_sequences, median))
    write_csv(paths.horizon_curve(dataset, model_name), ["step", "rmse", "rmse_min", "rmse_max"],
              horizon_rows(arrays.get("horizon_errors"), median))
    write_arrays(paths.predictions(dataset, model_name), arrays)
    line = f"evaluate {dataset}/{model_name}: test rmse {metrics['test']['rmse']}"
    if "rollout" in metrics:
        line += f", {metrics['rollout']['steps']}-step rollout rmse {metrics['rollout']['rmse']}, " \
                f"valid for {metrics['rollout']['valid_horizon']:g} steps"
    if len(results) > 1:
        line += f" (medians of {len(results)} replicas)"
    print(line)
    return metrics
