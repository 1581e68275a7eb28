"""Scoring one model on held-out data: one-step test metrics and autoregressive extrapolation (free-running rollout).

The rollout feeds the model its own predictions: at every step it predicts from the last `window` values, the
way it was trained (each window from a fresh initial state), so a model is never asked to run longer than the
sequences it learned from. All held-out sequences roll out together as one batch, and a learned model advances
all the windows in flight at once (inference.NumpyRecurrent.rollout).
All metrics are in the data's original units. Every replica of a learned pair is scored; `combine` puts their
medians under the single-run names, with the spread and each replica's values beside them.

Everything here works on numpy arrays through one interface, `predict_next(x)`: (B, T, F) -> (B, F_out), and
`predict_next(x, lengths)` for test windows of different lengths (right-padded), from each one's last real step.
"""

import math
from typing import Protocol

import numpy as np

from pipeline.analysis import stats
from pipeline.files import datasets
from pipeline.files.artifacts import significant
from pipeline.params import EvalParams


SCALE_FREE = ("mase", "smape")  # a backtest's extra errors (datasets made from a user's CSV)


class Predictor(Protocol):
    def predict_next(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray: ...


def predict_test(model: Predictor, data: datasets.Dataset) -> np.ndarray:
    """The test windows' predictions in the data's units (each row by its own series' statistics under
    per-series scaling); their lengths go along only where they differ, so a fixed-length dataset's predictor is
    called exactly as before lengths existed."""
    rows, lengths = data.rows("test"), data.lengths("test")
    x = data.scaled(data.x_test, rows)
    return data.unscaled(model.predict_next(x) if lengths is None else model.predict_next(x, lengths), rows)


def regression_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    err = np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    mse = float(np.mean(err ** 2))
    return {"mse": mse, "rmse": math.sqrt(mse), "mae": float(np.mean(np.abs(err)))}


def horizon_rmse(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """RMSE at each step ahead, over all sequences and features: (M, H, F) -> (H,)."""
    err = np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    return np.sqrt(np.mean(err ** 2, axis=(0, 2)))


def mase(pred: np.ndarray, truth: np.ndarray, scale: np.ndarray) -> float:
    """Mean absolute scaled error of (M, H, F) forecasts, each origin's error divided by `scale` (M, F), its
    series' in-sample one-step naive MAE (M4's definition with m = 1), then averaged over origins and features.
    Below 1: better than the naive forecast was in sample. A constant training series (scale 0) gives inf."""
    err = np.abs(np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64)).mean(axis=1)  # (M, F)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.mean(err / np.asarray(scale, dtype=np.float64)))


def smape(pred: np.ndarray, truth: np.ndarray) -> float:
    """Symmetric MAPE in percent (M4): 200 |y - f| / (|y| + |f|), averaged over every value; 0 where both are 0."""
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    denominator = np.abs(truth) + np.abs(pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(denominator > 0, 200 * np.abs(truth - pred) / denominator, 0.0)
    return float(np.mean(terms))


def valid_horizon(errors: np.ndarray, threshold: float) -> int:
    """How many steps ahead the prediction can be trusted: the number of leading steps with error <= threshold."""
    above = np.flatnonzero(~(errors <= threshold))  # NaN counts as out of tolerance
    return int(above[0]) if len(above) else len(errors)


def lyapunov_times(steps: float, time_step: float, exponent: float) -> float:
    """A horizon of `steps` samples in Lyapunov times: steps x time step x the largest Lyapunov exponent, the
    unit in which chaotic forecasts are compared (an error grows e-fold per Lyapunov time)."""
    return float(significant(steps * time_step * exponent, 4))


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
    return significant(value, 6) if math.isfinite(value) else None


def score(data: datasets.Dataset, model: Predictor, cfg: EvalParams) -> dict:
    """Metrics plus the arrays behind the plots: test predictions, and rollout predictions and errors."""
    pred_test = predict_test(model, data)
    result = {"metrics": {"test": {k: _rounded(v) for k, v in regression_metrics(pred_test, data.y_test).items()}},
              "pred_test": pred_test}
    if data.has_rollout:
        steps = data.meta["rollout_steps"]
        rows = data.rows("rollout")
        pred = data.unscaled(rollout(model, data.scaled(data.rollout_context, rows), steps), rows)
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
        if data.meta.get("lyapunov_exponent"):  # a chaotic system's forecast horizon in Lyapunov times
            result["metrics"]["rollout"]["valid_lyapunov_times"] = lyapunov_times(
                result["metrics"]["rollout"]["valid_horizon"], data.meta["time_step"], data.meta["lyapunov_exponent"])
        if "naive_mae" in data.meta:  # a backtest of a user's series: the scale-free errors too
            scale = np.asarray(data.meta["naive_mae"])[data.series_rollout]
            result["metrics"]["rollout"].update(mase=_rounded(mase(pred, data.rollout_target, scale)),
                                                smape=_rounded(smape(pred, data.rollout_target)))
        result.update(pred_rollout=pred, horizon_errors=errors, threshold=threshold)
    return result


def _replica_row(metrics: dict) -> dict:
    """One replica's headline numbers, flat, as the per_replica section holds them."""
    row = {f"test_{k}": v for k, v in metrics["test"].items()}
    if "rollout" in metrics:
        row.update(rollout_mse=metrics["rollout"]["mse"], rollout_rmse=metrics["rollout"]["rmse"],
                   valid_horizon=metrics["rollout"]["valid_horizon"])
        row.update({f"rollout_{k}": metrics["rollout"][k] for k in SCALE_FREE if k in metrics["rollout"]})
    return row


def _finite(values: list) -> list[float]:
    """A missing (non-finite) value counts as the worst one: +inf, for medians and orderings."""
    return [math.inf if v is None else float(v) for v in values]


def _median(values: list) -> float | None:
    return _rounded(stats.median(_finite(values)))


def median_replica(results: list[dict]) -> int:
    """The replica a figure draws as "the median": the one whose rollout RMSE (test RMSE without a rollout) is
    the median, the lower middle one for an even count, ties by index."""
    key = "rollout_rmse" if "rollout" in results[0]["metrics"] else "test_rmse"
    values = _finite([_replica_row(res["metrics"])[key] for res in results])
    return sorted(range(len(values)), key=lambda r: (values[r], r))[(len(values) - 1) // 2]


def combine(results: list[dict], deterministic: bool) -> dict:
    """Every replica's `score` in one metrics dict: medians under the single-run names (so `dvc metrics diff`,
    `dvc exp show` and the report read them as before), the spread beside them, and each replica's own values
    keyed by index (DVC drops lists from metrics)."""
    rows = [_replica_row(res["metrics"]) for res in results]
    first = results[0]["metrics"]
    metrics = {"replicas": len(results), "deterministic": deterministic,
               "test": {k: _median([row[f"test_{k}"] for row in rows]) for k in first["test"]}}
    headline = ["test_rmse"]
    if "rollout" in first:
        rollouts = [res["metrics"]["rollout"] for res in results]
        metrics["rollout"] = {
            "steps": first["rollout"]["steps"],
            "mse": _median([r["mse"] for r in rollouts]),
            "rmse": _median([r["rmse"] for r in rollouts]),
            "rmse_at": {h: _median([r["rmse_at"][h] for r in rollouts]) for h in first["rollout"]["rmse_at"]},
            "valid_horizon": stats.median([r["valid_horizon"] for r in rollouts]),
        }
        metrics["rollout"].update({k: _median([r[k] for r in rollouts]) for k in SCALE_FREE if k in first["rollout"]})
        if "valid_lyapunov_times" in first["rollout"]:
            metrics["rollout"]["valid_lyapunov_times"] = stats.median([r["valid_lyapunov_times"] for r in rollouts])
        headline += ["rollout_rmse", "valid_horizon"]
    with np.errstate(invalid="ignore"):  # a quartile between a finite value and a failed (inf) one is NaN: null
        metrics["spread"] = {key: {name: _rounded(value) for name, value in
                                   stats.spread(_finite([row[key] for row in rows])).items()} for key in headline}
    metrics["per_replica"] = {str(r): row for r, row in enumerate(rows)}
    metrics["median_replica"] = median_replica(results)
    return metrics
