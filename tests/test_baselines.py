"""The numpy baselines: their predictions by hand, their checkpoints, and the promise that their stages (and
generate and report) never import torch, and that nothing imports matplotlib unless it draws."""

import subprocess
import sys

import numpy as np
import pytest

from pipeline import baselines, checkpoints
from pipeline.checkpoints import Shape
from pipeline.errors import ArtifactError, ParamsError

from conftest import source_env

RNG = np.random.default_rng(0)


def windows(features: int, batch: int = 3, steps: int = 7) -> np.ndarray:
    return RNG.normal(size=(batch, steps, features)).astype(np.float32)


def test_persistence_repeats_the_last_value():
    x = windows(2)
    assert np.array_equal(baselines.build("persistence", Shape(2, 2, 7, 0, 0)).predict_next(x), x[:, -1])


def test_persistence_needs_matching_features():
    with pytest.raises(ValueError, match="same features"):
        baselines.build("persistence", Shape(2, 1, 7, 0, 0))


def test_linear_predicts_from_the_flattened_window():
    model = baselines.build("linear", Shape(2, 1, 7, 0, 0))
    model.weight, model.bias = RNG.normal(size=(1, 14)), RNG.normal(size=1)
    x = windows(2)
    expected = np.array([[w @ model.weight[0] + model.bias[0]] for w in x.reshape(3, -1).astype(np.float64)])
    np.testing.assert_allclose(model.predict_next(x), expected, rtol=1e-12)


def test_linear_fit_recovers_a_known_linear_map():
    x = RNG.normal(size=(200, 3, 2))
    weight, bias = RNG.normal(size=(2, 6)), RNG.normal(size=2)
    y = x.reshape(200, -1) @ weight.T + bias
    model = baselines.build("linear", Shape(2, 2, 3, 0, 0))
    model.fit(x, y)
    np.testing.assert_allclose(model.weight, weight, atol=1e-10)
    np.testing.assert_allclose(model.bias, bias, atol=1e-10)


@pytest.mark.parametrize("kind", ["persistence", "linear"])
def test_baseline_checkpoint_round_trip(tmp_path, kind):
    shape = Shape(1, 1, 5, 0, 0)
    model = baselines.build(kind, shape)
    model.fit(windows(1, batch=40, steps=5), RNG.normal(size=(40, 1)))
    path = tmp_path / f"{kind}.npz"
    checkpoints.save(path, kind, shape, model.state())
    again = baselines.restore(checkpoints.load(path))
    x = windows(1, steps=5)
    assert np.array_equal(again.predict_next(x), model.predict_next(x))
    checkpoints.save(tmp_path / "again.npz", kind, shape, again.state())
    assert (tmp_path / "again.npz").read_bytes() == path.read_bytes()


def test_a_baseline_checkpoint_with_wrong_arrays_is_an_artifact_error(tmp_path):
    path = tmp_path / "linear.npz"
    checkpoints.save(path, "linear", Shape(1, 1, 5, 0, 0), {"weight": np.zeros((1, 4)), "bias": np.zeros(1)})
    with pytest.raises(ArtifactError, match="linear.npz is corrupt"):
        baselines.restore(checkpoints.load(path))
    checkpoints.save(path, "persistence", Shape(1, 1, 5, 0, 0), {"weight": np.zeros(1)})
    with pytest.raises(ArtifactError, match="linear.npz is corrupt"):
        baselines.restore(checkpoints.load(path))


def test_unknown_baseline_lists_the_choices():
    with pytest.raises(ParamsError, match="unknown model 'median'.*linear, persistence"):
        baselines.build("median", Shape(1, 1, 5, 0, 0))


def _modules_after(code: str, cwd=None) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd=cwd, env=source_env()).stdout
    return set(out.split())


@pytest.mark.parametrize("module", ["pipeline.cli", "pipeline.generate", "pipeline.training", "pipeline.evaluation",
                                    "pipeline.report", "pipeline.baselines", "pipeline.checkpoints"])
def test_stage_modules_import_neither_torch_nor_matplotlib(module):
    loaded = _modules_after(f"import {module}")
    assert "torch" not in loaded
    assert "matplotlib" not in loaded


def test_baseline_stages_run_without_torch(project):
    """Generate, train and evaluate both baselines: the whole chain for a baseline never loads torch."""
    code = ("from pipeline import params, generate, training, evaluation, report\n"
            "p = params.load('params.yaml')\n"
            "generate.run(p, 'sine')\n"
            "for m in ('persistence', 'linear'):\n"
            "    training.run(p, 'sine', m); evaluation.run(p, 'sine', m)\n")
    loaded = _modules_after(code, cwd=project)
    assert "torch" not in loaded
    assert "matplotlib" in loaded  # it drew the preview and the pair figures: the check is not vacuous
    assert (project / "metrics" / "eval" / "sine" / "linear.json").exists()


def test_a_learned_model_does_load_torch(project):
    code = ("from pipeline import params, generate, training\n"
            "p = params.load('params.yaml')\n"
            "generate.run(p, 'sine'); training.run(p, 'sine', 'gru')\n")
    assert "torch" in _modules_after(code, cwd=project)
