"""The dataset file format shared by every stage, plus the helpers generators use to build it.

A dataset is a set of (window -> next value) examples split into train, val and test, plus, for datasets that
can be continued, a *rollout* task: context windows and their true continuation, and the training and validation
*sequences* the windows were cut from (for the free-running objective, which needs each window's true
continuation: `sequences_<split>` (S, L, F) and `starts_<split>` (N, 2) = (sequence, offset) of every window
whose continuation may be used, inside its split's part of the data; a shorter sequence is padded with NaN).
Windows of different lengths (a memory dataset with a length range) are right-padded with zeros to the longest,
and `lengths_<split>` (N,) holds each window's real length (`Dataset.lengths`). Arrays are stored in the data's
original units; the scaling statistics (from the training inputs' real values only) travel with them, so that
training and evaluation need no generator params. One `.npz` holds everything, readable without pickle.

Data made of several series (a user's long-format CSV) also says which series every example and every rollout
origin belongs to (`series_<split>`, `series_rollout`, `rollout_origin`): with `scaling: per_series` each row is
scaled by its own series' training statistics, and the backtest's scale-free errors divide by its own series'
naive error. These optional arrays, and the lengths, are stored only when present, so that the files of other
datasets keep their bytes (and DVC retrains nothing for them).
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.files.artifacts import atomic_path
from pipeline.errors import ArtifactError

SPLITS = ("train", "val", "test")
FIT_SPLITS = ("train", "val")
ARRAYS = (tuple(f"{xy}_{s}" for s in SPLITS for xy in "xy") + ("rollout_context", "rollout_target")
          + tuple(f"{a}_{s}" for s in FIT_SPLITS for a in ("sequences", "starts")))
ROW_SETS = SPLITS + ("rollout",)
OPTIONAL_ARRAYS = (tuple(f"series_{s}" for s in ROW_SETS) + ("rollout_origin",)
                   + tuple(f"lengths_{s}" for s in SPLITS))


def _none() -> np.ndarray:
    """An optional array's value where it does not apply: every window full length, a single series."""
    return np.zeros(0, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Arrays are float32: x_* (N, T, F) windows, y_* (N, F_out) targets, rollout_* (M, T|H, F); lengths_*
    (N,) int64 real lengths of right-padded windows, or (0,) where every window is full length."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    rollout_context: np.ndarray
    rollout_target: np.ndarray
    sequences_train: np.ndarray
    starts_train: np.ndarray
    sequences_val: np.ndarray
    starts_val: np.ndarray
    meta: dict[str, Any]
    lengths_train: np.ndarray = dataclasses.field(default_factory=_none)
    lengths_val: np.ndarray = dataclasses.field(default_factory=_none)
    lengths_test: np.ndarray = dataclasses.field(default_factory=_none)
    series_train: np.ndarray = dataclasses.field(default_factory=_none)
    series_val: np.ndarray = dataclasses.field(default_factory=_none)
    series_test: np.ndarray = dataclasses.field(default_factory=_none)
    series_rollout: np.ndarray = dataclasses.field(default_factory=_none)
    rollout_origin: np.ndarray = dataclasses.field(default_factory=_none)

    def lengths(self, split: str) -> np.ndarray | None:
        """Each window's real length in `split`, or None where every window is full length (fixed-length data),
        which every predictor reads as "predict from the last step", exactly as before lengths existed."""
        lengths = getattr(self, f"lengths_{split}")
        return lengths if len(lengths) else None

    @property
    def normalise(self) -> str:
        """How the learned models and the linear baseline read its windows (data.<name>.normalise)."""
        return self.meta.get("normalise", "none")

    @property
    def has_rollout(self) -> bool:
        return len(self.rollout_context) > 0

    def continuations(self, split: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Every window of `split` ("train" or "val") that has `steps` true values after it inside its part of
        the data: contexts (N, T, F) and continuations (N, steps, F), in original units."""
        keep = self._continued(split, steps)
        sequences, window = getattr(self, f"sequences_{split}"), self.meta["window"]
        if len(keep) == 0:
            return (np.zeros((0, window, self.meta["n_features"]), np.float32),
                    np.zeros((0, steps, self.meta["n_features"]), np.float32))
        index = keep[:, 1:2] + np.arange(window + steps)[None, :]  # (N, T + steps)
        segments = sequences[keep[:, :1], index]
        return segments[:, :window], segments[:, window:]

    def _continued(self, split: str, steps: int) -> np.ndarray:
        """The starts (sequence, offset) of the windows with `steps` true values after them."""
        starts = getattr(self, f"starts_{split}")
        return starts[self._room(split) >= steps] if len(starts) else starts

    def _room(self, split: str) -> np.ndarray:
        """Values after each window in its own sequence (a sequence ends where its NaN padding starts)."""
        sequences, starts = getattr(self, f"sequences_{split}"), getattr(self, f"starts_{split}")
        lengths = np.isfinite(sequences[..., 0]).sum(axis=1) if sequences.size else np.zeros(len(sequences))
        return lengths[starts[:, 0]] - starts[:, 1] - self.meta["window"]

    def longest_continuation(self, split: str) -> int:
        if len(getattr(self, f"starts_{split}")) == 0:
            return 0
        return int(self._room(split).max())

    def rows(self, part: str, steps: int | None = None) -> np.ndarray | None:
        """The series of each row of `part` (a split, "rollout", or a split's continuations of `steps`), for
        per-series scaling; None when the data is scaled as a whole."""
        if self.meta.get("scaling") != "per_series":
            return None
        if steps is not None:
            return self._continued(part, steps)[:, 0]  # a CSV's sequences are its series, one each
        return getattr(self, f"series_{part}")

    def _statistics(self, rows: np.ndarray | None, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        if self.meta.get("scaling") != "per_series":
            return np.asarray(self.meta["scale_mean"]), np.asarray(self.meta["scale_std"])
        if rows is None:
            raise ValueError("per-series scaling needs the series of every row")  # a programming error
        shape = (len(rows),) + (1,) * (ndim - 2) + (-1,)
        return (np.asarray(self.meta["series_mean"])[rows].reshape(shape),
                np.asarray(self.meta["series_std"])[rows].reshape(shape))

    def scaled(self, array: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """To the units the models work in. `rows` (from `rows()`) matter only under per-series scaling. An
        array with fewer features than the inputs (a target such as the adding problem's sum, F_out < F) is on
        the scale of the leading F_out input features (there: the value channel, not the marker)."""
        mean, std = self._statistics(rows, np.ndim(array))
        features = np.shape(array)[-1]
        return ((array - mean[..., :features]) / std[..., :features]).astype(np.float32)

    def unscaled(self, array: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        mean, std = self._statistics(rows, np.ndim(array))
        features = np.shape(array)[-1]
        return (array * std[..., :features] + mean[..., :features]).astype(np.float32)

    def scaled_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """A split's (windows, targets) in model units."""
        rows = self.rows(split)
        return (self.scaled(getattr(self, f"x_{split}"), rows), self.scaled(getattr(self, f"y_{split}"), rows))

    def scaled_continuations(self, split: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.rows(split, steps)
        return tuple(self.scaled(a, rows) for a in self.continuations(split, steps))


def make_dataset(name: str, kind: str, features: list[str], splits: dict[str, tuple[np.ndarray, np.ndarray]],
                 rollout: tuple[np.ndarray, np.ndarray] | None, time_step: float = 1.0,
                 time_label: str = "step",
                 sequences: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                 lengths: dict[str, np.ndarray] | None = None,
                 series: dict[str, np.ndarray] | None = None, rollout_origin: np.ndarray | None = None,
                 extra_meta: dict[str, Any] | None = None) -> Dataset:
    """Assemble a Dataset, computing the scaling statistics from the training inputs only. `sequences` maps
    "train" and "val" to (sequences, starts) as the module's docstring describes; None for data that cannot
    be continued (every window's continuation is then unknown). `lengths` maps each split to its windows' real
    lengths, for windows right-padded to the longest; None for fixed-length data. The statistics then come
    from the real values only: padding is no data. `series` maps each split and "rollout" to the series of its
    rows, for data made of several series (see the module's docstring)."""
    x_train = splits["train"][0]
    n_features = x_train.shape[-1]
    real = x_train.reshape(-1, n_features) if lengths is None else x_train[real_steps(lengths["train"],
                                                                                      x_train.shape[1])]
    mean = real.mean(axis=0)
    std = real.std(axis=0)
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
    for split in FIT_SPLITS:
        seqs, starts = (sequences or {}).get(split, (np.zeros((0, 0, n_features)), np.zeros((0, 2))))
        arrays[f"sequences_{split}"] = np.asarray(seqs, dtype=np.float32)
        arrays[f"starts_{split}"] = np.asarray(starts, dtype=np.int64).reshape(-1, 2)
    for split in SPLITS:
        if lengths is not None:
            arrays[f"lengths_{split}"] = np.asarray(lengths[split], dtype=np.int64).reshape(-1)
    meta.update(extra_meta or {})
    for part, rows in (series or {}).items():
        arrays[f"series_{part}"] = np.asarray(rows, dtype=np.int64)
    if rollout_origin is not None:
        arrays["rollout_origin"] = np.asarray(rollout_origin, dtype=np.int64)
    return Dataset(**arrays, rollout_context=np.asarray(rollout[0], dtype=np.float32),
                   rollout_target=np.asarray(rollout[1], dtype=np.float32), meta=meta)


def real_steps(lengths: np.ndarray, steps: int) -> np.ndarray:
    """(N, steps) mask of the real (not padding) steps of right-padded windows with these lengths."""
    return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


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
    keep, out = random_split_index(len(x), fraction, rng)
    return (x[keep], y[keep]), (x[out], y[out])


def random_split_index(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The indices `random_split` keeps and holds out, each sorted."""
    order = rng.permutation(n)
    n_out = max(1, round(fraction * n))
    return np.sort(order[n_out:]), np.sort(order[:n_out])


def first_windows(count: int) -> np.ndarray:
    """Starts (sequence i, offset 0) of `count` sequences whose first window is their only example."""
    return np.stack([np.arange(count), np.zeros(count, dtype=np.int64)], axis=1)


def save(dataset: Dataset, path: Path) -> None:
    arrays = {name: getattr(dataset, name) for name in ARRAYS}
    arrays.update({name: getattr(dataset, name) for name in OPTIONAL_ARRAYS if len(getattr(dataset, name))})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file handle stops numpy from appending ".npz" to the temp name
            np.savez_compressed(handle, meta=np.array(json.dumps(dataset.meta, sort_keys=True)), **arrays)


def load(path: Path) -> Dataset:
    """Read a dataset file; a missing or corrupt file is one clear error, and pickle is never allowed."""
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; run `dvc repro` to generate it")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in ARRAYS + OPTIONAL_ARRAYS if name in ARRAYS or name in data}
            meta = json.loads(str(data["meta"]))
    except Exception as exc:  # zip, zlib, JSON and numpy each raise their own types for a damaged file
        raise ArtifactError(f"{path} is corrupt ({type(exc).__name__}); delete it and run `dvc repro`") from None
    return Dataset(**arrays, meta=meta)
