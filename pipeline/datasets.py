"""The dataset file format shared by every stage, plus the helpers generators use to build it.

A dataset is a set of (window -> next value) examples split into train, val and test, plus, for datasets that
can be continued, a *rollout* task: context windows and their true continuation. Arrays are stored in the
data's original units; the scaling statistics (from the training inputs only) travel with them, so that
training and evaluation need no generator params. One `.npz` holds everything, readable without pickle.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import atomic_path
from pipeline.errors import ArtifactError

SPLITS = ("train", "val", "test")
ARRAYS = tuple(f"{xy}_{s}" for s in SPLITS for xy in "xy") + ("rollout_context", "rollout_target")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Arrays are float32: x_* (N, T, F) windows, y_* (N, F_out) targets, rollout_* (M, T|H, F)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    rollout_context: np.ndarray
    rollout_target: np.ndarray
    meta: dict[str, Any]

    @property
    def has_rollout(self) -> bool:
        return len(self.rollout_context) > 0

    def scaled(self, array: np.ndarray) -> np.ndarray:
        return ((array - self.meta["scale_mean"]) / self.meta["scale_std"]).astype(np.float32)

    def unscaled(self, array: np.ndarray) -> np.ndarray:
        return (array * self.meta["scale_std"] + self.meta["scale_mean"]).astype(np.float32)


def make_dataset(name: str, kind: str, features: list[str], splits: dict[str, tuple[np.ndarray, np.ndarray]],
                 rollout: tuple[np.ndarray, np.ndarray] | None, time_step: float = 1.0,
                 time_label: str = "step") -> Dataset:
    """Assemble a Dataset, computing the scaling statistics from the training inputs only."""
    x_train = splits["train"][0]
    n_features = x_train.shape[-1]
    mean = x_train.reshape(-1, n_features).mean(axis=0)
    std = x_train.reshape(-1, n_features).std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)  # a constant feature is left unscaled rather than divided by zero
    if rollout is None:
        rollout = (np.zeros((0, x_train.shape[1], n_features)), np.zeros((0, 0, n_features)))
    arrays = {f"{xy}_{s}": np.asarray(splits[s][i], dtype=np.float32) for s in SPLITS for i, xy in enumerate("xy")}
    meta = {
        "name": name,
        "kind": kind,
        "features": features,
        "n_features": n_features,
        "window": int(x_train.shape[1]),
        "sizes": {s: int(len(arrays[f"x_{s}"])) for s in SPLITS},
        "rollout_sequences": int(len(rollout[0])),
        "rollout_steps": int(rollout[1].shape[1]),
        "autoregressive": rollout[0].shape[0] > 0,
        "scale_mean": [float(v) for v in mean],
        "scale_std": [float(v) for v in std],
        "time_step": float(time_step),
        "time_label": time_label,
    }
    return Dataset(**arrays, rollout_context=np.asarray(rollout[0], dtype=np.float32),
                   rollout_target=np.asarray(rollout[1], dtype=np.float32), meta=meta)


def sliding_windows(series: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (window, next value) pair of a (L, F) series: X (L - window, window, F), y (L - window, F).

    Unlike seed 002's loop (`range(len - window - 1)`), the last window is kept.
    """
    n = len(series) - window
    index = np.arange(window)[None, :] + np.arange(n)[:, None]  # (n, window)
    return series[index], series[window:]


def random_split(x: np.ndarray, y: np.ndarray, fraction: float, rng: np.random.Generator
                 ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Split examples at random: (kept, held out) with round(fraction * N) held out, at least one."""
    order = rng.permutation(len(x))
    n_out = max(1, round(fraction * len(x)))
    keep, out = np.sort(order[n_out:]), np.sort(order[:n_out])
    return (x[keep], y[keep]), (x[out], y[out])


def save(dataset: Dataset, path: Path) -> None:
    arrays = {name: getattr(dataset, name) for name in ARRAYS}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file handle stops numpy from appending ".npz" to the temp name
            np.savez_compressed(handle, meta=np.array(json.dumps(dataset.meta, sort_keys=True)), **arrays)


def load(path: Path) -> Dataset:
    """Read a dataset file; a missing or corrupt file is one clear error, and pickle is never allowed."""
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; run `dvc repro` to generate it")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in ARRAYS}
            meta = json.loads(str(data["meta"]))
    except Exception as exc:  # zip, zlib, JSON and numpy each raise their own types for a damaged file
        raise ArtifactError(f"{path} is corrupt ({type(exc).__name__}); delete it and run `dvc repro`") from None
    return Dataset(**arrays, meta=meta)
