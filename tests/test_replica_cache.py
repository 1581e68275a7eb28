"""Extending a pair from R to R' replicas trains only the new networks (pipeline/files/replica_cache.py): the
reused replicas are the ones trained before, byte for byte, and the extended checkpoint is the one a run of R'
replicas from scratch writes. Whatever changes a network's result is another key, so it is trained again."""

import pytest

from conftest import tiny_params, use_datasets, write_params
from pipeline import params
from pipeline.files import checkpoints, replica_cache
from pipeline.files.artifacts import Paths
from pipeline.learning import fitting, processes
from pipeline.stages import generate
from pipeline.stages import train as training


@pytest.fixture
def cached(project, monkeypatch):
    """The tiny project with the cache on in a folder of its own, networks in turn in this process (so that a
    spy on fitting.fit sees every network trained), 3 replicas per network."""
    monkeypatch.setenv(replica_cache.ENV, str(project / "replica-cache"))
    monkeypatch.setattr(processes, "side_by_side", lambda threads, on_cpu: 1)
    trained: list[list[int]] = []
    real_fit = fitting.fit

    def spy(stack, *args, **kwargs):
        trained.append(list(stack.seeds))
        return real_fit(stack, *args, **kwargs)

    monkeypatch.setattr(fitting, "fit", spy)
    raw = use_datasets(tiny_params(), ["sine"])
    raw["train"].update(replicas_per_network=3)
    return project, raw, trained


def _train(project, raw, replicas: int, kind: str = "gru", **train) -> tuple[checkpoints.Checkpoint, bytes]:
    raw["train"].update(replicas=replicas, **train)
    write_params(project, raw)
    loaded = params.load("params.yaml")
    generate.run(loaded, "sine")
    paths = Paths()
    training.run(loaded, "sine", kind, paths)
    path = paths.checkpoint("sine", kind)
    return checkpoints.load(path), path.read_bytes()


def _seeds(replicas: int) -> list[int]:
    return [training.replica_seed(0, r) for r in range(replicas)]


@pytest.mark.parametrize("kind", ["gru", "elman"])
def test_extending_3_to_6_replicas_trains_only_the_3_new_seeds(cached, kind, monkeypatch, capsys):
    project, raw, trained = cached
    three, _ = _train(project, raw, 3, kind)
    assert trained == [_seeds(3)]
    trained.clear()
    six, six_bytes = _train(project, raw, 6, kind)
    assert trained == [_seeds(6)[3:]]  # one network, replicas 3-5
    assert "3 of 6 replicas reused" in capsys.readouterr().out
    assert len(six.replicas) == 6
    for r in range(3):
        assert six.replicas[r].keys() == three.replicas[r].keys()
        assert all(six.replicas[r][name].tobytes() == three.replicas[r][name].tobytes() for name in three.replicas[r])
    # the extended checkpoint is the one six replicas trained from scratch write
    monkeypatch.setenv(replica_cache.ENV, "off")
    trained.clear()
    _, scratch_bytes = _train(project, raw, 6, kind)
    assert trained == [_seeds(6)[:3], _seeds(6)[3:]]
    assert scratch_bytes == six_bytes


def test_a_partial_network_is_trained_again_when_it_grows(cached):
    project, raw, trained = cached
    _train(project, raw, 5)  # networks 0-2 and 3-4
    trained.clear()
    _train(project, raw, 6)  # 0-2 reused; 3-5 is a new network (3-4 trained beside 5 is other arithmetic)
    assert trained == [_seeds(6)[3:]]


@pytest.mark.parametrize("change", [{"lr": 0.02}, {"epochs": 3}, {"batch_size": 8}])
def test_a_training_setting_that_changed_trains_everything_again(cached, change):
    project, raw, trained = cached
    _train(project, raw, 3)
    trained.clear()
    _train(project, raw, 3, **change)
    assert trained == [_seeds(3)]


def test_other_seeds_model_sizes_or_data_train_again(cached):
    project, raw, trained = cached
    _train(project, raw, 3)
    for change in (lambda r: r.update(seed=1000), lambda r: r["model"].update(hidden=5),
                   lambda r: r["data"]["sine"].update(train_until=21.0)):
        trained.clear()
        change(raw)
        _train(project, raw, 3)
        assert len(trained) == 1, change


def test_an_unreadable_entry_counts_as_missing(cached):
    project, raw, trained = cached
    _train(project, raw, 3)
    entries = list((project / "replica-cache").glob("*.pkl"))
    assert len(entries) == 1
    entries[0].write_bytes(b"not a pickle")
    trained.clear()
    _train(project, raw, 3)
    assert trained == [_seeds(3)]


def test_off_writes_nothing_and_trains_everything(cached, monkeypatch):
    project, raw, trained = cached
    monkeypatch.setenv(replica_cache.ENV, "off")
    _train(project, raw, 3)
    _train(project, raw, 3)
    assert trained == [_seeds(3), _seeds(3)]
    assert not (project / "replica-cache").exists() and not (project / ".cache").exists()


def test_the_default_folder_is_under_the_project(project, monkeypatch):
    monkeypatch.delenv(replica_cache.ENV)
    assert replica_cache.folder() == replica_cache.DEFAULT
    assert not replica_cache.DEFAULT.is_absolute()
