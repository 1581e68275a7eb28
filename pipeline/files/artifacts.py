"""Every path convention of the pipeline, and atomic writes.

dvc.yaml names the same paths; keeping them in one place stops code and pipeline from drifting apart.
Every file is written to a temporary name in the same folder and then renamed, so an interrupted stage never
leaves a half-written file that DVC could take for a result.
"""

import contextlib
import csv
import glob
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ArtifactError


_UMASK = os.umask(0)
os.umask(_UMASK)


@dataclass(frozen=True)
class Paths:
    """Where each stage reads and writes, relative to the project root."""

    root: Path = Path(".")

    def dataset(self, ds: str) -> Path:
        return self.root / "data" / "datasets" / f"{ds}.npz"

    def dataset_preview(self, ds: str) -> Path:
        return self.root / "plots" / "images" / "datasets" / f"{ds}.png"

    def checkpoint(self, ds: str, model: str) -> Path:
        return self.root / "data" / "models" / ds / f"{model}.npz"

    def train_metrics(self, ds: str, model: str) -> Path:
        return self.root / "metrics" / "train" / ds / f"{model}.json"

    def train_curve(self, ds: str, model: str) -> Path:
        return self.root / "plots" / "train" / ds / f"{model}.csv"

    def eval_metrics(self, ds: str, model: str) -> Path:
        return self.root / "metrics" / "eval" / ds / f"{model}.json"

    def rollout_curve(self, ds: str, model: str) -> Path:
        return self.root / "plots" / "rollout" / ds / f"{model}.csv"

    def horizon_curve(self, ds: str, model: str) -> Path:
        return self.root / "plots" / "horizon" / ds / f"{model}.csv"

    def predictions(self, ds: str, model: str) -> Path:
        return self.root / "data" / "predictions" / ds / f"{model}.npz"

    def pair_figure(self, ds: str, model: str) -> Path:
        return self.root / "plots" / "images" / ds / f"{model}.png"

    def backtest_figure(self, ds: str, model: str) -> Path:
        return self.root / "plots" / "images" / ds / f"{model}-backtest.png"

    def summary(self) -> Path:
        return self.root / "metrics" / "summary.json"

    def leaderboard_csv(self) -> Path:
        return self.root / "plots" / "leaderboard.csv"

    def leaderboard_md(self) -> Path:
        return self.root / "plots" / "leaderboard.md"

    def compare_curve(self, what: str, ds: str) -> Path:
        """what: loss, horizon or rollout: one long-format CSV per dataset, every model in it."""
        return self.root / "plots" / "compare" / what / f"{ds}.csv"

    def compare_figure(self, ds: str) -> Path:
        return self.root / "plots" / "images" / "compare" / f"{ds}.png"


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A stage killed with SIGKILL never reaches the clean-up below, so temporary files left by an earlier run
    of the same output are removed first: otherwise they would sit in git status and in directory hashes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f"{glob.escape(_temporary_prefix(path))}*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results should be readable like any other file
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows([[_cell(v) for v in row] for row in rows])


def _cell(value: Any) -> Any:
    # Fixed significant digits keep CSVs small and byte-identical across runs with identical numbers.
    return f"{value:.7g}" if isinstance(value, (float, np.floating)) else value


def read_json(path: Path) -> Any:
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; run `dvc repro` to produce it")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise ArtifactError(f"{path} is corrupt (not JSON); delete it and run `dvc repro`") from None


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Named arrays as one .npz, in the order given: the same arrays in the same order give the same bytes."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file handle stops numpy from appending ".npz" to the temp name
            np.savez(handle, **arrays)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a `write_arrays` file, loaded without pickle."""
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; run `dvc repro` to produce it")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as exc:  # zip, zlib and numpy each raise their own types for a damaged file
        raise ArtifactError(f"{path} is corrupt ({type(exc).__name__}); delete it and run `dvc repro`") from None


def significant(value: Any, digits: int = 6) -> Any:
    """`value` rounded to `digits` significant digits by Python's correctly rounded formatting, which gives the
    same answer on every machine (unlike a log10 and a multiply, whose last bits depend on the CPU's kernels).
    A number gives a float; an array gives an array of the same shape, element by element, in its own float
    dtype (float32 stays float32; other dtypes become float64), about 1 s per million values. NaN and
    infinities pass through."""
    if isinstance(value, np.ndarray):
        dtype = value.dtype if value.dtype in (np.float32, np.float64) else np.dtype(np.float64)
        fmt = f"{{:.{digits}g}}".format
        rounded = np.array(list(map(float, map(fmt, value.ravel().tolist()))), dtype=np.float64)
        return rounded.astype(dtype).reshape(value.shape)
    return float(f"{value:.{digits}g}")


def guaranteed(value: Any, resolution: float, digits: int = 6) -> Any:
    """`value` with only the digits its computation guarantees: 0.0 where |value| < `resolution` (round-off,
    not a result: the exact linear baseline's 1e-15 loss on a pure sine), otherwise `significant(value,
    digits)`. Numbers and arrays as `significant`; NaN and infinities pass through."""
    if isinstance(value, np.ndarray):
        rounded = significant(value, digits)
        rounded[np.abs(value) < resolution] = 0.0
        return rounded
    return 0.0 if abs(value) < resolution else significant(value, digits)


def number_text(value: float | int | None, digits: int | None = 3) -> str:
    """A number to `digits` significant digits (RMSEs, skills), or with digits=None as it is (a count of steps:
    `251`, or `250.5` for the median of an even number of replicas); a missing (non-finite) result is `n/a`."""
    if value is None:
        return "n/a"  # a non-finite result (a rollout that blew up) is stored as null
    return f"{value:g}" if digits is None else f"{value:.{digits}g}"


def spread_text(value, low, high, replicas: int, digits: int | None = 3) -> str:
    """`0.122 [0.026-0.248]`: the median, then min-max over the replicas; with one replica just the number.
    Bounds written with an exponent (`2e-08`) are joined by " to " instead, which cannot be misread as a minus."""
    text = number_text(value, digits)
    if replicas <= 1:
        return text
    lo, hi = number_text(low, digits), number_text(high, digits)
    sep = " to " if "e" in lo + hi else "-"
    return f"{text} [{lo}{sep}{hi}]"
