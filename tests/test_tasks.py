"""The tasks that tell recurrent models apart (issue 25): Mackey-Glass, Lorenz-63 and the adding problem, checked
against independent references (a finer integration, the systems' known statistics, the adding problem's
layout), and the mean baseline they are judged against."""

import numpy as np
import pytest

from conftest import tiny_params, use_datasets, write_params
from pipeline import params
from pipeline.analysis import scoring
from pipeline.data import dynamics
from pipeline.data.generators import KINDS, LORENZ_LYAPUNOV
from pipeline.errors import ParamsError
from pipeline.files.checkpoints import Shape
from pipeline.models import baselines
from pipeline.schema import SchemaError, build


def generate(kind: str, **spec):
    return KINDS.get(kind).generate(build(KINDS.get(kind).spec, spec, f"data.{kind}"), kind,
                                    np.random.default_rng(0))


# --- Mackey-Glass ------------------------------------------------------------------------------------------

def test_mackey_glass_agrees_with_a_finer_integration():
    """RK4 at 0.1 against RK4 at 0.025 (every 4th point): the same trajectory to 1e-3 over 300 time units (the
    attractor spans 1.2), and the error shrinks with the step (a scheme that converges, second order at least
    with the interpolated delay: halving the step cuts it by 3x or more)."""
    coarse = dynamics.mackey_glass(3001, 0.1, 17.0, 0.2, 0.1, 10, 1.2)
    medium = dynamics.mackey_glass(6001, 0.05, 17.0, 0.2, 0.1, 10, 1.2)[::2]
    fine = dynamics.mackey_glass(12001, 0.025, 17.0, 0.2, 0.1, 10, 1.2)[::4]
    error, smaller = np.max(np.abs(coarse - fine)), np.max(np.abs(medium - fine))
    assert 0 < error < 1e-3
    assert smaller < error / 3


def test_mackey_glass_at_tau_17_is_on_its_published_attractor():
    """Known statistics of the tau-17 attractor: x stays in about [0.2, 1.4] with mean about 0.9 (Farmer 1982's
    figures; the 0.2-1.4 band of every benchmark plot), and it does not settle (chaos, not a cycle)."""
    data = generate("mackey_glass", samples=3000, sample_every=1.0, rollout_steps=10)
    x = np.concatenate([data.x_train[:, -1, 0], data.y_train[:, 0]])
    assert 0.15 < x.min() < 0.5 and 1.2 < x.max() < 1.45
    assert 0.85 < x.mean() < 0.95
    series = np.concatenate([data.y_train[:, 0], data.y_val[:, 0], data.y_test[:, 0]])
    last, earlier = series[-500:], series[-1000:-500]
    assert not np.allclose(last, earlier, atol=1e-3)  # no period of 500 samples


def test_mackey_glass_is_deterministic_and_split_in_time_order():
    a = generate("mackey_glass", samples=400, rollout_steps=50)
    b = generate("mackey_glass", samples=400, rollout_steps=50)
    assert all(np.array_equal(getattr(a, n), getattr(b, n)) for n in ("x_train", "y_val", "rollout_target"))
    # the rollout starts at the test part's first value and continues it: its target is the test targets'
    assert np.array_equal(a.rollout_target[0, :, 0], a.y_test[:50, 0])
    assert np.array_equal(a.rollout_context[0], a.x_test[0])
    # time order: the first validation window ends with the last training target
    assert np.array_equal(a.x_val[0, -1], a.y_train[-1])


# --- Lorenz ------------------------------------------------------------------------------------------------

def test_lorenz_agrees_with_a_finer_integration_over_two_time_units():
    coarse = dynamics.lorenz(201, 0.01, 10.0, 28.0, 8 / 3, np.ones(3))
    fine = dynamics.lorenz(801, 0.0025, 10.0, 28.0, 8 / 3, np.ones(3))[::4]
    assert 0 < np.max(np.abs(coarse - fine)) < 1e-3


def test_lorenz_stays_on_its_attractor_with_the_known_mean_height():
    """The classic attractor: |x| < 21, 0 < z < 50, the two wings both visited, and the mean of z about 23.5
    (over a long run: 23.5-23.6 in the literature)."""
    data = generate("lorenz", samples=20000, rollout_steps=10)
    states = np.concatenate([data.y_train, data.y_val, data.y_test])
    assert np.abs(states[:, 0]).max() < 21 and 0 < states[:, 2].min() and states[:, 2].max() < 50
    assert (states[:, 0] > 5).mean() > 0.2 and (states[:, 0] < -5).mean() > 0.2
    assert 22.8 < states[:, 2].mean() < 24.3
    assert data.meta["features"] == ["x", "y", "z"] and data.meta["lyapunov_exponent"] == LORENZ_LYAPUNOV


def test_valid_time_in_lyapunov_times():
    assert scoring.lyapunov_times(55, 0.02, 0.906) == pytest.approx(0.9966)
    assert scoring.lyapunov_times(0, 0.02, 0.906) == 0


# --- the adding problem ------------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [12, [8, 16]])
def test_adding_problem_layout(length):
    data = generate("adding", length=length, n_train=300, n_val=20, n_test=40)
    lengths = data.lengths("train") if isinstance(length, list) else np.full(len(data.x_train), 12)
    values, markers = data.x_train[..., 0], data.x_train[..., 1]
    assert np.all(markers.sum(axis=1) == 2)
    for row, n in enumerate(lengths):
        first, second = np.flatnonzero(markers[row])
        assert first < n // 2 <= second < n  # one marker in each half of its own length
        assert data.y_train[row, 0] == pytest.approx(values[row, first] + values[row, second], abs=1e-6)
        assert np.all(data.x_train[row, n:] == 0)  # padding after its end
    assert 0 <= values.min() and values.max() < 1
    assert not data.has_rollout


def test_the_mean_baseline_costs_one_sixth_on_the_adding_problem():
    data = generate("adding", length=20, n_train=4000, n_val=100, n_test=4000)
    model = baselines.build("mean", Shape(input_size=2, output_size=1, window=20, hidden=0, layers=0))
    x, y = data.scaled_split("train")
    model.fit(x, y)
    assert model.value[0] == pytest.approx(float(np.mean(y, dtype=np.float64)), rel=1e-12)
    mse = scoring.regression_metrics(scoring.predict_test(model, data), data.y_test)["mse"]
    # the variance of a sum of two U(0, 1) is 1/6; the standard error of a 4000-value MSE is about 0.003
    assert mse == pytest.approx(1 / 6, abs=0.012)


def test_persistence_does_not_run_on_the_adding_problem(project):
    write_params(project, use_datasets(tiny_params(), ["adding", "sine"]))
    loaded = params.load("params.yaml")
    assert "persistence" not in loaded.models_on("adding") and "mean" in loaded.models_on("adding")
    assert "persistence" in loaded.models_on("sine")
    assert "target (adding) has other features than its inputs" in loaded.why_not_on("adding", "persistence")


# --- bad params --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, spec, message", [
    ("mackey_glass", {"tau": -17.0}, "data.mackey_glass.tau must be > 0, got -17.0"),
    ("mackey_glass", {"tau": 17.05}, "data.mackey_glass.tau must be a whole number of integration steps "
                                     "(step 0.1), got 17.05"),
    ("mackey_glass", {"taus": 17.0}, "unknown key 'data.mackey_glass.taus'; expected one of: beta, gamma, "
                                     "initial, power, rollout_steps, sample_every, samples, step, tau, "
                                     "test_fraction, transient, val_fraction, window"),
    ("mackey_glass", {"samples": 1000, "rollout_steps": 500},
     "data.mackey_glass.rollout_steps must fit in the test part (200 values: samples x test_fraction), got 500"),
    ("lorenz", {"sample_every": 0.015}, "data.lorenz.sample_every must be a whole number of integration steps "
                                        "(step 0.01), got 0.015"),
    ("lorenz", {"samples": 10}, "data.lorenz.samples must leave at least window + 2 (12) training values and one "
                                "validation value, got 10"),
    ("adding", {"length": 1}, "data.adding.length must be >= 2 (one marker in each half of the sequence), got 1"),
    ("adding", {"length": [1, 10]}, "data.adding.length must be >= 2 (one marker in each half of the sequence), "
                                    "got [1, 10]"),
    ("adding", {"length": [10, 5]}, "data.adding.length must be one integer or a range [min, max] with min <= "
                                    "max, got [10, 5]"),
])
def test_bad_params_are_one_line(kind, spec, message):
    with pytest.raises(SchemaError) as exc:
        build(KINDS.get(kind).spec, spec, f"data.{kind}")
    assert str(exc.value) == message


def test_a_bad_task_setting_in_params_yaml_names_the_file(project):
    raw = tiny_params()
    raw["data"]["mackey_glass"]["tau"] = -1
    write_params(project, raw)
    with pytest.raises(ParamsError) as exc:
        params.load("params.yaml")
    assert str(exc.value) == "params.yaml: data.mackey_glass.tau must be > 0, got -1"
