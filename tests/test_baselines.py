"""The numpy baselines: their predictions by hand, their checkpoints, and the promise that their stages (and
generate and report) never import torch, and that nothing imports matplotlib unless it draws."""

import subprocess
import sys

import numpy as np
import pytest

from pipeline.models import baselines
from pipeline.files import checkpoints
from pipeline.files.checkpoints import Shape
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


def sine_design(window: int = 15, dt: float = 0.1, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """The linear baseline's least-squares system on a float32 sine, as the sine dataset gives it: windows of a
    pure sine span 2 dimensions, plus the bias column; the other singular values are float32 rounding."""
    series = np.sin(dt * np.arange(n + window)).astype(np.float32)
    x = np.lib.stride_tricks.sliding_window_view(series, window)[:n]
    return np.concatenate([x, np.ones((n, 1))], axis=1).astype(np.float64), series[window:].astype(np.float64)


@pytest.mark.parametrize("case", ["full rank", "duplicate columns", "wide", "sine", "two targets"])
def test_portable_lstsq_is_what_lapack_computes(case):
    rng = np.random.default_rng(7)
    if case == "sine":
        a, b = sine_design()
    else:
        a = rng.normal(size=(40, 6) if case != "wide" else (4, 9))
        if case == "duplicate columns":  # exactly rank-deficient: the minimum-norm solution splits the weight
            a[:, 3] = a[:, 1]
        b = rng.normal(size=(len(a), 2) if case == "two targets" else len(a))
    got = baselines.portable_lstsq(a, b)
    expected = np.linalg.lstsq(a, b, rcond=baselines.RCOND)[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_the_rank_decision_is_far_from_every_singular_value_of_the_sine():
    """RCOND separates the sine's 3 real directions from its float32 rounding by orders of magnitude on either
    side, so no machine's last bits could move a singular value across it."""
    a, _ = sine_design()
    relative = np.linalg.svd(a, compute_uv=False) / np.linalg.norm(a, 2)
    kept, dropped = relative[relative > baselines.RCOND], relative[relative <= baselines.RCOND]
    assert len(kept) == 3
    assert kept.min() > 1e3 * baselines.RCOND and dropped.max() < baselines.RCOND / 10


def test_linear_on_a_float32_sine_is_exact_to_the_data_rounding():
    """The fit drops the rounding directions (which lstsq's default rcond fitted, amplified 1e8-fold, and which
    made the weights depend on the CPU's kernels in their 9th digit) and still predicts the held-out sine to
    the float32 rounding of the data, as the recurrence x[t+1] = 2cos(dt) x[t] - x[t-1] does."""
    a, b = sine_design(n=900)
    model = baselines.build("linear", Shape(1, 1, 15, 0, 0))
    model.fit(a[:600, :-1, None], b[:600, None])
    rmse = np.sqrt(np.mean((model.predict_next(a[600:, :-1, None])[:, 0] - b[600:]) ** 2))
    assert rmse < 5e-8
    assert np.abs(model.weight).max() < 1.0  # the minimum-norm solution, not a rounding-noise fit


def test_linear_fit_is_the_same_bits_for_any_batching_of_its_predictions():
    model = baselines.build("linear", Shape(2, 1, 7, 0, 0))
    model.fit(windows(2, batch=50), RNG.normal(size=(50, 1)))
    x = windows(2, batch=9)
    whole = model.predict_next(x)
    assert np.array_equal(whole, np.concatenate([model.predict_next(x[i:i + 1]) for i in range(9)]))


@pytest.mark.parametrize("kind", ["persistence", "linear"])
def test_baseline_checkpoint_round_trip(tmp_path, kind):
    shape = Shape(1, 1, 5, 0, 0)
    model = baselines.build(kind, shape)
    model.fit(windows(1, batch=40, steps=5), RNG.normal(size=(40, 1)))
    path = tmp_path / f"{kind}.npz"
    checkpoints.save(path, kind, shape, [model.state()])
    again = baselines.restore(checkpoints.load(path))
    x = windows(1, steps=5)
    assert np.array_equal(again.predict_next(x), model.predict_next(x))
    checkpoints.save(tmp_path / "again.npz", kind, shape, [again.state()])
    assert (tmp_path / "again.npz").read_bytes() == path.read_bytes()


def test_a_baseline_checkpoint_with_wrong_arrays_is_an_artifact_error(tmp_path):
    path = tmp_path / "linear.npz"
    checkpoints.save(path, "linear", Shape(1, 1, 5, 0, 0), [{"weight": np.zeros((1, 4)), "bias": np.zeros(1)}])
    with pytest.raises(ArtifactError, match="linear.npz is corrupt"):
        baselines.restore(checkpoints.load(path))
    checkpoints.save(path, "persistence", Shape(1, 1, 5, 0, 0), [{"weight": np.zeros(1)}])
    with pytest.raises(ArtifactError, match="linear.npz is corrupt"):
        baselines.restore(checkpoints.load(path))


def test_unknown_baseline_lists_the_choices():
    with pytest.raises(ParamsError, match="unknown model 'median'.*linear, mean, persistence"):
        baselines.build("median", Shape(1, 1, 5, 0, 0))


def _modules_after(code: str, cwd=None) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd=cwd, env=source_env()).stdout
    return set(out.split())


@pytest.mark.parametrize("module", ["pipeline.cli", "pipeline.stages.generate", "pipeline.stages.train", "pipeline.stages.evaluate",
                                    "pipeline.stages.report", "pipeline.models.baselines", "pipeline.files.checkpoints"])
def test_stage_modules_import_neither_torch_nor_matplotlib(module):
    loaded = _modules_after(f"import {module}")
    assert "torch" not in loaded
    assert "matplotlib" not in loaded


def test_baseline_stages_run_without_torch(project):
    """Generate, train and evaluate both baselines: the whole chain for a baseline never loads torch."""
    code = ("from pipeline import params\nfrom pipeline.stages import generate, train as training, "
            "evaluate as evaluation, report\n"
            "p = params.load('params.yaml')\n"
            "generate.run(p, 'sine')\n"
            "for m in ('persistence', 'linear'):\n"
            "    training.run(p, 'sine', m); evaluation.run(p, 'sine', m)\n")
    loaded = _modules_after(code, cwd=project)
    assert "torch" not in loaded
    assert "matplotlib" in loaded  # it drew the preview and the pair figures: the check is not vacuous
    assert (project / "metrics" / "eval" / "sine" / "linear.json").exists()


def test_a_learned_model_does_load_torch(project):
    code = ("from pipeline import params\nfrom pipeline.stages import generate, train as training\n"
            "p = params.load('params.yaml')\n"
            "generate.run(p, 'sine'); training.run(p, 'sine', 'gru')\n")
    assert "torch" in _modules_after(code, cwd=project)


# --- windows of different lengths --------------------------------------------------------------------------

LENGTHS = np.array([7, 3, 1, 5])


def test_persistence_repeats_each_windows_last_real_value():
    x = windows(2, batch=4)  # the steps past each length are noise: padding a prediction must not read
    got = baselines.build("persistence", Shape(2, 2, 7, 0, 0)).predict_next(x, LENGTHS)
    np.testing.assert_array_equal(got, np.stack([x[i, n - 1] for i, n in enumerate(LENGTHS)]))


def test_linear_reads_each_window_right_aligned():
    """Weight column j reads a window's j-th value before its end, whatever its length: a window predicts as the
    full window of zeros (the scaled data's mean) followed by its real values, alone or in any batch."""
    model = baselines.build("linear", Shape(2, 1, 7, 0, 0))
    model.weight, model.bias = RNG.normal(size=(1, 14)), RNG.normal(size=1)
    x = windows(2, batch=4)
    together = model.predict_next(x, LENGTHS)
    for i, n in enumerate(LENGTHS):
        full = np.concatenate([np.zeros((7 - n, 2), np.float32), x[i, :n]])[None]
        np.testing.assert_allclose(together[i], model.predict_next(full)[0], rtol=1e-12)
        other_padding = np.concatenate([x[i:i + 1, :n], windows(2, batch=1)[:, n:]], axis=1)
        np.testing.assert_array_equal(model.predict_next(other_padding, LENGTHS[i:i + 1])[0], together[i])
    assert not np.allclose(together, model.predict_next(x))


def test_linear_fit_with_lengths_solves_a_lag_counted_from_each_end():
    """x[-3] + x[-1] of windows of 4 to 12 values is linear in the right-aligned windows: the fit is exact there,
    and far off on the windows as padded."""
    from pipeline.data.generators import KINDS, MemorySpec

    spec = MemorySpec(lag=-3, length=(4, 12), n_train=300, n_val=10, n_test=50)
    data = KINDS.get("memory").generate(spec, "memory", np.random.default_rng(0))
    model = baselines.build("linear", Shape(1, 1, 12, 0, 0))
    model.fit(data.x_train, data.y_train, data.lengths("train"))
    np.testing.assert_allclose(model.predict_next(data.x_test, data.lengths("test")), data.y_test, atol=1e-5)
    unaware = baselines.build("linear", Shape(1, 1, 12, 0, 0))
    unaware.fit(data.x_train, data.y_train)
    assert np.sqrt(np.mean((unaware.predict_next(data.x_test) - data.y_test) ** 2)) > 0.3
