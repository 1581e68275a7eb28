"""Evaluate one trained pair on held-out data: one-step test metrics and autoregressive extrapolation.

The rollout feeds the model its own predictions: at every step it predicts from the last `window` values, the
way it was trained (each window from a fresh initial state), so a model is never asked to run longer than the
sequences it learned from. All held-out sequences roll out together as one batch under no_grad.
All metrics are in the data's original units.
"""

import math

import numpy as np
import torch

from pipeline import checkpoints, datasets
from pipeline.artifacts import Paths, write_csv, write_json
from pipeline.models import SequenceModel
from pipeline.params import EvalParams, Params
from pipeline.runtime import configure, resolve_device


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


@torch.no_grad()
def predict(model: SequenceModel, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    model.eval()
    return torch.cat([model.predict_next(xb) for xb in x.split(batch_size)])


@torch.no_grad()
def rollout(model: SequenceModel, context: torch.Tensor, steps: int) -> torch.Tensor:
    """Free-running prediction: (M, T, F) context windows -> (M, steps, F) predictions, fed back each step."""
    model.eval()
    window, outputs = context, []
    for _ in range(steps):
        nxt = model.predict_next(window)  # (M, F)
        outputs.append(nxt)
        window = torch.cat([window[:, 1:], nxt[:, None]], dim=1)  # slide: drop the oldest, append the prediction
    return torch.stack(outputs, dim=1)


def _rounded(value: float) -> float | None:
    return float(f"{value:.6g}") if math.isfinite(value) else None


def score(data: datasets.Dataset, model: SequenceModel, cfg: EvalParams, device: torch.device) -> dict:
    """Metrics plus the arrays behind the plots: test predictions, and rollout predictions and errors."""
    x_test = torch.from_numpy(data.scaled(data.x_test)).to(device)
    pred_test = data.unscaled(predict(model, x_test).cpu().numpy())
    result = {"metrics": {"test": {k: _rounded(v) for k, v in regression_metrics(pred_test, data.y_test).items()}},
              "pred_test": pred_test}
    if data.has_rollout:
        steps = data.meta["rollout_steps"]
        context = torch.from_numpy(data.scaled(data.rollout_context)).to(device)
        pred = data.unscaled(rollout(model, context, steps).cpu().numpy())
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


def run(params: Params, dataset: str, model_name: str, paths: Paths = Paths()) -> dict:
    """The evaluate stage: dataset and checkpoint in; metrics JSON, rollout and horizon CSVs and a figure out."""
    from pipeline import plotting  # matplotlib only where a figure is drawn

    data = datasets.load(paths.dataset(dataset))
    device = resolve_device(params.device)
    configure(params.threads)
    model = checkpoints.load(paths.checkpoint(dataset, model_name), device)
    result = score(data, model, params.evaluate, device)
    errors = result.get("horizon_errors")
    write_json(paths.eval_metrics(dataset, model_name), result["metrics"])
    write_csv(paths.rollout_curve(dataset, model_name), ["sequence", "feature", "step", "truth", "prediction"],
              rollout_rows(data, result.get("pred_rollout"), params.evaluate.plot_sequences))
    write_csv(paths.horizon_curve(dataset, model_name), ["step", "rmse"],
              [] if errors is None else [[i + 1, float(e)] for i, e in enumerate(errors)])
    plotting.pair_figure(paths.pair_figure(dataset, model_name), data, model_name,
                         paths.train_curve(dataset, model_name), result, params.evaluate.plot_sequences)
    m = result["metrics"]
    line = f"evaluate {dataset}/{model_name}: test rmse {m['test']['rmse']}"
    if "rollout" in m:
        line += f", {m['rollout']['steps']}-step rollout rmse {m['rollout']['rmse']}, " \
                f"valid for {m['rollout']['valid_horizon']} steps"
    print(line)
    return m
