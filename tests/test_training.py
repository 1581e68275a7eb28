"""Training, the closed-form baselines, checkpoints and device selection, on the tiny profile."""

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import source_env, tiny_params, write_params
from pipeline import params
from pipeline.models import baselines
from pipeline.stages import generate
from pipeline.models import inference
from pipeline.stages import train as training
from pipeline.files import checkpoints, datasets
from pipeline.learning import fitting, models, processes, runtime
from pipeline.files.artifacts import Paths
from pipeline.models.baselines import LinearAR
from pipeline.errors import ArtifactError, DeviceError, ParamsError
from pipeline.learning.replicas import ReplicaStack
from pipeline.analysis import scoring

CPU = torch.device("cpu")
METRIC_KEYS = {"replicas", "deterministic", "best_val_loss", "best_epoch", "final_train_loss", "final_val_loss",
               "epochs_run", "diverged", "diverged_replicas", "parameters", "device", "per_replica"}
REPLICA_KEYS = {"best_val_loss", "best_epoch", "epochs_run", "final_train_loss", "final_val_loss", "diverged"}


# --- helpers --------------------------------------------------------------------------------------------------

def sine_windows(dt: float, window: int, n: int = 800) -> tuple[np.ndarray, np.ndarray]:
    series = np.sin(dt * np.arange(n + window))[:, None]
    return datasets.sliding_windows(series, window)


def load_params(**train) -> params.Params:
    loaded = params.load("params.yaml")
    return dataclasses.replace(loaded, train=dataclasses.replace(loaded.train, **train)) if train else loaded


@pytest.fixture
def sine(project) -> params.Params:
    """The tiny params with the sine dataset generated into the project."""
    loaded = params.load("params.yaml")
    generate.run(loaded, "sine")
    return loaded


def split(data: datasets.Dataset, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    return fitting.tensors(data, name, CPU)


def tiny_shape(data: datasets.Dataset) -> models.Shape:
    return models.Shape(input_size=data.meta["n_features"], output_size=data.y_train.shape[-1],
                        window=data.meta["window"], hidden=4, layers=1)


def tiny_stack(kind: str, data: datasets.Dataset, seeds=(0,)) -> ReplicaStack:
    return ReplicaStack(kind, tiny_shape(data), list(seeds))


def model_loss(model: models.SequenceModel, x: torch.Tensor, y: torch.Tensor) -> float:
    """One plain model's MSE, computed without the replica machinery."""
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model.predict_next(x), y))


def read_curve(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def weights(path: Path, replica: int = 0) -> dict[str, np.ndarray]:
    return checkpoints.load(path).replicas[replica]


def restored(path: Path, replica: int = 0) -> models.SequenceModel:
    return models.restore(checkpoints.load(path), CPU, replica)


# --- the linear baseline ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dt", [0.1, 0.05, 0.3])
def test_linear_recovers_the_sine_recurrence(dt):
    """sin(t + dt) = 2 cos(dt) sin(t) - sin(t - dt): with window 2 the least-squares fit is exactly that."""
    x, y = sine_windows(dt, 2)
    model = LinearAR(models.Shape(1, 1, 2, 4, 1))
    model.fit(x, y)
    np.testing.assert_allclose(model.weight.ravel(), [-1.0, 2 * math.cos(dt)], rtol=0, atol=1e-6)
    assert abs(float(model.bias[0])) < 1e-6
    # float32 inputs, as every dataset stores them, give the same coefficients
    model.fit(x.astype(np.float32), y.astype(np.float32))
    np.testing.assert_allclose(model.weight.ravel(), [-1.0, 2 * math.cos(dt)], rtol=0, atol=1e-6)


def test_linear_coefficients_are_scale_invariant_on_the_generated_sine(project):
    raw = tiny_params()
    raw["data"]["sine"]["window"] = 2
    write_params(project, raw)
    data = generate.build(params.load("params.yaml"), "sine")
    dt = raw["data"]["sine"]["dt"]
    assert data.meta["scale_std"] != [1.0]  # the scaled fit below really is on other numbers
    for x, y in ((data.x_train, data.y_train), (data.scaled(data.x_train), data.scaled(data.y_train))):
        model = LinearAR(models.Shape(1, 1, 2, 4, 1))
        model.fit(x, y)
        np.testing.assert_allclose(model.weight.ravel(), [-1.0, 2 * math.cos(dt)], rtol=0, atol=1e-6)


def test_linear_with_the_default_window_predicts_the_sine_exactly():
    real = params.load(Path(__file__).resolve().parents[1] / "params.yaml")
    assert real.dataset("sine").window == 15
    data = generate.build(real, "sine")
    for transform in (lambda a: a, data.scaled):
        model = LinearAR(models.Shape(1, 1, 15, 4, 1))
        model.fit(transform(data.x_train), transform(data.y_train))
        for x, y in ((data.x_val, data.y_val), (data.x_test, data.y_test)):  # test: extrapolation beyond train
            prediction = model.predict_next(transform(x))
            np.testing.assert_allclose(prediction, transform(y), rtol=0, atol=1e-5)


def test_closed_form_baselines_go_through_the_train_stage(sine):
    metrics = training.run(sine, "sine", "linear")
    assert metrics["epochs_run"] == 0 and metrics["best_epoch"] == 0 and not metrics["diverged"]
    assert metrics["best_val_loss"] < 1e-9  # a pure sine is predicted exactly
    assert metrics["replicas"] == 1 and metrics["deterministic"] is True  # one fit, whatever train.replicas says
    assert set(metrics["per_replica"]) == {"0"} and "seed" not in metrics["per_replica"]["0"]
    checkpoint = checkpoints.load(Paths().checkpoint("sine", "linear"))
    assert checkpoint.kind == "linear" and np.abs(checkpoint.replicas[0]["weight"]).sum() > 0
    assert (checkpoint.shape.hidden, checkpoint.shape.layers) == (0, 0)  # model sizes leave it unchanged


# --- the reported losses ------------------------------------------------------------------------------------

@pytest.mark.parametrize("outputs", [1, 2])
def test_train_loss_is_the_same_mean_squared_error_as_val_loss(outputs):
    """With an lr too small to move any float32 weight, the epoch's train loss is the MSE of the initial model
    on the training split, on the same scale as mean_loss (what val loss and evaluation use)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 6, 2, generator=g), torch.randn(50, outputs, generator=g)
    stack = ReplicaStack("gru", models.Shape(2, outputs, 6, 4, 1), [0])
    initial = [w.detach().clone() for w in stack.weights]
    expected, = fitting.mean_loss(stack, x, y)
    cfg = params.TrainParams(epochs=1, batch_size=16, lr=1e-30, clip_norm=1.0, patience=5)
    history, = fitting.fit(stack, (x, y), (x, y), cfg)
    assert all(torch.equal(w, w0) for w, w0 in zip(stack.weights, initial))  # the premise holds
    (epoch, train_loss, val_loss), = history.rows
    assert val_loss == pytest.approx(expected, rel=1e-6)
    assert train_loss == pytest.approx(expected, rel=1e-5)


# --- determinism ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["elman", "lstm"])
def test_training_is_deterministic_per_seed(sine, kind):
    paths = Paths()
    ckpt, curve = paths.checkpoint("sine", kind), paths.train_curve("sine", kind)

    metrics_file = paths.train_metrics("sine", kind)
    first = training.run(sine, "sine", kind)
    first_bytes, first_weights, first_curve = ckpt.read_bytes(), weights(ckpt), curve.read_text()
    first_metrics = metrics_file.read_bytes()

    other = training.run(dataclasses.replace(sine, seed=1), "sine", kind)
    other_weights = weights(ckpt)

    again = training.run(sine, "sine", kind)  # after another seed ran in this process: no leaked state
    assert again == first
    assert metrics_file.read_bytes() == first_metrics  # byte-identical: nothing time-dependent is recorded
    assert weights(ckpt).keys() == first_weights.keys()
    for name, value in weights(ckpt).items():
        assert np.array_equal(value, first_weights[name]), name
    assert ckpt.read_bytes() == first_bytes
    assert curve.read_text() == first_curve

    assert any(not np.array_equal(other_weights[name], value) for name, value in first_weights.items())
    assert other != first


def test_fit_is_deterministic(sine):
    data = datasets.load(Paths().dataset("sine"))
    results = []
    for seeds in ((3, 5), (3, 5), (4, 5)):
        stack = tiny_stack("gru", data, seeds)
        histories = fitting.fit(stack, split(data, "train"), split(data, "val"), sine.train)
        results.append(([h.rows for h in histories], [w.detach().clone() for w in stack.weights]))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))
    assert results[0][0][0] != results[2][0][0]  # another seed: another initialisation and batch order


# --- divergence -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["elman", "rnn"])
def test_divergence_is_a_result_not_a_crash(sine, kind):
    cfg = load_params(lr=1e30, epochs=5, patience=5)
    metrics = training.run(cfg, "sine", kind)
    paths = Paths()

    assert metrics["diverged"] is True
    assert metrics["diverged_replicas"] == metrics["replicas"] == sine.train.replicas
    assert 1 <= metrics["epochs_run"] <= 5
    saved = json.loads(paths.train_metrics("sine", kind).read_text())  # strict JSON: NaN became null
    assert saved["diverged"] is True
    assert set(saved) == METRIC_KEYS
    assert saved["best_val_loss"] is not None and math.isfinite(saved["best_val_loss"])

    header, rows = read_curve(paths.train_curve("sine", kind))
    assert header == ["epoch", "replica", "train_loss", "val_loss"]
    data = datasets.load(paths.dataset("sine"))
    for r, replica in saved["per_replica"].items():
        assert replica["diverged"] is True
        mine = [row for row in rows if row[1] == r]
        assert len(mine) == replica["epochs_run"] - 1  # the non-finite epoch is not a row
        assert all(math.isfinite(float(v)) for row in mine for v in row)
        checkpoint = paths.checkpoint("sine", kind)
        assert all(np.isfinite(v).all() for v in weights(checkpoint, int(r)).values())  # the best so far
        loss = model_loss(restored(checkpoint, int(r)), *split(data, "val"))
        assert loss == pytest.approx(replica["best_val_loss"], rel=1e-4, abs=1e-6)


def test_a_huge_learning_rate_is_flagged_although_the_loss_stays_finite(sine):
    """Adam steps by about lr whatever the gradient: at lr 1000 the loss explodes (1e5 and more) but never
    becomes NaN, so a NaN-only check would report a healthy model."""
    metrics = training.run(load_params(lr=1000, epochs=5, patience=5), "sine", "lstm")
    assert metrics["diverged"] is True
    assert metrics["best_epoch"] == 0  # the untrained weights were the best, and they are what was kept
    saved = json.loads(Paths().train_metrics("sine", "lstm").read_text())
    assert saved["diverged"] is True and math.isfinite(saved["best_val_loss"])


def test_the_default_learning_rate_does_not_diverge(sine):
    assert training.run(load_params(epochs=5, patience=5), "sine", "lstm")["diverged"] is False


@pytest.mark.parametrize("loss, reference, expected", [
    (float("nan"), 1.0, True), (float("inf"), 1.0, True), (100.0, 1.0, False), (100.5, 1.0, True),
    (50.0, 0.01, False), (250.0, 2.0, True), (150.0, 2.0, False),
])
def test_exploded_is_relative_to_the_untrained_loss_but_at_least_one(loss, reference, expected):
    assert fitting.exploded(loss, reference) is expected


def test_fit_reports_divergence_and_keeps_the_best_weights(sine):
    data = datasets.load(Paths().dataset("sine"))
    stack = tiny_stack("elman", data, (0, 1))
    initial = [w.detach().clone() for w in stack.weights]
    cfg = dataclasses.replace(sine.train, lr=1e30, epochs=3, patience=3)
    histories = fitting.fit(stack, split(data, "train"), split(data, "val"), cfg)
    for history in histories:
        assert history.diverged
        assert history.best_epoch == 0 and history.rows == []
    for value, before in zip(stack.weights, initial):  # nothing finite came after epoch 0: the initial weights
        assert torch.equal(value, before)


# --- clipping -------------------------------------------------------------------------------------------------

def _record_clipping(monkeypatch) -> list[float]:
    calls = []
    original = fitting.clip_per_replica

    def recording(stack, max_norm, members=None):
        calls.append(max_norm)
        return original(stack, max_norm, members)

    monkeypatch.setattr(fitting, "clip_per_replica", recording)
    return calls


def test_gradients_are_clipped_per_replica():
    """Each replica's gradient is clipped to its own norm, as clip_grad_norm_ would clip a lone model: a replica
    with a huge gradient must not shrink another's small one."""
    stack = ReplicaStack("gru", models.Shape(1, 1, 5, 4, 1), [0, 1])
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 8, 5, 1, generator=g), torch.randn(2, 8, 1, generator=g)
    y[0] *= 1000  # replica 0's gradient is large, replica 1's small
    loss = ((stack.predict_next(x) - y) ** 2).mean(dim=(1, 2)).sum()
    loss.backward()
    norms = lambda: [float(torch.linalg.vector_norm(torch.stack(  # noqa: E731
        [torch.linalg.vector_norm(w.grad[r]) for w in stack.weights]))) for r in range(2)]
    before = norms()
    assert before[0] > 1.0 > before[1] > 0
    fitting.clip_per_replica(stack, 1.0)
    after = norms()
    assert after[0] == pytest.approx(1.0, rel=1e-5)
    assert after[1] == before[1]  # untouched


def test_gradients_are_clipped_when_clip_norm_is_set(sine, monkeypatch):
    calls = _record_clipping(monkeypatch)
    data = datasets.load(Paths().dataset("sine"))
    cfg = dataclasses.replace(sine.train, clip_norm=0.01, epochs=2, patience=5)
    history, = fitting.fit(tiny_stack("rnn", data), split(data, "train"), split(data, "val"), cfg)
    batches = math.ceil(len(data.x_train) / cfg.batch_size)
    assert len(calls) == batches * len(history.rows) == batches * 2  # every optimizer step
    assert all(max_norm == 0.01 for max_norm in calls)


def test_clip_norm_zero_turns_clipping_off(sine, monkeypatch):
    calls = _record_clipping(monkeypatch)
    data = datasets.load(Paths().dataset("sine"))
    cfg = dataclasses.replace(sine.train, clip_norm=0.0, epochs=2)
    history, = fitting.fit(tiny_stack("rnn", data), split(data, "train"), split(data, "val"), cfg)
    assert len(history.rows) == 2
    assert calls == []


# --- early stopping -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lr,patience", [(0.5, 1), (0.05, 2)])
def test_early_stopping_restores_the_best_weights(sine, lr, patience):
    data = datasets.load(Paths().dataset("sine"))
    train, val = split(data, "train"), split(data, "val")
    stack = tiny_stack("elman", data)
    epochs = 200
    cfg = dataclasses.replace(sine.train, lr=lr, patience=patience, epochs=epochs)
    history, = fitting.fit(stack, train, val, cfg)

    epochs_run = history.rows[-1][0]
    assert [row[0] for row in history.rows] == list(range(1, epochs_run + 1))
    assert epochs_run < epochs  # it stopped early ...
    assert epochs_run - history.best_epoch == patience  # ... exactly `patience` epochs after the best one
    assert 0 < history.best_epoch < epochs_run
    val_losses = [row[2] for row in history.rows]
    assert history.best_val_loss == min(val_losses) == val_losses[history.best_epoch - 1]
    assert val_losses[-1] > history.best_val_loss  # so restoring matters
    assert fitting.mean_loss(stack, *val)[0] == pytest.approx(history.best_val_loss, abs=1e-6)


def test_no_early_stop_while_validation_improves(sine):
    data = datasets.load(Paths().dataset("sine"))
    cfg = dataclasses.replace(sine.train, lr=0.01, patience=100, epochs=4)
    stack = tiny_stack("gru", data)
    history, = fitting.fit(stack, split(data, "train"), split(data, "val"), cfg)
    assert [row[0] for row in history.rows] == [1, 2, 3, 4]
    assert fitting.mean_loss(stack, *split(data, "val"))[0] == pytest.approx(history.best_val_loss, abs=1e-6)


# --- devices --------------------------------------------------------------------------------------------------

def test_resolve_device_cpu_and_auto():
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    auto = runtime.resolve_device("auto")
    assert isinstance(auto, torch.device)
    assert auto.type in {"cuda", "mps", "cpu"}
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert auto == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_resolve_device_cuda_without_cuda(name):
    with pytest.raises(DeviceError) as info:
        runtime.resolve_device(name)
    assert info.value.message == (f"params.yaml: device is '{name}' but CUDA is not available on this machine; "
                                  "set device: auto or device: cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_train_stage_refuses_an_absent_cuda(project):
    raw = tiny_params()
    raw["device"] = "cuda"
    write_params(project, raw)
    loaded = params.load("params.yaml")
    generate.run(loaded, "sine")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        training.run(loaded, "sine", "elman")
    assert not Paths().checkpoint("sine", "elman").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_exact_cuda_message():
    with pytest.raises(DeviceError) as info:
        runtime.resolve_device("cuda")
    assert str(info.value) == ("params.yaml: device is 'cuda' but CUDA is not available on this machine; "
                               "set device: auto or device: cpu")


# --- checkpoints ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", models.MODELS.names())
def test_checkpoint_round_trip(tmp_path, kind):
    shape = models.Shape(input_size=2, output_size=2, window=6, hidden=4, layers=2)
    torch.manual_seed(0)
    model = models.build(kind, shape)
    path = tmp_path / "sub" / f"{kind}.npz"
    checkpoints.save(path, kind, shape, [models.state_arrays(model)])

    checkpoint = checkpoints.load(path)
    assert (checkpoint.kind, checkpoint.shape) == (kind, shape)
    assert len(checkpoint.replicas) == 1 and checkpoint.replicas[0].keys() == model.state_dict().keys()

    loaded = models.restore(checkpoint, CPU)
    assert type(loaded) is type(model)
    x = torch.randn(5, 6, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(loaded.predict_next(x), model.predict_next(x))

    again = tmp_path / "again.npz"
    checkpoints.save(again, kind, shape, [models.state_arrays(model)])
    assert again.read_bytes() == path.read_bytes()
    checkpoints.save(path, kind, shape, [models.state_arrays(loaded)])  # a reloaded model saves to the same bytes
    assert again.read_bytes() == path.read_bytes()


def test_checkpoint_bytes_depend_on_the_weights(tmp_path):
    shape = models.Shape(1, 1, 5, 4, 1)
    torch.manual_seed(0)
    a = models.build("gru", shape)
    torch.manual_seed(1)
    b = models.build("gru", shape)
    checkpoints.save(tmp_path / "a.npz", "gru", shape, [models.state_arrays(a)])
    checkpoints.save(tmp_path / "b.npz", "gru", shape, [models.state_arrays(b)])
    assert (tmp_path / "a.npz").read_bytes() != (tmp_path / "b.npz").read_bytes()


def test_damaged_checkpoints_are_artifact_errors(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not a checkpoint\x00\x01\x02")
    with pytest.raises(ArtifactError) as info:
        checkpoints.load(path)
    assert str(path) in info.value.message

    shape = models.Shape(1, 1, 5, 4, 1)
    good = tmp_path / "good.npz"
    checkpoints.save(good, "lstm", shape, [models.state_arrays(models.build("lstm", shape))])
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ArtifactError) as info:
        checkpoints.load(truncated)
    assert str(truncated) in info.value.message

    mismatched = tmp_path / "mismatched.npz"  # readable, but its weights do not fit the model it names
    checkpoints.save(mismatched, "gru", shape, [models.state_arrays(models.build("lstm", shape))])
    with pytest.raises(ArtifactError) as info:
        restored(mismatched)
    assert str(mismatched) in info.value.message

    incomplete = tmp_path / "incomplete.npz"  # a weight missing must not leave a randomly initialised one
    arrays = {k: v for k, v in models.state_arrays(models.build("elman", shape)).items() if k != "h0"}
    checkpoints.save(incomplete, "elman", shape, [arrays])
    with pytest.raises(ArtifactError) as info:
        restored(incomplete)
    assert str(incomplete) in info.value.message


def test_missing_checkpoint_is_an_artifact_error(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(ArtifactError) as info:
        checkpoints.load(path)
    assert str(path) in info.value.message


# --- the train stage's outputs --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", params.MODEL_KINDS)
def test_train_stage_outputs(sine, kind):
    paths = Paths()
    metrics = training.run(sine, "sine", kind)
    assert set(metrics) == METRIC_KEYS

    saved = json.loads(paths.train_metrics("sine", kind).read_text())
    assert set(saved) == METRIC_KEYS
    assert saved == metrics
    assert saved["device"] == "cpu"
    assert saved["diverged"] is False and saved["diverged_replicas"] == 0
    learned = kind in models.MODELS
    replicas = sine.train.replicas if learned else 1
    assert saved["replicas"] == replicas and saved["deterministic"] is (not learned)
    assert list(saved["per_replica"]) == [str(r) for r in range(replicas)]

    header, rows = read_curve(paths.train_curve("sine", kind))
    assert header == ["epoch", "replica", "train_loss", "val_loss"]
    data = datasets.load(paths.dataset("sine"))
    checkpoint = checkpoints.load(paths.checkpoint("sine", kind))
    assert len(checkpoint.replicas) == replicas
    for r, replica in saved["per_replica"].items():
        assert set(replica) == REPLICA_KEYS | ({"seed"} if learned else set())
        assert isinstance(replica["epochs_run"], int) and isinstance(replica["best_epoch"], int)
        assert 0 <= replica["best_epoch"] <= replica["epochs_run"] <= sine.train.epochs
        for key in ("best_val_loss", "final_train_loss", "final_val_loss"):
            assert math.isfinite(replica[key])
        mine = [row for row in rows if row[1] == r]
        if learned:
            assert replica["seed"] == training.replica_seed(sine.seed, int(r))
            model = models.restore(checkpoint, CPU, int(r))
            assert saved["parameters"] == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
            loss = model_loss(model, *split(data, "val"))
            assert loss == pytest.approx(replica["best_val_loss"], rel=1e-4, abs=1e-6)
            assert [int(row[0]) for row in mine] == list(range(1, replica["epochs_run"] + 1))
        else:
            model = baselines.restore(checkpoint)
            val = np.mean((model.predict_next(data.scaled(data.x_val)) - data.scaled(data.y_val)) ** 2)
            assert val == pytest.approx(replica["best_val_loss"], rel=1e-5, abs=1e-12)
            assert saved["parameters"] == 0 and replica["epochs_run"] == 0
            assert [int(row[0]) for row in mine] == [0]
        assert float(mine[-1][2]) == pytest.approx(replica["final_train_loss"], rel=1e-6)
        assert float(mine[-1][3]) == pytest.approx(replica["final_val_loss"], rel=1e-6)
    for key in ("best_val_loss", "final_train_loss", "final_val_loss", "best_epoch", "epochs_run"):
        values = [replica[key] for replica in saved["per_replica"].values()]
        assert saved[key] == pytest.approx(float(np.median(values)), rel=1e-5)


# --- replicas -----------------------------------------------------------------------------------------------------

def test_replica_seeds_are_distinct_and_replica_zero_is_the_seed():
    assert [training.replica_seed(s, 0) for s in range(5)] == list(range(5))
    seeds = [training.replica_seed(s, r) for s in range(100) for r in range(10)]
    assert len(set(seeds)) == len(seeds)  # no two (seed, replica) pairs share a stream, e.g. seed 1 vs replica 1
    assert all(isinstance(s, int) and 0 <= s < 2 ** 32 for s in seeds)
    assert training.replica_seed(0, 1) == training.replica_seed(0, 1)  # a pure function of (seed, replica)


@pytest.mark.parametrize("kind", models.MODELS.names())
def test_one_replica_trains_exactly_as_a_lone_model(sine, kind):
    """`replicas: 1` is the single run of before, to the bit: a plain model, Adam, clip_grad_norm_, the
    seed's own batch order and the best validation epoch kept, written out here without the replica stack."""
    data = datasets.load(Paths().dataset("sine"))
    (x, y), val = split(data, "train"), split(data, "val")
    cfg = dataclasses.replace(sine.train, epochs=3, patience=3)
    stack = tiny_stack(kind, data, (7,))
    fitting.fit(stack, (x, y), val, cfg)

    torch.manual_seed(7)
    model = models.build(kind, tiny_shape(data))
    order, optimizer = torch.Generator().manual_seed(7), fitting.Adam(model.parameters(), lr=cfg.lr)
    best, best_state = model_loss(model, *val), {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(cfg.epochs):
        model.train()
        for index in torch.randperm(len(x), generator=order).split(cfg.batch_size):
            loss = torch.nn.functional.mse_loss(model.predict_next(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            optimizer.step()
        model.eval()
        if model_loss(model, *val) < best:
            best, best_state = model_loss(model, *val), {k: v.clone() for k, v in model.state_dict().items()}
    for name, value in stack.state_arrays(0).items():
        assert np.array_equal(value, best_state[name].numpy()), name


@pytest.mark.parametrize("kind", models.MODELS.names())
def test_replicas_train_as_they_would_alone(sine, kind):
    """Side by side in one network, each replica follows its lone run: only float32 round-off (the kernels sum
    over a longer, zero-padded state) separates them."""
    data = datasets.load(Paths().dataset("sine"))
    cfg = dataclasses.replace(sine.train, epochs=2, patience=2)
    seeds = [training.replica_seed(0, r) for r in range(3)]
    together = tiny_stack(kind, data, seeds)
    histories = fitting.fit(together, split(data, "train"), split(data, "val"), cfg)
    for r, seed in enumerate(seeds):
        alone = tiny_stack(kind, data, (seed,))
        history, = fitting.fit(alone, split(data, "train"), split(data, "val"), cfg)
        assert [row[0] for row in history.rows] == [row[0] for row in histories[r].rows]
        for name, value in alone.state_arrays(0).items():
            np.testing.assert_allclose(together.state_arrays(r)[name], value, rtol=0, atol=1e-5, err_msg=name)
    first = together.state_arrays(0)
    assert all(any(not np.array_equal(together.state_arrays(r)[n], first[n]) for n in first) for r in (1, 2))


@pytest.mark.parametrize("replicas, per_network, sizes", [(5, 3, [3, 2]), (5, 5, [5]), (3, 1, [1, 1, 1]),
                                                          (1, 3, [1]), (7, 3, [3, 3, 1]), (6, 3, [3, 3])])
def test_networks_are_contiguous_and_fixed_by_index(replicas, per_network, sizes):
    seeds = [training.replica_seed(0, r) for r in range(replicas)]
    split = training.networks(seeds, per_network)
    assert [len(g) for g in split] == sizes
    assert [s for g in split for s in g] == seeds
    # a network never depends on the replica count: the first ones of a larger pair are the same lists
    more = training.networks([training.replica_seed(0, r) for r in range(replicas + per_network)], per_network)
    assert all(more[i] == network for i, network in enumerate(split) if len(network) == per_network)


def test_networks_write_the_same_bytes_side_by_side_and_in_turn(project, monkeypatch):
    """Where a network runs (a forked process or this one, after the other) is not an input: every output of the
    train stage is byte-identical. Three replicas in two networks (2 + 1), for a gated and a hand-written kind."""
    raw = tiny_params()
    raw["train"]["replicas_per_network"] = 2
    write_params(project, raw)
    loaded = params.load("params.yaml")
    assert loaded.train.replicas == 3 and loaded.train.replicas_per_network == 2
    generate.run(loaded, "sine")
    written = {}
    for at_once in (1, 2):
        monkeypatch.setattr(processes, "side_by_side", lambda threads, on_cpu, n=at_once: n)
        for kind in ("gru", "elman"):
            paths = Paths()
            training.run(loaded, "sine", kind, paths)
            for path in (paths.checkpoint("sine", kind), paths.train_metrics("sine", kind),
                         paths.train_curve("sine", kind)):
                written.setdefault(str(path), []).append(path.read_bytes())
    assert all(first == second for first, second in written.values())


def test_one_and_five_replicas_write_the_same_schema(project):
    raw = tiny_params()
    loaded = params.load("params.yaml")
    generate.run(loaded, "sine")
    keys = []
    for replicas in (1, 5):
        raw["train"]["replicas"] = replicas
        write_params(project, raw)
        metrics = training.run(params.load("params.yaml"), "sine", "gru")
        assert metrics["replicas"] == replicas and len(metrics["per_replica"]) == replicas
        keys.append((set(metrics), {k for row in metrics["per_replica"].values() for k in row}))
    assert keys[0] == keys[1]


# --- the optimiser ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, lr", [("gru", 0.01), ("elman", 0.1), ("lstm", 1e-3)])
def test_our_adam_is_bit_identical_to_torch_adam(kind, lr):
    """fitting.Adam exists only to skip torch.optim's import of torch._dynamo; it must not change one bit."""
    shape = models.Shape(input_size=2, output_size=1, window=6, hidden=5, layers=2)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, 2, generator=g), torch.randn(40, 1, generator=g)
    trained = []
    for make_optimizer in (lambda p: fitting.Adam(p, lr=lr), lambda p: torch.optim.Adam(p, lr=lr)):
        torch.manual_seed(0)
        model = models.build(kind, shape)
        optimizer = make_optimizer(model.parameters())
        for step in range(30):
            batch = slice(step % 4 * 10, step % 4 * 10 + 10)
            loss = torch.nn.functional.mse_loss(model.predict_next(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        trained.append(model.state_dict())
    ours, theirs = trained
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name
    torch.manual_seed(0)
    assert any(not torch.equal(v, models.build(kind, shape).state_dict()[k]) for k, v in ours.items())  # it moved


def test_a_train_stage_never_imports_torch_dynamo(project):
    """torch.optim would import torch._dynamo (about a second per stage); fitting.Adam must keep it out."""
    import subprocess
    import sys
    code = ("import sys\nfrom pipeline import params\nfrom pipeline.stages import generate, train as training\n"
            "p = params.load('params.yaml'); generate.run(p, 'sine'); training.run(p, 'sine', 'gru')\n"
            "print('torch._dynamo' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, check=True,
                         env=source_env())
    assert out.stdout.split()[-2:] == ["False", "True"]


def test_every_replica_starts_with_the_forget_bias(sine):
    data = datasets.load(Paths().dataset("sine"))
    stack = ReplicaStack("lstm", tiny_shape(data), [0, 1, 2], forget_bias=2.5)
    plain = ReplicaStack("lstm", tiny_shape(data), [0, 1, 2])
    hidden = tiny_shape(data).hidden
    for r in range(3):
        biased, before = stack.state_arrays(r), plain.state_arrays(r)
        assert np.all(biased["rnn.bias_ih_l0"][hidden:2 * hidden] == 2.5)
        assert np.all(biased["rnn.bias_hh_l0"][hidden:2 * hidden] == 0.0)
        assert np.array_equal(biased["rnn.weight_hh_l0"], before["rnn.weight_hh_l0"])


# --- the free-running phase -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", models.MODELS.names())
def test_k_step_loss_is_the_evaluation_rollouts_error_on_the_same_weights(sine, kind):
    """The objective trains exactly what the evaluate stage measures: K fed-back predictions from each context,
    scored against the true continuation (here through the numpy forward the evaluate stage runs)."""
    data = datasets.load(Paths().dataset("sine"))
    steps = 7
    stack = tiny_stack(kind, data, seeds=(0, 1))
    with torch.no_grad():  # weights of a trained size, so the fed-back values move
        for w in stack.weights:
            w.mul_(2.0)
    context, truth = (data.scaled(a) for a in data.continuations("val", steps))
    losses = fitting.mean_loss(stack, torch.from_numpy(context), torch.from_numpy(truth),
                               predict=fitting.free_running(steps))
    for r, loss in enumerate(losses):
        checkpoint = checkpoints.Checkpoint(kind, tiny_shape(data), [stack.state_arrays(r)], Path("m.npz"))
        rolled = scoring.rollout(inference.restore(checkpoint), context, steps)
        expected = float(np.mean((rolled.astype(np.float64) - truth) ** 2))
        assert loss == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert losses[0] != losses[1]


def test_free_running_phase_starts_from_the_teacher_forced_weights_and_never_ends_worse(sine):
    data = datasets.load(Paths().dataset("sine"))
    cfg = dataclasses.replace(sine.train, epochs=3, rollout_steps=5, rollout_epochs=3, rollout_patience=2,
                              rollout_lr=0.003)
    stack = tiny_stack("gru", data, seeds=(0, 1, 2))
    continued = fitting.continued_tensors(data, 5, CPU)
    histories = fitting.fit(stack, split(data, "train"), split(data, "val"), cfg, continued=continued)
    for r, history in enumerate(histories):
        phase = history.rollout
        assert history.rollout_steps == 5 and len(history.rows) == 3
        assert 1 <= len(phase.rows) <= 3 and phase.best_val_loss <= phase.start_val_loss
        kept = fitting.mean_loss(stack, *continued[1], predict=fitting.free_running(5))[r]
        assert kept == pytest.approx(phase.best_val_loss, rel=1e-6)  # the weights left are the best ones


def test_train_stage_records_the_free_running_phase(sine):
    raw = tiny_params()
    raw["models"] = {"gru_fr": {"kind": "gru", "datasets": ["sine"],
                                "train": {"rollout_steps": 4, "rollout_epochs": 2}}}
    write_params(Path.cwd(), raw)
    loaded = params.load("params.yaml")
    metrics = training.run(loaded, "sine", "gru_fr")
    assert metrics["free_running"]["steps"] == 4
    assert 0 <= metrics["free_running"]["improved_replicas"] <= metrics["replicas"] == 3
    row = metrics["per_replica"]["0"]
    assert row["rollout_best_val_loss"] <= row["rollout_start_val_loss"] and row["rollout_epochs_run"] >= 1


def test_free_running_on_data_without_a_rollout_is_one_clear_error(project):
    """Caught when params.yaml is read (`make repro` checks it before DVC deletes any output), and by the train
    stage itself for a caller that builds its Params another way."""
    raw = tiny_params()
    raw["models"] = {"gru_fr": {"kind": "gru", "train": {"rollout_steps": 4}}}
    write_params(project, raw)
    with pytest.raises(ParamsError) as info:
        params.load("params.yaml")
    assert str(info.value) == ("params.yaml: models.gru_fr trains on its rollouts (train.rollout_steps) but "
                               "memory_short cannot be rolled out (its target is not its next value); give it "
                               "`datasets:` without memory_short, or set data.memory_short.train.rollout_steps: 0")
    raw["datasets"] = ["memory_short"]
    raw["data"]["memory_short"]["train"] = {"rollout_steps": 0}
    write_params(project, raw)
    loaded = params.load("params.yaml")
    generate.run(loaded, "memory_short")
    cfg = dataclasses.replace(loaded.training("memory_short", "gru_fr"), rollout_steps=4)
    with pytest.raises(ParamsError) as info:
        training.check_free_running(cfg, datasets.load(Paths().dataset("memory_short")), "memory_short")
    assert str(info.value) == ("params.yaml: train.rollout_steps is 4 for data.memory_short, which cannot be "
                               "rolled out (its target is not its next value); give the variant `datasets:` "
                               "without it (models.<name>.datasets) or set "
                               "data.memory_short.train.rollout_steps: 0")


def test_a_variant_trains_only_where_its_datasets_say_and_writes_a_not_run_record_elsewhere(project):
    """DVC's matrix makes a train stage for every (dataset, model); where `models.<name>.datasets` leaves the
    dataset out, the stage trains nothing and writes a record that says why, which evaluation skips and which
    cannot be loaded as a model."""
    raw = tiny_params()
    raw["datasets"] = ["sine", "ramp"]
    raw["models"] = {"persistence": {}, "rnn_fr": {"kind": "rnn", "datasets": ["ramp"],
                                                  "train": {"rollout_steps": 2, "rollout_epochs": 1}}}
    write_params(project, raw)
    loaded = params.load("params.yaml")
    assert loaded.models_on("sine") == ["persistence"] and loaded.models_on("ramp") == ["persistence", "rnn_fr"]
    metrics = training.run(loaded, "sine", "rnn_fr")
    assert metrics == {"not_run": "models.rnn_fr.datasets is ramp, without sine"}
    assert json.loads(Paths().train_metrics("sine", "rnn_fr").read_text()) == metrics
    assert Paths().train_curve("sine", "rnn_fr").read_text().splitlines() == ["epoch,replica,train_loss,val_loss"]
    with pytest.raises(ArtifactError, match="holds no model: models.rnn_fr.datasets is ramp, without sine"):
        checkpoints.load(Paths().checkpoint("sine", "rnn_fr"))
    first = Paths().checkpoint("sine", "rnn_fr").read_bytes()
    training.run(loaded, "sine", "rnn_fr")
    assert Paths().checkpoint("sine", "rnn_fr").read_bytes() == first  # a rerun rewrites the same bytes


def test_free_running_longer_than_the_sequences_is_one_clear_error(project):
    raw = tiny_params()
    raw["datasets"] = ["ramp"]
    raw["train"]["rollout_steps"] = 11
    write_params(project, raw)
    loaded = params.load("params.yaml")
    generate.run(loaded, "ramp")  # sequences of 5 + 10 values: at most 10 steps after the first window
    with pytest.raises(ParamsError, match=r"continue at most 10 steps after a window; use rollout_steps <= 10"):
        training.run(loaded, "ramp", "gru")


def test_patience_zero_runs_every_epoch_and_keeps_the_best_weights(sine):
    data = datasets.load(Paths().dataset("sine"))
    # A rate so small that the weights never move: no epoch improves on the last, and only patience 0 keeps going.
    cfg = dataclasses.replace(sine.train, epochs=6, patience=0, lr=1e-30)
    stack = tiny_stack("rnn", data, seeds=(0, 1))
    histories = fitting.fit(stack, split(data, "train"), split(data, "val"), cfg)
    for r, history in enumerate(histories):
        assert [row[0] for row in history.rows] == [1, 2, 3, 4, 5, 6]
        assert history.best_val_loss <= min(row[2] for row in history.rows)
        assert fitting.mean_loss(stack, *split(data, "val"))[r] == pytest.approx(history.best_val_loss, rel=1e-6)


def test_a_gru_replica_starts_with_the_update_gate_bias(sine):
    data = datasets.load(Paths().dataset("sine"))
    hidden = tiny_shape(data).hidden
    arrays = ReplicaStack("gru", tiny_shape(data), [0, 1], forget_bias=1.5).state_arrays(1)
    assert np.all(arrays["rnn.bias_ih_l0"][hidden:2 * hidden] == 1.5)  # r, z, n: z is the update gate
    assert np.all(arrays["rnn.bias_hh_l0"][hidden:2 * hidden] == 0.0)


def test_training_batches_carry_each_windows_own_length(project, monkeypatch):
    """Padded windows reach the network with their own lengths through each replica's own shuffle, and the
    validation loss reads them too."""
    raw = tiny_params()
    raw["data"]["memory_short"].update(length=[2, 12], lag=-1)
    write_params(project, raw)
    loaded = params.load("params.yaml")
    generate.run(loaded, "memory_short")
    data = datasets.load(Paths().dataset("memory_short"))
    train, val = split(data, "train"), split(data, "val")
    assert len(train) == len(val) == 3 and train[2].dtype == torch.int64
    length_of = {row.numpy().tobytes(): int(n) for part in (train, val) for row, n in zip(part[0], part[2])}
    stack = tiny_stack("gru", data, (0, 1))
    original, batches = stack.predict_next, []

    def recording(x, members=None, lengths=None):
        got = [int(n) for n in lengths.reshape(-1)]
        assert got == [length_of[row.numpy().tobytes()] for row in x.reshape(-1, *x.shape[2:])]
        batches.append(len(got))
        return original(x, members, lengths)

    monkeypatch.setattr(stack, "predict_next", recording)
    histories = fitting.fit(stack, train, val, dataclasses.replace(loaded.train, epochs=2, patience=0))
    assert len(batches) > 4  # training batches and validation passes
    monkeypatch.undo()
    for r, history in enumerate(histories):
        assert fitting.mean_loss(stack, *val[:2], lengths=val[2])[r] == pytest.approx(history.best_val_loss,
                                                                                     abs=1e-6)
