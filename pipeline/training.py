"""Train one (dataset, model) pair: mini-batch Adam with gradient clipping, early stopping on validation loss,
the best checkpoint restored at the end, and divergence handled as a result, not a crash.

Losses are MSE on the scaled data; the closed-form baselines are fitted once and go through the same outputs.
The metrics file holds only what the weights determine (no wall time), so that two runs with the same params
write byte-identical metrics and `dvc metrics diff` shows real changes only.
"""

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch

from pipeline import checkpoints, datasets, models
from pipeline.artifacts import Paths, write_csv, write_json
from pipeline.params import Params, TrainParams
from pipeline.progress import Progress
from pipeline.runtime import configure, resolve_device


@dataclass
class History:
    rows: list[tuple[int, float, float]] = field(default_factory=list)  # (epoch, train_loss, val_loss)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    diverged: bool = False


# Data are scaled to unit variance on the training inputs, so predicting the mean costs a loss of about 1. A loss
# this many times above both that and the untrained model's has left every useful region: Adam with a huge
# learning rate takes steps of size lr whatever the gradient, so its loss explodes without ever becoming NaN.
DIVERGENCE_FACTOR = 100.0


def exploded(loss: float, reference: float) -> bool:
    """A loss that is non-finite, or DIVERGENCE_FACTOR above `reference` (the untrained loss, at least 1)."""
    return not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * max(reference, 1.0)


@torch.no_grad()
def mean_loss(model: models.SequenceModel, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> float:
    model.eval()
    total = sum(torch.nn.functional.mse_loss(model.predict_next(xb), yb, reduction="sum")
                for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return float(total) / y.numel()


def fit(model: models.SequenceModel, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
        cfg: TrainParams, seed: int, progress: Progress | None = None) -> History:
    """Train in place and leave the best weights (lowest validation loss) in `model`."""
    history = History()
    if not model.trainable:
        model.fit(train[0].cpu().numpy(), train[1].cpu().numpy())
        history.rows.append((0, mean_loss(model, *train), mean_loss(model, *val)))
        history.best_val_loss = history.rows[0][2]
        return history
    x, y = train
    order_gen = torch.Generator().manual_seed(seed)  # shuffling has its own stream: model init cannot shift it
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    best_state = copy.deepcopy(model.state_dict())
    history.best_val_loss = mean_loss(model, *val)  # epoch 0: the untrained model is the first "best"
    reference = max(mean_loss(model, *train), history.best_val_loss)
    stale = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        losses = []
        for index in torch.randperm(len(x), generator=order_gen).split(cfg.batch_size):
            index = index.to(x.device)
            loss = torch.nn.functional.mse_loss(model.predict_next(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            optimizer.step()
            losses.append(loss.detach() * y[index].numel())  # loss is a mean over batch and features
        train_loss = float(torch.stack(losses).sum()) / y.numel()  # one device sync per epoch
        val_loss = mean_loss(model, *val)
        if exploded(train_loss, reference) or exploded(val_loss, reference):
            history.diverged = True
            break
        history.rows.append((epoch, train_loss, val_loss))
        if progress:
            progress.update(epoch, train_loss, val_loss)
        if val_loss < history.best_val_loss:
            history.best_val_loss, history.best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return history


def tensors(data: datasets.Dataset, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    return (torch.from_numpy(data.scaled(x)).to(device), torch.from_numpy(data.scaled(y)).to(device))


def run(params: Params, dataset: str, model_name: str, paths: Paths = Paths()) -> dict:
    """The train stage: dataset file in; checkpoint, metrics JSON and loss-curve CSV out."""
    spec = params.variant(model_name)
    data = datasets.load(paths.dataset(dataset))
    device = resolve_device(params.device)
    configure(params.threads, params.seed)
    shape = models.Shape(input_size=data.meta["n_features"], output_size=data.y_train.shape[-1],
                         window=data.meta["window"], hidden=spec.hidden, layers=spec.layers)
    model = models.build(spec.kind, shape).to(device)
    if not model.trainable:  # sizes mean nothing to a closed-form baseline: keep them out of its checkpoint so
        shape = dataclasses.replace(shape, hidden=0, layers=0)  # that `model.hidden` leaves it byte-identical
    label = f"train {dataset}/{model_name}"
    started = time.perf_counter()
    history = fit(model, tensors(data, "train", device), tensors(data, "val", device), params.train,
                  params.seed, Progress(label, params.train.epochs) if model.trainable else None)
    seconds = time.perf_counter() - started
    last = history.rows[-1] if history.rows else (0, math.nan, math.nan)
    metrics = {
        "best_val_loss": history.best_val_loss,
        "best_epoch": history.best_epoch,
        "final_train_loss": last[1],
        "final_val_loss": last[2],
        "epochs_run": last[0] + (1 if history.diverged else 0),
        "diverged": history.diverged,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "device": str(device),
    }
    checkpoints.save(paths.checkpoint(dataset, model_name), model, spec.kind, shape)
    write_json(paths.train_metrics(dataset, model_name), _finite(metrics))
    write_csv(paths.train_curve(dataset, model_name), ["epoch", "train_loss", "val_loss"], history.rows)
    state = "DIVERGED (loss exploded), kept" if history.diverged else "done,"
    print(f"{label}: {state} best val loss {history.best_val_loss:.4g} at epoch {history.best_epoch} "
          f"in {seconds:.1f}s on {device}")
    return metrics


def _finite(metrics: dict) -> dict:
    """JSON has no NaN: a value that never became finite is written as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}

