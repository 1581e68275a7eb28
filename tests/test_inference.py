"""The numpy forward passes the evaluate stage runs, against the torch modules they were trained as."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import checkpoints, evaluation, inference, models, params
from pipeline.errors import ArtifactError

from conftest import source_env, tiny_params, write_params


def checkpoint_of(model: models.SequenceModel, kind: str, shape: models.Shape) -> checkpoints.Checkpoint:
    return checkpoints.Checkpoint(kind, shape, models.state_arrays(model), Path("model.npz"))


def test_every_learned_kind_has_a_numpy_forward():
    assert set(inference.FORWARDS) == set(models.MODELS.names())


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("features, outputs", [(1, 1), (2, 2), (2, 1)])
@pytest.mark.parametrize("kind", models.MODELS.names())
def test_numpy_forward_equals_the_torch_module(kind, features, outputs, layers):
    shape = models.Shape(input_size=features, output_size=outputs, window=12, hidden=6, layers=layers)
    torch.manual_seed(0)
    model = models.build(kind, shape).eval()
    with torch.no_grad():  # weights of a trained size, not the tiny initial ones, so every gate matters
        for p in model.parameters():
            p.mul_(3.0)
    x = np.random.default_rng(1).normal(size=(9, 12, features)).astype(np.float32)
    with torch.no_grad():
        expected = model.predict_next(torch.from_numpy(x)).numpy()
    got = inference.restore(checkpoint_of(model, kind, shape)).predict_next(x)
    assert got.shape == expected.shape == (9, outputs) and got.dtype == np.float32
    assert np.abs(expected).max() > 0.1  # the comparison has teeth
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("features, batch", [(1, 1), (2, 3)])
@pytest.mark.parametrize("kind", models.MODELS.names())
def test_rollout_predicts_what_one_window_at_a_time_predicts(kind, features, batch, layers):
    shape = models.Shape(input_size=features, output_size=features, window=7, hidden=6, layers=layers)
    torch.manual_seed(0)
    model = models.build(kind, shape)
    with torch.no_grad():  # larger than the initial weights, so that the rollout does not settle at once
        for p in model.parameters():
            p.mul_(2.0)
    forward = inference.restore(checkpoint_of(model, kind, shape))
    context = np.random.default_rng(2).normal(size=(batch, 7, features)).astype(np.float32)
    by_window = evaluation.window_rollout(forward, context, 40)  # the definition: predict_next, slide, repeat
    together = forward.rollout(context, 40)
    assert together.shape == by_window.shape == (batch, 40, features) and together.dtype == np.float32
    assert np.ptp(by_window[:, :10], axis=1).min() > 1e-2  # the predictions move: the check has teeth
    np.testing.assert_allclose(together, by_window, rtol=0, atol=1e-6)  # one layer: equal to the bit, here


def test_rollout_of_zero_steps_and_the_evaluate_stage_uses_it(monkeypatch):
    shape = models.Shape(input_size=1, output_size=1, window=5, hidden=4, layers=1)
    forward = inference.restore(checkpoint_of(models.build("gru", shape), "gru", shape))
    context = np.zeros((2, 5, 1), np.float32)
    assert forward.rollout(context, 0).shape == (2, 0, 1)
    calls = []
    monkeypatch.setattr(forward, "rollout", lambda ctx, steps: calls.append(steps) or np.zeros((2, steps, 1)))
    evaluation.rollout(forward, context, 3)
    assert calls == [3]


@pytest.mark.parametrize("damage", ["missing", "extra", "shape"])
def test_a_checkpoint_that_does_not_fit_is_an_artifact_error(damage):
    shape = models.Shape(1, 1, 5, 4, 1)
    checkpoint = checkpoint_of(models.build("gru", shape), "gru", shape)
    arrays = dict(checkpoint.arrays)
    if damage == "missing":
        del arrays["head.bias"]
    elif damage == "extra":
        arrays["stray"] = np.zeros(3)
    else:
        arrays["rnn.weight_hh_l0"] = np.zeros((12, 5))
    with pytest.raises(ArtifactError, match="model.npz is corrupt"):
        inference.restore(dataclasses.replace(checkpoint, arrays=arrays))


def test_a_kind_without_numpy_forward_is_evaluated_through_torch(tmp_path, monkeypatch):
    shape = models.Shape(1, 1, 5, 4, 1)
    torch.manual_seed(0)
    model = models.build("lstm", shape)
    path = tmp_path / "lstm.npz"
    checkpoints.save(path, "lstm", shape, models.state_arrays(model))
    loaded = params.parse(tiny_params())
    x = np.random.default_rng(0).normal(size=(4, 5, 1)).astype(np.float32)
    numpy_side = evaluation.load_predictor(loaded, path)
    assert isinstance(numpy_side, inference.NumpyRecurrent)
    monkeypatch.delitem(inference.FORWARDS, "lstm")
    torch_side = evaluation.load_predictor(loaded, path)
    assert isinstance(torch_side, models.NumpyPredictor)
    np.testing.assert_allclose(numpy_side.predict_next(x), torch_side.predict_next(x), rtol=0, atol=1e-6)


def test_evaluating_a_learned_model_never_imports_torch(project):
    train = ("from pipeline import params, generate, training\n"
             "p = params.load('params.yaml'); generate.run(p, 'sine'); training.run(p, 'sine', 'gru')\n")
    subprocess.run([sys.executable, "-c", train], cwd=project, check=True, capture_output=True, env=source_env())
    evaluate = ("import sys\nfrom pipeline import params, evaluation\n"
                "evaluation.run(params.load('params.yaml'), 'sine', 'gru')\n"
                "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", evaluate], cwd=project, check=True, capture_output=True, text=True,
                         env=source_env())
    assert out.stdout.split()[-1] == "False"
    assert (project / "metrics" / "eval" / "sine" / "gru.json").exists()


def test_evaluation_does_not_depend_on_the_device_setting(project):
    """The evaluate stage declares no device param in dvc.yaml: its numbers must not depend on it."""
    from pipeline import generate, training

    loaded = params.load("params.yaml")
    generate.run(loaded, "sine")
    training.run(loaded, "sine", "elman")
    first = evaluation.run(loaded, "sine", "elman")
    raw = tiny_params()
    raw["device"] = "cuda"  # absent here: evaluation must not even look
    write_params(project, raw)
    assert evaluation.run(params.load("params.yaml"), "sine", "elman") == first
