"""Matplotlib figures (PNG). Only stages that draw import this module, so the others skip matplotlib's import.

Truth is always black, context grey; each model keeps one colour across every figure of a run.
"""

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI or inside `dvc repro`

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.artifacts import atomic_path  # noqa: E402
from pipeline.datasets import Dataset  # noqa: E402

PREDICTION = "tab:orange"
FEATURE_STYLES = [{"context": "-", "truth": "--", "prediction": "-"},
                  {"context": ":", "truth": (0, (1, 1)), "prediction": "-."}]


# Fixed margins (fractions of the figure) instead of matplotlib's tight layout, which measures every label's
# extent before drawing: 0.1-0.2 s per figure, and a full run draws 54 figures in 54 processes. Each figure has
# a fixed size and the same kinds of labels, so one set of margins per figure fits them all.
PREVIEW_MARGINS = {"left": 0.07, "right": 0.98, "bottom": 0.08, "top": 0.9, "wspace": 0.2, "hspace": 0.38}
PAIR_MARGINS = {"left": 0.065, "right": 0.99, "bottom": 0.12, "top": 0.86, "wspace": 0.3}
COMPARE_MARGINS = {"left": 0.07, "right": 0.99, "bottom": 0.11, "top": 0.93}
BARS_MARGINS = {**COMPARE_MARGINS, "left": 0.11}  # room for the model names ("persistence") on the y axis


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})  # no version stamp: stable bytes
    plt.close(fig)


def _time(data: Dataset, steps: np.ndarray) -> np.ndarray:
    return steps * data.meta["time_step"]


def _value_label(data: Dataset, feature: str) -> str:
    return f"{feature} (original units)"


def _rollout_axes(ax, data: Dataset, seq: int, predictions: dict[str, np.ndarray], colors: dict[str, str]) -> None:
    """Context, truth and each model's prediction for one held-out sequence, every feature."""
    window, steps = data.meta["window"], data.rollout_target.shape[1]
    before, after = _time(data, np.arange(-window + 1, 1)), _time(data, np.arange(1, steps + 1))
    for f, feature in enumerate(data.meta["features"]):
        suffix = f" {feature}" if data.meta["n_features"] > 1 else ""
        style = FEATURE_STYLES[f % len(FEATURE_STYLES)]  # colour tells models apart, line style features
        ax.plot(before, data.rollout_context[seq, :, f], color="grey", lw=2, ls=style["context"],
                label=f"context window{suffix}")
        ax.plot(after, data.rollout_target[seq, :, f], color="black", ls=style["truth"], lw=1.5,
                label=f"truth{suffix}")
        for name, pred in predictions.items():
            ax.plot(after, pred[seq, :, f], color=colors[name], lw=1.2, ls=style["prediction"],
                    label=f"{name}{suffix}")
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    if predictions:  # a diverging model must not squash the truth into a flat line: clip to the truth's range
        known = np.concatenate([data.rollout_context[seq].ravel(), data.rollout_target[seq].ravel()])
        low, high = float(known.min()), float(known.max())
        margin = 0.5 * (high - low) + 1e-6
        ax.set_ylim(low - margin, high + margin)
    ax.set_xlabel(f"{data.meta['time_label']} (0 = last known value)")
    ax.set_ylabel(_value_label(data, ", ".join(data.meta["features"])))


def dataset_preview(path: Path, data: Dataset) -> None:
    """A few sample sequences of a dataset, as seed 000 shows its data before training."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), squeeze=False)
    name = data.meta["name"]
    for i, ax in enumerate(axes.flat):
        if data.has_rollout and i < len(data.rollout_context):
            _rollout_axes(ax, data, i, {}, {})
            ax.set_title(f"held-out sequence {i + 1}: window, then the continuation to predict", fontsize=9)
        elif not data.has_rollout and i < len(data.x_train):
            ax.plot(np.arange(data.meta["window"]), data.x_train[i, :, 0], color="tab:blue", lw=1, label="input")
            ax.set_title(f"training sequence {i + 1}: target {data.y_train[i, 0]:.3f}", fontsize=9)
            ax.set_xlabel("step")
            ax.set_ylabel(_value_label(data, data.meta["features"][0]))
        else:
            ax.axis("off")
            continue
        ax.legend(fontsize=7)
    sizes = data.meta["sizes"]
    fig.suptitle(f"dataset '{name}' ({data.meta['kind']}): {sizes['train']} train / {sizes['val']} val / "
                 f"{sizes['test']} test windows of {data.meta['window']} steps")
    fig.subplots_adjust(**PREVIEW_MARGINS)
    _save(fig, path)


def _read_curve(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: np.array([float(r[key]) for r in rows]) for key in (rows[0] if rows else {})}


def pair_figure(path: Path, data: Dataset, model: str, curve_path: Path, result: dict) -> None:
    """Loss curves, rollout against the truth (context shown) and error against horizon for one pair."""
    fig, (ax_loss, ax_roll, ax_err) = plt.subplots(1, 3, figsize=(16, 4.5))
    curve = _read_curve(curve_path) if curve_path.exists() else {}
    if len(curve.get("epoch", [])):
        marker = "o" if len(curve["epoch"]) == 1 else None
        ax_loss.plot(curve["epoch"], curve["train_loss"], marker=marker, color="tab:blue", label="train")
        ax_loss.plot(curve["epoch"], curve["val_loss"], marker=marker, color="tab:orange", label="validation")
        losses = np.concatenate([curve["train_loss"], curve["val_loss"]])
        if losses.min() > 0 and losses.max() > 10 * losses.min():  # log only where it spans a decade: within
            ax_loss.set_yscale("log")  # one, matplotlib labels minor ticks as long as "1.66x10^-1", off the margin
        ax_loss.legend()
    ax_loss.set(title="loss per epoch", xlabel="epoch", ylabel="MSE (scaled units)")
    if "pred_rollout" in result:
        _rollout_axes(ax_roll, data, 0, {model: result["pred_rollout"]}, {model: PREDICTION})
        ax_roll.set_title(f"free-running rollout, held-out sequence 1 of {len(data.rollout_target)}")
        ax_roll.legend(fontsize=7)
        errors = result["horizon_errors"]
        ax_err.plot(np.arange(1, len(errors) + 1), errors, color=PREDICTION, label=model)
        ax_err.axhline(result["threshold"], color="grey", ls="--", lw=1,
                       label=f"tolerance (valid for {result['metrics']['rollout']['valid_horizon']} steps)")
        ax_err.set_yscale("log")
        ax_err.set(title="rollout error against horizon", xlabel="steps ahead",
                   ylabel="RMSE over held-out sequences (original units)")
        ax_err.legend()
    else:
        truth, pred = data.y_test[:, 0], result["pred_test"][:, 0]
        ax_roll.scatter(truth, pred, s=6, color=PREDICTION, label=model)
        low, high = float(min(truth.min(), pred.min())), float(max(truth.max(), pred.max()))
        ax_roll.plot([low, high], [low, high], color="black", ls="--", lw=1, label="perfect")
        ax_roll.set(title="test set: prediction against truth (no rollout: not autoregressive)",
                    xlabel="true target (original units)", ylabel="predicted target (original units)")
        ax_roll.legend()
        ax_err.hist(pred - truth, bins=40, color=PREDICTION)
        ax_err.set(title="test errors", xlabel="prediction - truth (original units)", ylabel="count")
    fig.suptitle(f"{data.meta['name']} / {model}: test RMSE {result['metrics']['test']['rmse']}")
    fig.subplots_adjust(**PAIR_MARGINS)
    _save(fig, path)


def model_colors(models: list[str]) -> dict[str, str]:
    palette = plt.get_cmap("tab10").colors
    return {name: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, name in enumerate(models)}


def compare_figure(path: Path, data: Dataset, predictions: dict[str, np.ndarray], test_rmse: dict[str, float]) -> None:
    """Every model of one dataset on one figure: rollouts against the truth, or test RMSE bars if no rollout."""
    colors = model_colors(list(test_rmse))
    fig, ax = plt.subplots(figsize=(12, 5))
    if predictions:
        _rollout_axes(ax, data, 0, predictions, colors)
        ax.set_title(f"{data.meta['name']}: every model's free-running rollout, held-out sequence 1")
        ax.legend(fontsize=8, ncol=2)
    else:
        names = list(test_rmse)
        ax.barh(names, [test_rmse[n] for n in names], color=[colors[n] for n in names])
        ax.invert_yaxis()
        ax.set(title=f"{data.meta['name']}: test RMSE per model (lower is better)",
               xlabel="test RMSE (original units)")
    fig.subplots_adjust(**(COMPARE_MARGINS if predictions else BARS_MARGINS))
    _save(fig, path)
