"""Window normalisation (`data.<name>.normalise`), in numpy: each input window in its own units, and back.

Why: the data are scaled by statistics of the training part, so a series that trends leaves, in its test part,
the range the models saw; tanh-bounded states cannot follow it, and learned models lose to persistence there.
The forecasting libraries researchers use normalise each input window instead (neuralforecast's per-window
`scaler_type`, darts' reversible instance normalisation, RevIN), or model differences. Here:

- `window`: each window is shifted by its own mean and divided by its own standard deviation, per feature;
- `window_robust`: the same with its median and interquartile range, which one outlier moves less;
- `difference`: the model reads the window's first differences (a 0 first, so the window keeps its length) and
  predicts the next difference; the prediction is the window's last value plus it;
- `none`: the model reads the window as it is (the synthetic tasks' default, and what they were measured with).

The model predicts in the window's units, and its prediction is mapped back with the same window's statistics;
along a rollout or backtest each step's statistics are those of the window the model sees at that step. A
window's statistics come from its real values only (never padding, never its target). Every operation here is
correctly rounded (add, subtract, multiply, divide, sqrt; sorting for quantiles), so the bits do not depend on
the CPU. pipeline/learning/normalisation.py is the same in torch, for training; tests check them against each
other.
"""

import numpy as np

MODES = ("none", "window", "window_robust", "difference")
EPS = 1e-5  # added to a window's variance (or IQR): a flat window in unit-variance data stays finite


def _real(x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """(B, T, F) -> (B, T, F) float64 with NaN where a right-padded window has no real value."""
    x = np.asarray(x, dtype=np.float64)
    if lengths is None:
        return x
    alive = np.arange(x.shape[1])[None, :] < np.asarray(lengths)[:, None]
    return np.where(alive[..., None], x, np.nan)


def _last(x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """(B, T, F) -> (B, 1, F): each window's last real value."""
    x = np.asarray(x, dtype=np.float64)
    if lengths is None:
        return x[:, -1:]
    return x[np.arange(len(x)), np.asarray(lengths) - 1][:, None]


def statistics(x: np.ndarray, lengths: np.ndarray | None, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale), each (B, 1, F) float64, from each window's own real values."""
    real = _real(x, lengths)
    if mode == "window":
        shift = np.nanmean(real, axis=1, keepdims=True)
        scale = np.sqrt(np.nanmean(np.square(real - shift), axis=1, keepdims=True) + EPS)
    elif mode == "window_robust":
        shift = np.nanmedian(real, axis=1, keepdims=True)
        q1, q3 = np.nanpercentile(real, [25.0, 75.0], axis=1, keepdims=True)
        scale = (q3 - q1) + EPS
    elif mode == "difference":
        shift, scale = _last(x, lengths), np.ones((len(real), 1, real.shape[2]))
    else:
        raise ValueError(f"unknown normalisation {mode!r}")
    return shift, scale


def forward(x: np.ndarray, lengths: np.ndarray | None, mode: str
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows (B, T, F) in the model's input units (float32, padding 0), with the (shift, scale) that map its
    prediction back (`inverse`)."""
    shift, scale = statistics(x, lengths, mode)
    real = _real(x, lengths)
    if mode == "difference":
        z = np.concatenate([np.zeros_like(real[:, :1]), real[:, 1:] - real[:, :-1]], axis=1)
    else:
        z = (real - shift) / scale
    return np.nan_to_num(z, nan=0.0).astype(np.float32), shift, scale


def inverse(pred: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """A prediction (B, F) in a window's units back to the data's (float32)."""
    return (np.asarray(pred, dtype=np.float64) * scale[:, 0] + shift[:, 0]).astype(np.float32)


def targets(y: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Targets (B, F) in their windows' units: what a model fitted in those units is fitted to."""
    return ((np.asarray(y, dtype=np.float64) - shift[:, 0]) / scale[:, 0]).astype(np.float32)


class Normalised:
    """A predictor (or a baseline to fit) that reads normalised windows, behind the plain interface: windows and
    predictions in the data's units. It has no `rollout` of its own, so a rollout predicts one window at a time
    and every step's statistics are its own window's."""

    def __init__(self, inner, mode: str) -> None:
        if mode not in MODES or mode == "none":
            raise ValueError(f"not a normalisation: {mode!r}")
        self.inner, self.mode = inner, mode

    def fit(self, x: np.ndarray, y: np.ndarray, lengths: np.ndarray | None = None) -> None:
        z, shift, scale = forward(x, lengths, self.mode)
        self.inner.fit(z, targets(y, shift, scale), lengths)

    def predict_next(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        z, shift, scale = forward(x, lengths, self.mode)
        return inverse(self.inner.predict_next(z, lengths), shift, scale)

    def state(self) -> dict[str, np.ndarray]:
        return self.inner.state()


# The reference every model is judged against reads the raw window (a normalised persistence would be itself,
# or under `difference` the drift forecast, which is no longer the naive reference).
UNNORMALISED = ("persistence", "mean")  # a last value and a constant: nothing to normalise


def applied(kind: str, predictor, mode: str):
    """`predictor` of model `kind` behind `mode`'s normalisation; itself for `none` and for persistence."""
    return predictor if mode == "none" or kind in UNNORMALISED else Normalised(predictor, mode)
