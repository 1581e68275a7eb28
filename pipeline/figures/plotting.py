"""Matplotlib figures (PNG). Only stages that draw import this module, so the others skip matplotlib's import.

Truth is always black, context grey; each model keeps one colour across every figure of a run. A learned model
is trained as R replicas: its line is the median replica's (the one whose rollout RMSE, or test RMSE without a
rollout, is the median), and a shaded band of the same colour spans the minimum to the maximum over all replicas
at each step. The baselines are deterministic, one fit: a line without a band.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI or inside `dvc repro`

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.files.artifacts import atomic_path, spread_text  # noqa: E402
from pipeline.files.datasets import Dataset  # noqa: E402

PREDICTION = "tab:orange"
BAND_ALPHA = 0.22  # the replicas' min-max band, in its line's colour
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


def _band(stack: np.ndarray, low: float | None = None, high: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Min and max over the leading (replica) axis, clipped to [low, high] (default: the finite values' range).
    A replica that blew up (inf or NaN) pushes the band to the clip edge instead of breaking the fill."""
    arr = np.asarray(stack, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if low is None:
        low = float(finite.min()) if finite.size else 0.0
    if high is None:
        high = float(finite.max()) if finite.size else max(1.0, low)
    lo = np.where(np.isnan(arr), low, arr).min(axis=0)
    hi = np.where(np.isnan(arr), high, arr).max(axis=0)
    return np.clip(lo, low, high), np.clip(hi, low, high)


def _rollout_axes(ax, data: Dataset, seq: int, predictions: dict[str, np.ndarray], colors: dict[str, str],
                  replicas: dict[str, np.ndarray] | None = None, labels: dict[str, str] | None = None,
                  features: list[int] | None = None) -> None:
    """Context, truth and each model's prediction for one held-out sequence, every feature (or those listed in
    `features`). `predictions` holds what each line draws (M, H, F); `replicas`, where a model has more than
    one, all of them (R, M, H, F) for its min-max band."""
    replicas, labels = replicas or {}, labels or {}
    window, steps = data.meta["window"], data.rollout_target.shape[1]
    before, after = _time(data, np.arange(-window + 1, 1)), _time(data, np.arange(1, steps + 1))
    shown = list(range(data.meta["n_features"])) if features is None else features
    known = np.concatenate([data.rollout_context[seq][:, shown].ravel(), data.rollout_target[seq][:, shown].ravel()])
    low, high = float(known.min()), float(known.max())
    margin = 0.5 * (high - low) + 1e-6
    for f, feature in enumerate(data.meta["features"]):
        if f not in shown:
            continue
        suffix = f" {feature}" if data.meta["n_features"] > 1 else ""
        style = FEATURE_STYLES[f % len(FEATURE_STYLES)]  # colour tells models apart, line style features
        ax.plot(before, data.rollout_context[seq, :, f], color="grey", lw=2, ls=style["context"],
                label=f"context window{suffix}")
        ax.plot(after, data.rollout_target[seq, :, f], color="black", ls=style["truth"], lw=1.5,
                label=f"truth{suffix}")
        for name, pred in predictions.items():
            if name in replicas:  # the band goes under the line; clipped just beyond the axes' limits
                lo, hi = _band(replicas[name][:, seq, :, f], low - 2 * margin, high + 2 * margin)
                ax.fill_between(after, lo, hi, color=colors[name], alpha=BAND_ALPHA, lw=0)
            ax.plot(after, pred[seq, :, f], color=colors[name], lw=1.2, ls=style["prediction"],
                    label=f"{labels.get(name, name)}{suffix}")
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    if predictions:  # a diverging model must not squash the truth into a flat line: clip to the truth's range
        ax.set_ylim(low - margin, high + margin)
    ax.set_xlabel(f"{data.meta['time_label']} (0 = last known value)")
    ax.set_ylabel(_value_label(data, ", ".join(data.meta["features"][f] for f in shown)))


def _phase_axes(ax, data: Dataset, predictions: dict[str, np.ndarray], colors: dict[str, str], x: int, z: int
                ) -> None:
    """The rollout of held-out sequence 1 in phase space (feature `x` against feature `z`): the truth's
    trajectory and each model's free-running one, which a chaotic system's forecast leaves after a few Lyapunov
    times but a model that learned the dynamics keeps on the attractor's shape."""
    truth = data.rollout_target[0]
    for name, pred in predictions.items():
        ax.plot(pred[0, :, x], pred[0, :, z], color=colors[name], lw=0.8, alpha=0.8, label=name)
    ax.plot(truth[:, x], truth[:, z], color="black", lw=1.2, label="truth")
    span = truth.max(axis=0) - truth.min(axis=0)
    ax.set_xlim(truth[:, x].min() - 0.3 * span[x], truth[:, x].max() + 0.3 * span[x])
    ax.set_ylim(truth[:, z].min() - 0.3 * span[z], truth[:, z].max() + 0.3 * span[z])
    names = data.meta["features"]
    ax.set(xlabel=names[x], ylabel=names[z], title=f"phase space {names[x]}-{names[z]}, "
           f"{truth.shape[0]} steps from the test start")


def dataset_preview(path: Path, data: Dataset) -> None:
    """A few sample sequences of a dataset, as seed 000 shows its data before training."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), squeeze=False)
    name, lengths = data.meta["name"], data.lengths("train")
    for i, ax in enumerate(axes.flat):
        if data.has_rollout and i < len(data.rollout_context):
            _rollout_axes(ax, data, i, {}, {})
            ax.set_title(f"held-out sequence {i + 1}: window, then the continuation to predict", fontsize=9)
        elif not data.has_rollout and i < len(data.x_train):
            steps = data.meta["window"] if lengths is None else int(lengths[i])  # its real steps, not the padding
            ax.plot(np.arange(steps), data.x_train[i, :steps, 0], color="tab:blue", lw=1, label="input")
            ax.set_title(f"training sequence {i + 1}: target {data.y_train[i, 0]:.3f}", fontsize=9)
            ax.set_xlabel("step")
            ax.set_ylabel(_value_label(data, data.meta["features"][0]))
        else:
            ax.axis("off")
            continue
        ax.legend(fontsize=7)
    sizes = data.meta["sizes"]
    steps = data.meta["window"] if lengths is None else f"{lengths.min()}-{lengths.max()}"
    fig.suptitle(f"dataset '{name}' ({data.meta['kind']}): {sizes['train']} train / {sizes['val']} val / "
                 f"{sizes['test']} test windows of {steps} steps")
    fig.subplots_adjust(**PREVIEW_MARGINS)
    _save(fig, path)


def _replica_curves(rows: list[dict]) -> dict[int, dict[str, np.ndarray]]:
    """The long-format loss curve (epoch, replica, train_loss, val_loss) as one set of arrays per replica."""
    curves: dict[int, dict[str, list[float]]] = {}
    for r in rows:
        curve = curves.setdefault(int(r["replica"]), {"epoch": [], "train_loss": [], "val_loss": []})
        for key in curve:
            curve[key].append(float(r[key]))
    return {rep: {k: np.array(v) for k, v in curve.items()} for rep, curve in sorted(curves.items())}


def _loss_axes(ax, rows: list[dict], median: int) -> None:
    """Train and validation loss per epoch: every replica a thin line, the median replica a thick one."""
    curves = _replica_curves(rows)
    if curves:
        several = len(curves) > 1
        others = len(curves) - 1
        for rep, curve in curves.items():
            main = rep == median or not several
            marker = "o" if len(curve["epoch"]) == 1 else None
            for key, color, name in (("train_loss", "tab:blue", "train"), ("val_loss", "tab:orange", "validation")):
                if not several:
                    label = name
                elif main:
                    label = f"{name}, median replica"
                else:
                    label = f"{name}, other {others} replicas" if rep == min(set(curves) - {median}) else None
                ax.plot(curve["epoch"], curve[key], marker=marker, color=color, label=label,
                        lw=1.6 if main else 0.7, alpha=1.0 if main else 0.5, zorder=3 if main else 2)
        losses = np.concatenate([c[k] for c in curves.values() for k in ("train_loss", "val_loss")])
        losses = losses[np.isfinite(losses)]
        if len(losses) and losses.min() > 0 and losses.max() > 10 * losses.min():  # log only where it spans a
            ax.set_yscale("log")  # decade: within one, matplotlib labels minor ticks as "1.66x10^-1", off the margin
        ax.legend(fontsize=8)
    title = "loss per epoch" + (f", {len(curves)} replicas" if len(curves) > 1 else "")
    ax.set(title=title, xlabel="epoch", ylabel="MSE (scaled units)")


def _headline(metrics: dict, key: str, section: str, name: str, digits: int | None = 3) -> str:
    """`0.122 [0.026-0.248]` for one headline metric of an evaluate stage's metrics."""
    spread = metrics["spread"].get(key, {})
    return spread_text(metrics[section][name], spread.get("min"), spread.get("max"), int(metrics["replicas"]),
                       digits)


def pair_figure(path: Path, data: Dataset, model: str, curve: list[dict], result: dict) -> None:
    """Loss curves, rollout against the truth (context shown) and error against horizon for one pair: the
    median replica's lines, with a band over all replicas (min-max per step) where there are several."""
    fig, (ax_loss, ax_roll, ax_err) = plt.subplots(1, 3, figsize=(16, 4.5))
    metrics, median = result["metrics"], result["median_replica"]
    n = len(result["pred_test"])
    _loss_axes(ax_loss, curve, median)
    what = f"median of {n} replicas (band: min-max)" if n > 1 else None
    if "pred_rollout" in result:
        replicas = result["pred_rollout"]
        _rollout_axes(ax_roll, data, 0, {model: replicas[median]}, {model: PREDICTION},
                      {model: replicas} if n > 1 else {}, {model: f"{model}, {what}" if what else model})
        ax_roll.set_title(f"backtest origin 1 of {len(data.rollout_target)} (every origin: {model}-backtest.png)"
                          if is_backtest(data) else
                          f"free-running rollout, held-out sequence 1 of {len(data.rollout_target)}", fontsize=10)
        ax_roll.legend(fontsize=7)
        errors = result["horizon_errors"]
        steps = np.arange(1, errors.shape[1] + 1)
        if n > 1:  # on the log axis the band starts no lower than the smallest positive error
            positive = errors[np.isfinite(errors) & (errors > 0)]
            lo, hi = _band(errors, float(positive.min()) if positive.size else 1e-12, None)
            ax_err.fill_between(steps, lo, hi, color=PREDICTION, alpha=BAND_ALPHA, lw=0)
        ax_err.plot(steps, errors[median], color=PREDICTION, label=f"{model}, {what}" if what else model)
        valid = _headline(metrics, "valid_horizon", "rollout", "valid_horizon", digits=None)
        ax_err.axhline(result["threshold"], color="grey", ls="--", lw=1, label=f"tolerance (valid for {valid} steps)")
        ax_err.set_yscale("log")
        ax_err.set(title="rollout error against horizon", xlabel="steps ahead",
                   ylabel="RMSE over held-out sequences (original units)")
        ax_err.legend(fontsize=8)
    else:
        truth, pred = data.y_test[:, 0], result["pred_test"][median, :, 0]
        if n > 1:  # each test point's range over the replicas
            lo, hi = _band(result["pred_test"][:, :, 0])
            ax_roll.vlines(truth, lo, hi, color=PREDICTION, alpha=0.5, lw=1, label=f"min-max of {n} replicas")
        ax_roll.scatter(truth, pred, s=6, color=PREDICTION, label=f"{model}, median replica" if n > 1 else model)
        low, high = float(min(truth.min(), pred.min())), float(max(truth.max(), pred.max()))
        ax_roll.plot([low, high], [low, high], color="black", ls="--", lw=1, label="perfect")
        ax_roll.set(title="test set: prediction against truth (no rollout: not autoregressive)",
                    xlabel="true target (original units)", ylabel="predicted target (original units)")
        ax_roll.legend(fontsize=8)
        errors = (pred - truth).astype(np.float64)
        spread = float(np.ptp(errors)) if len(errors) else 0.0  # errors all alike (one bin) cannot make 40 bins
        ax_err.hist(errors, bins=40 if spread > 1e-9 * (1 + float(np.abs(errors).max())) else 1, color=PREDICTION)
        ax_err.set(title="test errors" + (" of the median replica" if n > 1 else ""),
                   xlabel="prediction - truth (original units)", ylabel="count")
    how = (f"median [min-max] of {n} replicas, replica {median} drawn" if n > 1
           else "deterministic, one fit" if metrics.get("deterministic") else "one replica")
    fig.suptitle(f"{data.meta['name']} / {model}: test RMSE {_headline(metrics, 'test_rmse', 'test', 'rmse')} "
                 f"({how})")
    fig.subplots_adjust(**PAIR_MARGINS)
    _save(fig, path)


def is_backtest(data: Dataset) -> bool:
    """A user's CSV: the rollout is a rolling-origin backtest over series (see generators.CsvSpec)."""
    return len(data.series_rollout) > 0


def backtest_figure(path: Path, data: Dataset, model: str, result: dict, n_series: int = 3,
                    n_origins: int = 6) -> None:
    """The backtest of a few series, one panel each: the series' known values around its test part (black),
    and the median replica's forecasts from up to `n_origins` origins spread over the test part, each drawn
    from its origin (dotted line) over the horizon."""
    series = data.series_rollout
    shown = list(dict.fromkeys(series.tolist()))[:n_series]
    fig, axes = plt.subplots(len(shown), 1, figsize=(12, 3.2 * len(shown)), squeeze=False)
    pred = result["pred_rollout"][result["median_replica"]]  # (M, H, F)
    window, steps = data.meta["window"], data.rollout_target.shape[1]
    names = data.meta.get("series", [])
    for ax, s in zip(axes[:, 0], shown):
        rows = np.flatnonzero(series == s)
        origins = data.rollout_origin[rows]
        known: dict[int, np.ndarray] = {}  # position in the series -> its value, from every origin's arrays
        for r, o in zip(rows, origins):
            for i in range(window):
                known[int(o) - window + i] = data.rollout_context[r, i]
            for i in range(steps):
                known[int(o) + i] = data.rollout_target[r, i]
        positions = np.array(sorted(known))
        values = np.array([known[p] for p in positions])
        picked = rows[np.unique(np.linspace(0, len(rows) - 1, min(n_origins, len(rows))).round().astype(int))]
        shades = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(picked)))
        for f, feature in enumerate(data.meta["features"]):
            suffix = f" {feature}" if data.meta["n_features"] > 1 else ""
            style = FEATURE_STYLES[f % len(FEATURE_STYLES)]
            ax.plot(positions, values[:, f], color="black", lw=1.3, ls=style["truth"], label=f"truth{suffix}")
            for shade, r in zip(shades, picked):
                o = int(data.rollout_origin[r])
                ax.plot(np.arange(o, o + steps), pred[r, :, f], color=shade, lw=1.4, ls=style["prediction"],
                        label=f"forecast from {o}{suffix}" if f == 0 else None)
        for shade, r in zip(shades, picked):
            ax.axvline(int(data.rollout_origin[r]) - 0.5, color=shade, lw=0.8, ls=":")
        label = names[s] if s < len(names) and names[s] else f"{s + 1}"
        ax.set_title(f"series {label}: {len(rows)} origins, {len(picked)} drawn, {steps} steps each", fontsize=9)
        ax.set_xlabel("position in the series (row after sorting by time)")
        ax.set_ylabel(_value_label(data, ", ".join(data.meta["features"])))
        ax.legend(fontsize=7, ncol=2)
    n = len(result["pred_rollout"])
    metrics = result["metrics"]["rollout"]
    scale_free = ", ".join(f"{label} {metrics[k]:.3g}" for k, label in (("mase", "MASE"), ("smape", "sMAPE %"))
                           if metrics.get(k) is not None)
    fig.suptitle(f"{data.meta['name']} / {model}: rolling-origin backtest, RMSE {metrics['rmse']:.3g}"
                 f"{', ' + scale_free if scale_free else ''} over {len(series)} origins"
                 f"{f' (median of {n} replicas)' if n > 1 else ''}", fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.08, top=0.92, hspace=0.45)
    _save(fig, path)


def model_colors(models: list[str]) -> dict[str, str]:
    """tab10 without its grey (the context window's colour), then tab20's lighter shades: 18 models apart."""
    dark = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]
    light = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i % 2 and i != 15]
    palette = dark + light
    return {name: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, name in enumerate(models)}


def compare_figure(path: Path, data: Dataset, results: dict[str, dict]) -> None:
    """Every model of one dataset on one figure (`results`: model -> compare.pair_result): each model's median
    replica's rollout with a band over its replicas against the truth, or, with no rollout, median test RMSE bars
    with min-max whiskers."""
    colors = model_colors(list(results))
    rollout = data.has_rollout and all("pred_rollout" in r for r in results.values())
    phase = rollout and data.meta["kind"] == "lorenz"  # a 3-D attractor: one column over time, x-z beside it
    if phase:
        fig, (ax, phase_ax) = plt.subplots(1, 2, figsize=(16, 5.5), gridspec_kw={"width_ratios": [2, 1]})
    else:
        fig, ax = plt.subplots(figsize=(12, 5))
    if rollout:
        predictions = {m: r["pred_rollout"][r["median_replica"]] for m, r in results.items()}
        replicas = {m: r["pred_rollout"] for m, r in results.items() if len(r["pred_rollout"]) > 1}
        _rollout_axes(ax, data, 0, predictions, colors, replicas, features=[0] if phase else None)
        ax.set_title(f"{data.meta['name']}: every model's free-running rollout, held-out sequence 1 "
                     f"(line: median replica, band: min-max over replicas; baselines: one fit)", fontsize=10)
        ax.legend(fontsize=8, ncol=2)
        if phase:
            _phase_axes(phase_ax, data, predictions, colors, 0, 2)
    else:
        names = list(results)
        metrics = [results[n]["metrics"] for n in names]
        median = np.array([m["test"]["rmse"] for m in metrics], dtype=float)
        low = np.array([m["spread"]["test_rmse"]["min"] for m in metrics], dtype=float)
        high = np.array([m["spread"]["test_rmse"]["max"] for m in metrics], dtype=float)
        ax.barh(names, median, color=[colors[n] for n in names])
        several = [i for i, n in enumerate(names) if len(results[n]["pred_test"]) > 1]  # one fit: no whiskers
        if several:
            ax.errorbar(median[several], several, fmt="none", ecolor="black", capsize=3, lw=1,
                        xerr=np.maximum(np.vstack([median - low, high - median])[:, several], 0))
        ax.invert_yaxis()
        ax.set(title=f"{data.meta['name']}: test RMSE per model, median with min-max over replicas (lower is better)",
               xlabel="test RMSE (original units)")
        if "mean" in results:
            ax.axvline(results["mean"]["metrics"]["test"]["rmse"], color="grey", ls="--", lw=1,
                       label="mean baseline (predicts the training targets' mean)")
        if data.meta["kind"] == "adding":  # Hochreiter & Schmidhuber's criterion: MSE below 0.01 solves it
            ax.axvline(0.1, color="green", ls=":", lw=1.2, label="solved: MSE 0.01 (RMSE 0.1)")
        if np.nanmax(high) > 100 * np.nanmin(median):
            ax.set_xscale("log")
            ax.set_xlabel("test RMSE (original units, log scale)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
    if phase:
        fig.subplots_adjust(left=0.05, right=0.98, bottom=0.11, top=0.92, wspace=0.18)
    else:
        fig.subplots_adjust(**(COMPARE_MARGINS if rollout else BARS_MARGINS))
    _save(fig, path)
