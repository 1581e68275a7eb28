"""What training a model produced, epoch by epoch: filled by fitting.fit for learned models and by the train
stage for the one-shot baselines, read by the train stage's metrics. Its own module so that neither of the two
that fill it imports the other (fitting needs torch; the baselines' stages must not)."""

import math
from dataclasses import dataclass, field


@dataclass
class History:
    """The outcome of training: one row per epoch and the best validation loss, which the kept weights reach."""

    rows: list[tuple[int, float, float]] = field(default_factory=list)  # (epoch, train_loss, val_loss)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    start_val_loss: float = math.inf  # epoch 0: the weights training started from
    diverged: bool = False
    rollout: "History | None" = None  # the free-running phase (train.rollout_steps), losses over its K steps
    rollout_steps: int = 0
