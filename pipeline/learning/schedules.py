"""The learning rate of each epoch, from `train.schedule`.

Why schedules: with a constant rate Adam keeps jittering around a minimum, which costs little in one-step error
but a lot in a long free-running rollout, where every small frequency error adds up (a decaying rate took sine's
1000-step rollout from 2 of 25 trained models within RMSE 0.05 to 14 of 25, issue 14). The rate is set once per
epoch; epoch 1 always uses `lr` itself, so `constant` is training as before, bit for bit.

- constant:    lr
- exponential: lr * lr_decay ** (epoch - 1)
- cosine:      lr - (lr - lr_min) * (1 - cos(pi * (epoch - 1) / epochs)) / 2, from lr towards lr_min over
               `epochs` (early stopping may end it before it gets there)
"""

import math

from pipeline.params import TrainParams


def learning_rate(cfg: TrainParams, epoch: int) -> float:
    """The rate for `epoch` (1-based) under cfg's schedule."""
    if epoch < 1:
        raise ValueError(f"epochs count from 1, got {epoch}")
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "exponential":
        return cfg.lr * cfg.lr_decay ** (epoch - 1)
    if cfg.schedule == "cosine":
        return cfg.lr - (cfg.lr - cfg.lr_min) * (1 - math.cos(math.pi * (epoch - 1) / cfg.epochs)) / 2
    raise ValueError(f"unknown schedule '{cfg.schedule}'")  # params validation lists the choices
