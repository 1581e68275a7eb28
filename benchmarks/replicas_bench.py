"""What replicas cost (issue 13): a learned train stage with R replicas against the same stage with one, and a
full `dvc repro` of the default params with `train.replicas: 5` against the same run with 1.

Every replica is a full training run of its own; the question is how much of that the pipeline saves by training
them side by side in one process and one network (pipeline/learning/replicas.py). Stages run as `dvc repro` runs them, a
fresh `python -m pipeline train ...` each, so the figures include the imports and the data load a user waits
for; the two sides alternate repeat by repeat.
"""

import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from benchmarks import pipeline_bench as pb

LEARNED = ("elman", "concat", "rnn", "gru", "lstm")
STAGE_DATASETS = ("sine",)  # memory_short's stages take 20-60 s each; the full repro covers them


def _write_replicas(project: Path, base: Mapping, replicas: int, epochs: int | None) -> None:
    raw = yaml.safe_load(yaml.safe_dump(dict(base)))
    raw["train"]["replicas"] = replicas
    raw["device"] = "cpu"
    if epochs is not None:
        raw["train"]["epochs"] = epochs
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def train_stages(project: Path, base: Mapping, replicas: int, repeats: int, kinds: Iterable[str] = LEARNED,
                 datasets: Iterable[str] = STAGE_DATASETS, epochs: int | None = None) -> dict:
    """Seconds of `python -m pipeline train <dataset> <kind>` in `project` (its datasets generated) with
    `replicas` replicas and with one, alternating; per stage the medians and their ratio."""
    stages = {f"{ds}/{kind}": (ds, kind) for ds in datasets for kind in kinds}
    times: dict[str, dict[int, list[float]]] = {name: {1: [], replicas: []} for name in stages}
    for _ in range(repeats):
        for name, (ds, kind) in stages.items():
            for r in (1, replicas):
                _write_replicas(project, base, r, epochs)
                args = [sys.executable, "-m", "pipeline", "train", ds, kind]
                started = time.perf_counter()
                done = subprocess.run(args, cwd=project, env=pb.environment(), capture_output=True, text=True,
                                      timeout=1800)
                elapsed = time.perf_counter() - started
                if done.returncode:
                    raise pb._failure(args, project, done.returncode, done.stdout + done.stderr)
                times[name][r].append(elapsed)
    result = {}
    for name, by_r in times.items():
        one, many = statistics.median(by_r[1]), statistics.median(by_r[replicas])
        result[name] = {"one": one, "many": many, "ratio": many / one, "runs": {str(k): v for k, v in by_r.items()}}
    return {"replicas": replicas, "repeats": repeats, "stages": result,
            "median_ratio": statistics.median(s["ratio"] for s in result.values())}


def prepare(source_repo: Path, project: Path, base: Mapping, datasets: Iterable[str] = STAGE_DATASETS) -> Path:
    """A clone of source_repo's HEAD (so the stages run that commit's code) with the stage benchmark's datasets
    written by its generate stage."""
    project = pb.clone(source_repo, project)
    _write_replicas(project, base, 1, None)
    for ds in datasets:
        pb.run(project, sys.executable, "-m", "pipeline", "generate", ds)
    return project
