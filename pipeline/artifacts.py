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
