"""Gradient training of a learned model: mini-batch Adam with gradient clipping, early stopping on validation
loss, the best weights restored at the end, and divergence recorded as a result, not a crash.

Losses are MSE on the scaled data. This is the only module that trains with torch; the train stage imports it
only for learned variants.
"""

import copy
import math

import torch

from pipeline import datasets, models
from pipeline.params import TrainParams
from pipeline.progress import Progress
from pipeline.training import History


# Data are scaled to unit variance on the training inputs, so predicting the mean costs a loss of about 1. A loss
# this many times above both that and the untrained model's has left every useful region: Adam with a huge
# learning rate takes steps of size lr whatever the gradient, so its loss explodes without ever becoming NaN.
DIVERGENCE_FACTOR = 100.0


class Adam:
    """torch.optim.Adam's default update (no weight decay, no amsgrad, one tensor at a time), op for op.

    Why not torch.optim.Adam itself: every torch optimizer imports torch._dynamo on its first step, about 1.1 s
    here, which each learned train stage of a full run would pay for an update of five tensor ops. A test checks
    that both produce bit-identical weights over many steps."""

    def __init__(self, parameters, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.parameters = [p for p in parameters if p.requires_grad]
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.parameters]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.parameters]
        self.steps = [0] * len(self.parameters)  # per parameter, as torch counts: one without a gradient waits

    def zero_grad(self) -> None:
        for p in self.parameters:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, (p, exp_avg, exp_avg_sq) in enumerate(zip(self.parameters, self.exp_avg, self.exp_avg_sq)):
            if p.grad is None:
                continue
            self.steps[i] += 1
            grad, step = p.grad, float(self.steps[i])
            exp_avg.lerp_(grad, 1 - self.beta1)
            exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            step_size = self.lr / (1 - self.beta1 ** step)
            denom = (exp_avg_sq.sqrt() / (1 - self.beta2 ** step) ** 0.5).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)


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
    x, y = train
    order_gen = torch.Generator().manual_seed(seed)  # shuffling has its own stream: model init cannot shift it
    optimizer = Adam(model.parameters(), lr=cfg.lr)
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
            optimizer.zero_grad()
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
