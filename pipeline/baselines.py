"""Baselines that every learned model is shown beside: closed-form predictors written in numpy.

`persistence` predicts that the next value equals the last one; `linear` is an autoregression on the whole
window fitted by least squares on the training split. Both go through the same train and evaluate stages and
so appear in every metrics file, leaderboard and plot. They need no torch, so their stages start as fast as
Python does.
"""

import numpy as np

from pipeline.checkpoints import Checkpoint, Shape, corrupt
from pipeline.registry import Registry


class Baseline:
    """Fitted once by `fit(x, y)` on scaled data; predicts with `predict_next(x)`: (B, T, F) -> (B, F_out)."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape

    def fit(self, x: np.ndarray, y: np.ndarray) -> None:
        """Nothing to fit unless a subclass says otherwise."""

    def predict_next(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """The fitted values, to be saved in the checkpoint."""
        return {}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        if arrays:
            raise ValueError(f"unexpected arrays {sorted(arrays)}")


BASELINES: Registry = Registry("model")


@BASELINES.register("persistence")
class Persistence(Baseline):
    def __init__(self, shape: Shape) -> None:
        super().__init__(shape)
        if shape.output_size != shape.input_size:
            raise ValueError("persistence needs targets with the same features as the inputs")

    def predict_next(self, x: np.ndarray) -> np.ndarray:
        return x[:, -1]


@BASELINES.register("linear")
class LinearAR(Baseline):
    """y = W vec(window) + b, in float64."""

    def __init__(self, shape: Shape) -> None:
        super().__init__(shape)
        self.weight = np.zeros((shape.output_size, shape.window * shape.input_size))
        self.bias = np.zeros(shape.output_size)

    def fit(self, x: np.ndarray, y: np.ndarray) -> None:
        """Least squares in float64: the minimum-norm solution, exact and identical on every machine (windows of
        a pure sine span only two dimensions, so the system is rank-deficient)."""
        design = np.concatenate([x.reshape(len(x), -1), np.ones((len(x), 1))], axis=1).astype(np.float64)
        solution, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)  # (T*F + 1, F_out)
        self.weight, self.bias = solution[:-1].T.copy(), solution[-1].copy()

    def predict_next(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).astype(np.float64) @ self.weight.T + self.bias

    def state(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "bias": self.bias}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        expected = {"weight": self.weight.shape, "bias": self.bias.shape}
        if {name: a.shape for name, a in arrays.items()} != expected:
            raise ValueError(f"expected arrays {expected}")
        self.weight, self.bias = (np.asarray(arrays[name], dtype=np.float64) for name in ("weight", "bias"))


def build(kind: str, shape: Shape) -> Baseline:
    return BASELINES.get(kind, "models")(shape)


def restore(checkpoint: Checkpoint) -> Baseline:
    """The fitted baseline a checkpoint holds."""
    try:
        model = build(checkpoint.kind, checkpoint.shape)
        model.load_state(checkpoint.arrays)
    except Exception as exc:
        raise corrupt(checkpoint.path, exc) from None
    return model
