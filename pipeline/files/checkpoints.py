"""Checkpoint files: a model's kind, its shape and the weights of each of its replicas as named numpy arrays in
one `.npz`.

The format needs no torch to read, so the baselines' stages never import it, and no pickle at all
(`allow_pickle=False`), so a checkpoint cannot run code. numpy writes every zip entry with the same fixed date,
so the bytes depend only on the weights: a retrained baseline that comes out identical lets DVC skip its evaluation.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

from pipeline.files.artifacts import write_arrays
from pipeline.errors import ArtifactError

META = "__checkpoint__"  # the array holding the JSON header; no weight name starts with underscores


@dataclasses.dataclass(frozen=True)
class Shape:
    """Everything needed to rebuild a model; saved in every checkpoint."""

    input_size: int
    output_size: int
    window: int
    hidden: int
    layers: int


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    kind: str
    shape: Shape
    replicas: list[dict[str, np.ndarray]]  # one weight dict per replica, under the single model's names
    path: Path  # where it was read from, for error messages about its contents


def _key(replica: int, name: str) -> str:
    return f"r{replica}.{name}"


def save(path: Path, kind: str, shape: Shape, replicas: list[dict[str, np.ndarray]]) -> None:
    """Every replica's weights in one file, stored as `r<k>.<name>`."""
    header = json.dumps({"kind": kind, "shape": dataclasses.asdict(shape), "replicas": len(replicas)},
                        sort_keys=True)
    arrays = {_key(r, name): a for r, weights in enumerate(replicas) for name, a in sorted(weights.items())}
    write_arrays(path, {META: np.array(header), **arrays})


def save_not_run(path: Path, reason: str) -> None:
    """The record a train stage writes for a variant that does not run on its dataset (`models.<name>.datasets`):
    DVC's stage matrix crosses every dataset with every model and needs each declared output, and a record that
    says why is better than an empty file. It holds no weights; loading it is an error that gives the reason."""
    write_arrays(path, {META: np.array(json.dumps({"not_run": reason}, sort_keys=True))})


def load(path: Path) -> Checkpoint:
    """Read a checkpoint; a missing or damaged file is one clear error naming it."""
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; run `dvc repro` to train it")
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(str(archive[META]))
        if "not_run" in header:
            raise NotTrained(header["not_run"])
        with np.load(path, allow_pickle=False) as archive:
            replicas: list[dict[str, np.ndarray]] = [{} for _ in range(int(header["replicas"]))]
            for key in archive.files:
                if key != META:
                    replica, name = key.split(".", 1)
                    replicas[int(replica.removeprefix("r"))][name] = archive[key]
        if not replicas:
            raise ValueError("no replicas")
        return Checkpoint(str(header["kind"]), Shape(**header["shape"]), replicas, path)
    except NotTrained as exc:
        raise ArtifactError(f"{path} holds no model: {exc}") from None
    except Exception as exc:  # zip, zlib, JSON and numpy each raise their own types for a damaged file
        raise corrupt(path, exc) from None


class NotTrained(Exception):
    """A not-run record where a checkpoint was expected (save_not_run)."""


def corrupt(path: Path, exc: BaseException) -> ArtifactError:
    """The one message for a checkpoint that cannot be used, whatever part of it turned out wrong."""
    return ArtifactError(f"{path} is corrupt or from another version ({type(exc).__name__}); "
                         "delete it and run `dvc repro`")
