"""The train stage: fit one (dataset, model) pair and write its checkpoint, metrics and loss curve.

Learned variants are trained by gradients in fitting.py (torch, imported only for them); the closed-form
baselines are fitted in numpy here, so their stages never pay for importing torch. Both write the same outputs.
The metrics file holds only what the weights determine (no wall time), so that two runs with the same params
write byte-identical metrics and `dvc metrics diff` shows real changes only.
"""

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np

from pipeline import baselines, checkpoints, datasets
from pipeline.artifacts import Paths, write_csv, write_json
from pipeline.params import Params


@dataclass
class History:
    """The outcome of training: one row per epoch and the best validation loss, which the kept weights reach."""

    rows: list[tuple[int, float, float]] = field(default_factory=list)  # (epoch, train_loss, val_loss)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    diverged: bool = False


def run(params: Params, dataset: str, model_name: str, paths: Paths = Paths()) -> dict:
    """Dataset file in; checkpoint, metrics JSON and loss-curve CSV out."""
    spec = params.variant(model_name)
    data = datasets.load(paths.dataset(dataset))
    shape = checkpoints.Shape(input_size=data.meta["n_features"], output_size=data.y_train.shape[-1],
                              window=data.meta["window"], hidden=spec.hidden, layers=spec.layers)
    label = f"train {dataset}/{model_name}"
    started = time.perf_counter()
    if spec.kind in baselines.BASELINES:
        history, arrays, parameters, device = _fit_baseline(data, spec.kind, shape)
        # Sizes mean nothing to a closed-form baseline: keep them out of its checkpoint, so that changing
        # `model.hidden` leaves it byte-identical and DVC skips its evaluation.
        shape = dataclasses.replace(shape, hidden=0, layers=0)
    else:
        history, arrays, parameters, device = _fit_learned(params, data, spec.kind, shape, label)
    seconds = time.perf_counter() - started
    last = history.rows[-1] if history.rows else (0, math.nan, math.nan)
    metrics = {
        "best_val_loss": history.best_val_loss,
        "best_epoch": history.best_epoch,
        "final_train_loss": last[1],
        "final_val_loss": last[2],
        "epochs_run": last[0] + (1 if history.diverged else 0),
        "diverged": history.diverged,
        "parameters": parameters,
        "device": device,
    }
    checkpoints.save(paths.checkpoint(dataset, model_name), spec.kind, shape, arrays)
    write_json(paths.train_metrics(dataset, model_name), _finite(metrics))
    write_csv(paths.train_curve(dataset, model_name), ["epoch", "train_loss", "val_loss"], history.rows)
    state = "DIVERGED (loss exploded), kept" if history.diverged else "done,"
    print(f"{label}: {state} best val loss {history.best_val_loss:.4g} at epoch {history.best_epoch} "
          f"in {seconds:.1f}s on {device}")
    return metrics


def _fit_baseline(data: datasets.Dataset, kind: str, shape: checkpoints.Shape
                  ) -> tuple[History, dict[str, np.ndarray], int, str]:
    """Fit on the scaled training split in one go; its losses are epoch 0 of the curve. Baselines have no
    trained parameters and always run on the CPU."""
    model = baselines.build(kind, shape)
    x, y = (data.scaled(a) for a in (data.x_train, data.y_train))
    model.fit(x, y)
    losses = [_mse(model.predict_next(data.scaled(xs)), data.scaled(ys))
              for xs, ys in ((data.x_train, data.y_train), (data.x_val, data.y_val))]
    history = History(rows=[(0, *losses)], best_epoch=0, best_val_loss=losses[1])
    return history, model.state(), 0, "cpu"


def _fit_learned(params: Params, data: datasets.Dataset, kind: str, shape: checkpoints.Shape, label: str
                 ) -> tuple[History, dict[str, np.ndarray], int, str]:
    from pipeline import fitting, models  # torch: imported only when a model is trained by gradients
    from pipeline.progress import Progress
    from pipeline.runtime import configure, resolve_device

    device = resolve_device(params.device)
    configure(params.threads, params.seed)
    model = models.build(kind, shape).to(device)
    history = fitting.fit(model, fitting.tensors(data, "train", device), fitting.tensors(data, "val", device),
                          params.train, params.seed, Progress(label, params.train.epochs))
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return history, models.state_arrays(model), parameters, str(device)


def _mse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over examples and features in float64, as fitting.mean_loss averages for the learned models."""
    return float(np.mean((np.asarray(pred, dtype=np.float64) - truth) ** 2))


def _finite(metrics: dict) -> dict:
    """JSON has no NaN: a value that never became finite is written as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
