"""Baselines that every learned model is shown beside, behind the same predictor interface.

`persistence` predicts that the next value equals the last one; `linear` is an autoregression on the whole
window fitted by least squares on the training split. Both are fitted in closed form (`fit`), flow through the
same train and evaluate stages, and so appear in every metrics file, leaderboard and plot.
"""

import numpy as np
import torch
from torch import nn

from pipeline.models import MODELS, SequenceModel, Shape


@MODELS.register("persistence")
class Persistence(SequenceModel):
    trainable = False

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        if shape.output_size != shape.input_size:
            raise ValueError("persistence needs targets with the same features as the inputs")

    def forward(self, x: torch.Tensor, h=None):
        return x, None  # after each step, predict that step's value again

    def fit(self, x: np.ndarray, y: np.ndarray) -> None:
        """Nothing to fit."""


@MODELS.register("linear")
class LinearAR(SequenceModel):
    """y = W vec(window) + b. It needs a whole window, so it offers `predict_next` but no step contract."""

    trainable = False

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        n_in = shape.window * shape.input_size
        # Buffers, not parameters: nothing here is trained by gradients, and they still travel in the state dict.
        self.register_buffer("weight", torch.zeros(shape.output_size, n_in))
        self.register_buffer("bias", torch.zeros(shape.output_size))

    def predict_next(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x.flatten(1), self.weight, self.bias)  # (B, T*F) -> (B, F_out)

    def forward(self, x: torch.Tensor, h=None):
        raise NotImplementedError("the linear baseline predicts from a whole window: use predict_next")

    def fit(self, x: np.ndarray, y: np.ndarray) -> None:
        """Least squares in float64 on the CPU: the minimum-norm solution, exact and identical on every device
        (windows of a pure sine span only two dimensions, so the system is rank-deficient)."""
        design = np.concatenate([x.reshape(len(x), -1), np.ones((len(x), 1))], axis=1).astype(np.float64)
        solution, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)  # (T*F + 1, F_out)
        self.weight.copy_(torch.from_numpy(solution[:-1].T.copy()))
        self.bias.copy_(torch.from_numpy(solution[-1].copy()))
