"""Shared fixtures: the real params.yaml shrunk to a tiny, CPU-only profile that runs in seconds."""

import copy
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# Every test trains what it asks for: a network reused from the replica cache (pipeline/files/replica_cache.py)
# would make two trainings agree by construction. The tests of the cache turn it on in a folder of their own.
os.environ["PIPELINE_REPLICA_CACHE"] = "off"

TINY_SIZES = {
    "sine": {"train_until": 20.0, "extrapolate_until": 30.0},
    # windows: all gives each sincos, ramp and trajectory sequence rollout_steps (10) windows
    "sincos": {"n_train": 4, "n_val": 2, "n_test": 10, "rollout_steps": 10},
    "ramp": {"n_train": 6, "n_val": 2, "n_test": 10},
    "trajectory": {"n_train": 6, "n_val": 2, "n_test": 10},
    "memory_short": {"length": 12, "n_train": 60, "n_val": 10, "n_test": 10},
    "memory_long": {"length": 12, "n_train": 60, "n_val": 10, "n_test": 10},
    "mackey_glass": {"transient": 100.0, "samples": 200, "rollout_steps": 20},
    "lorenz": {"transient": 5.0, "samples": 300, "rollout_steps": 20},
    "adding": {"length": 12, "n_train": 60, "n_val": 10, "n_test": 10},
}


def source_env() -> dict[str, str]:
    """The environment for a Python subprocess run from a temporary project: it must import this checkout's
    `pipeline`, not whatever copy the venv's editable install points at (another clone, when tests run there)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def default_sigint() -> None:
    """For a child that must react to SIGINT as a terminal's Ctrl-C: a shell runs a background job (`make test &`)
    with SIGINT ignored, and an ignored signal stays ignored across exec, so restore the default in the child."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def real_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def tiny_params() -> dict:
    """The default params with every dataset small, 2 epochs (no per-dataset training settings; the free-running
    phase `train.rollout_epochs` 2), a small model, the free-running variants on ramp only, and device cpu."""
    raw = copy.deepcopy(real_params())
    raw["device"] = "cpu"
    for name, sizes in TINY_SIZES.items():
        raw["data"][name].update(sizes)
    raw["model"] = {"hidden": 4, "layers": 1}
    raw["train"].update(epochs=2, batch_size=16, patience=2, replicas=3, rollout_epochs=2)
    for entry in raw["data"].values():  # training settings come from `train:` alone, so tests that change it
        entry.pop("train", None)         # change every pair (a dataset's own would take precedence)
    raw["models"]["rnn_fr"]["datasets"] = ["ramp"]  # the free-running variant trains on one dataset, not 2
    return raw


def use_datasets(raw: dict, names: list[str]) -> dict:
    """Run only `names`: narrowing `datasets:` is all it takes (a variant with `datasets:` runs on those of its
    own that are listed)."""
    raw["datasets"] = list(names)
    return raw


def write_params(directory: Path, raw: dict) -> Path:
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """An empty project folder holding the tiny params.yaml, made the working directory (stages use
    paths relative to the project root, as under `dvc repro`)."""
    write_params(tmp_path, tiny_params())
    (tmp_path / "data" / "raw").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# The longest test files first, from `pytest --durations` on the 2-core machine (2026-12-01: test_pipeline.py
# about 385 s, test_recovery.py 180 s, test_replicas_workflow.py 160 s, ...). Only the order of scheduling depends
# on it: a file missing here runs after these, and a wrong order costs minutes of wall time, never a result.
LONGEST_FILES = ("test_pipeline.py", "test_recovery.py", "test_replicas_workflow.py", "test_cluster_repro.py",
                 "test_sweep.py", "test_bench_pipeline.py", "test_robustness.py", "test_workflow.py",
                 "test_user_data_pipeline.py")


def pytest_collection_modifyitems(config, items):
    """The longest files first. `make test` runs one pytest worker per core and keeps each file on one worker
    (its tests share module fixtures), handing files out in collection order (--no-loadscope-reorder); a long
    file handed out last would run alone while the other workers idle. The sort is stable, so each file's tests
    stay together and in their order."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
