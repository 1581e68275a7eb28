"""Evaluate one trained pair on held-out data: one-step test metrics and autoregressive extrapolation.

The rollout feeds the model its own predictions: at every step it predicts from the last `window` values, the
way it was trained (each window from a fresh initial state), so a model is never asked to run longer than the
sequences it learned from. All held-out sequences roll out together as one batch, and a learned model advances
all the windows in flight at once (inference.NumpyRecurrent.rollout).
All metrics are in the data's original units.

Everything here works on numpy arrays through one interface, `predict_next(x)`: (B, T, F) -> (B, F_out). The
baselines are numpy, and so is the forward pass of every built-in learned model (inference.py): the stage starts
without importing torch.
"""

import math
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline import baselines, checkpoints, datasets, inference
from pipeline.artifacts import Paths, write_arrays, write_csv, write_json
from pipeline.params import EvalParams, Params


class Predictor(Protocol):
    def predict_next(self, x: np.ndarray) -> np.ndarray: ...


def regression_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    err = np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    mse = float(np.mean(err ** 2))
    return {"mse": mse, "rmse": math.sqrt(mse), "mae": float(np.mean(np.abs(err)))}


def horizon_rmse(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """RMSE at each step ahead, over all sequences and features: (M, H, F) -> (H,)."""
    err = np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    return np.sqrt(np.mean(err ** 2, axis=(0, 2)))


def valid_horizon(errors: np.ndarray, threshold: float) -> int:
    """How many steps ahead the prediction can be trusted: the number of leading steps with error <= threshold."""
    above = np.flatnonzero(~(errors <= threshold))  # NaN counts as out of tolerance
    return int(above[0]) if len(above) else len(errors)


def rollout(model: Predictor, context: np.ndarray, steps: int) -> np.ndarray:
    """Free-running prediction: (M, T, F) context windows -> (M, steps, F) predictions, fed back each step.
    A model that rolls itself out faster (inference.NumpyRecurrent, with the same numbers) does so; any other
    predicts one window at a time."""
    if hasattr(model, "rollout"):
        return model.rollout(context, steps)
    return window_rollout(model, context, steps)


def window_rollout(model: Predictor, context: np.ndarray, steps: int) -> np.ndarray:
    """The definition of a rollout: predict from the last T values, append the prediction, slide, repeat."""
    window, outputs = context, []
    for _ in range(steps):
        nxt = model.predict_next(window)  # (M, F)
        outputs.append(nxt)
        window = np.concatenate([window[:, 1:], nxt[:, None]], axis=1)  # drop the oldest, append the prediction
    return np.stack(outputs, axis=1) if outputs else np.zeros((len(context), 0, context.shape[2]), context.dtype)


def _rounded(value: float) -> float | None:
    return float(f"{value:.6g}") if math.isfinite(value) else None


def score(data: datasets.Dataset, model: Predictor, cfg: EvalParams) -> dict:
    """Metrics plus the arrays behind the plots: test predictions, and rollout predictions and errors."""
    pred_test = data.unscaled(model.predict_next(data.scaled(data.x_test)))
    result = {"metrics": {"test": {k: _rounded(v) for k, v in regression_metrics(pred_test, data.y_test).items()}},
              "pred_test": pred_test}
    if data.has_rollout:
        steps = data.meta["rollout_steps"]
        pred = data.unscaled(rollout(model, data.scaled(data.rollout_context), steps))
        errors = horizon_rmse(pred, data.rollout_target)
        threshold = cfg.tolerance * math.sqrt(np.mean(np.square(data.meta["scale_std"])))
        overall = regression_metrics(pred, data.rollout_target)
        result["metrics"]["rollout"] = {
            "steps": steps,
            "mse": _rounded(overall["mse"]),
            "rmse": _rounded(overall["rmse"]),
            "rmse_at": {str(h): _rounded(float(errors[h - 1])) for h in cfg.horizons if h <= steps},
            "valid_horizon": valid_horizon(errors, threshold),
        }
        result.update(pred_rollout=pred, horizon_errors=errors, threshold=threshold)
    return result


def rollout_rows(data: datasets.Dataset, pred: np.ndarray | None, n_sequences: int) -> list[list]:
    """Long-format rows (sequence, feature, step, truth, prediction); context steps are <= 0, no prediction."""
    rows = []
    if pred is None:
        return rows
    window = data.meta["window"]
    for s in range(min(n_sequences, len(pred))):
        for f, feature in enumerate(data.meta["features"]):
            for i, value in enumerate(data.rollout_context[s, :, f]):
                rows.append([s, feature, i - window + 1, float(value), ""])
            for i in range(pred.shape[1]):
                rows.append([s, feature, i + 1, float(data.rollout_target[s, i, f]), float(pred[s, i, f])])
    return rows


def load_predictor(params: Params, path: Path) -> Predictor:
    """The model a checkpoint holds, behind the numpy interface. Baselines and every built-in learned kind run in
    numpy on the CPU (inference.py), so this stage needs no torch; a kind without a numpy forward runs through
    torch on the configured device."""
    checkpoint = checkpoints.load(path)
    if checkpoint.kind in baselines.BASELINES:
        return baselines.restore(checkpoint)
    if checkpoint.kind in inference.FORWARDS:
        return inference.restore(checkpoint)
    from pipeline import models
    from pipeline.runtime import configure, resolve_device

    device = resolve_device(params.device)
    configure(params.threads)
    return models.NumpyPredictor(models.restore(checkpoint, device))


def prediction_arrays(result: dict) -> dict[str, np.ndarray]:
    """What the pair's figure is drawn from (the compare stage draws it): test predictions, and for a rollout
    its predictions, RMSE per step ahead and the valid-horizon threshold."""
    arrays = {"pred_test": result["pred_test"]}
    if "pred_rollout" in result:
        arrays.update(pred_rollout=result["pred_rollout"], horizon_errors=result["horizon_errors"],
                      threshold=np.array(result["threshold"]))
    return arrays


def run(params: Params, dataset: str, model_name: str, paths: Paths = Paths()) -> dict:
    """The evaluate stage: dataset and checkpoint in; metrics JSON, rollout and horizon CSVs and the predictions
    out. It draws nothing: importing matplotlib would cost each of a run's 42 evaluate stages 0.3 s, so the
    compare stage draws every pair's figure of a dataset in one process."""
    data = datasets.load(paths.dataset(dataset))
    model = load_predictor(params, paths.checkpoint(dataset, model_name))
    result = score(data, model, params.evaluate)
    errors = result.get("horizon_errors")
    write_json(paths.eval_metrics(dataset, model_name), result["metrics"])
    write_csv(paths.rollout_curve(dataset, model_name), ["sequence", "feature", "step", "truth", "prediction"],
              rollout_rows(data, result.get("pred_rollout"), params.evaluate.plot_sequences))
    write_csv(paths.horizon_curve(dataset, model_name), ["step", "rmse"],
              [] if errors is None else [[i + 1, float(e)] for i, e in enumerate(errors)])
    write_arrays(paths.predictions(dataset, model_name), prediction_arrays(result))
    m = result["metrics"]
    line = f"evaluate {dataset}/{model_name}: test rmse {m['test']['rmse']}"
    if "rollout" in m:
        line += f", {m['rollout']['steps']}-step rollout rmse {m['rollout']['rmse']}, " \
                f"valid for {m['rollout']['valid_horizon']} steps"
    print(line)
    return m
