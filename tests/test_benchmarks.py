"""Benchmarks: seed 002's window-at-a-time rollout predicts exactly what the pipeline's batched rollout does, every
notebook loop and its pipeline counterpart run in quick mode, the pipeline side trains exactly as the train stage,
and the throughput kernel times a real training step."""

import dataclasses
import math
import shutil

import numpy as np
import pytest
import torch

from benchmarks import kernels, notebooks
from pipeline import params
from pipeline.stages import generate
from pipeline.stages import train as training
from pipeline.files import checkpoints, datasets
from pipeline.learning import models
from pipeline.files.artifacts import Paths
from pipeline.learning.runtime import configure
from pipeline.analysis import scoring

from conftest import tiny_params

QUICK = notebooks.notebook_experiments(quick=True)

# What each notebook's model has, counted as the notebooks print them (001: 41, 152, 162), or by hand.
NOTEBOOK_PARAMETERS = {
    "000 sincos": 8 + (1 * 8 + 8) + (8 * 8 + 8) + (8 + 1),  # h0, Wxh, Whh, Why
    "001 ramp": 41,
    "001 trajectory": 152,
    "001 trajectory nn.RNN": 162,
    "001 memory_short": (100 + 100 * 100 + 2 * 100) + 101,  # nn.RNN(1, 100) and fc
    "001 memory_long": (10 + 10 * 10 + 2 * 10) + 11,
    "002 sine": (11 * 10 + 10) + (11 + 1),  # i2h and i2o both read [x, h]
    "004 sine_004": 4 * 50 * (1 + 50 + 2) + 51,  # nn.LSTM(1, 50) and linear
}


@pytest.fixture(scope="module")
def quick_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    notebooks.generate_datasets(root, quick=True)
    return root


def quick_data(root, exp) -> datasets.Dataset:
    return datasets.load(Paths(root).dataset(exp.dataset))


def random_model(kind: str, data: datasets.Dataset) -> models.SequenceModel:
    configure(1, 0)
    return models.build(kind, models.Shape(input_size=data.meta["n_features"], output_size=data.y_train.shape[-1],
                                           window=data.meta["window"], hidden=8, layers=1))


# --- the window-at-a-time rollout ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind, dataset", [("elman", "sincos"), ("gru", "sincos"), ("concat", "sincos"),
                                           ("elman", "trajectory"), ("gru", "trajectory")])
def test_window_rollout_equals_batched_rollout(kind, dataset):
    data = generate.build(params.parse(tiny_params()), dataset)  # 10 held-out sequences, 1 or 2 features
    model = random_model(kind, data)
    context = data.scaled(data.rollout_context)
    steps = data.meta["rollout_steps"]
    by_window = notebooks.window_rollout(model.predict_next, context, steps)
    batched = scoring.rollout(models.NumpyPredictor(model), context, steps)
    assert by_window.shape == batched.shape == (10, steps, data.meta["n_features"])
    assert np.ptp(batched[:, 0], axis=0).min() > 1e-3  # sequences start in different places: the check has teeth
    np.testing.assert_allclose(by_window, batched, rtol=0, atol=1e-6)


def test_rollout_comparison_on_a_trained_model(quick_root):
    exp = next(e for e in QUICK if e.rollout)  # 002: the sine, 100 steps in quick mode
    notebooks.run_pipeline(exp, 0, quick_root)
    checkpoint = checkpoints.load(Paths(quick_root).checkpoint(exp.dataset, exp.variant))
    data = quick_data(quick_root, exp)
    result = kernels.rollout_comparison(checkpoint, data, repeats=2)
    assert (result["sequences"], result["steps"]) == (1, data.meta["rollout_steps"])
    assert set(result) == {"sequences", "steps", "batched_seconds", "fused", "as_written"}  # concat: both loops
    for loop in ("fused", "as_written"):
        assert result[loop]["max_abs_diff"] <= 1e-5  # numpy against torch forward, float32, 100 steps fed back
        assert result[loop]["window_seconds"] > 0 and result["batched_seconds"] > 0
        assert result[loop]["speedup"] == pytest.approx(result[loop]["window_seconds"] / result["batched_seconds"])


@pytest.mark.parametrize("layers", [1, 2])
def test_seed_002_forward_as_written_computes_the_concat_variant(layers):
    shape = models.Shape(input_size=1, output_size=1, window=9, hidden=5, layers=layers)
    torch.manual_seed(0)
    concat = models.build("concat", shape).eval()
    if layers > 1:
        with pytest.raises(ValueError, match="one layer"):
            kernels.Seed002Forward(concat)
        return
    x = torch.randn(4, 9, 1)
    with torch.no_grad():
        np.testing.assert_allclose(kernels.Seed002Forward(concat).predict_next(x), concat.predict_next(x),
                                   rtol=0, atol=1e-6)


# --- notebook loops and their pipeline counterparts ----------------------------------------------------------

def test_quick_mode_shrinks_data_and_epochs():
    full, quick = notebooks.benchmark_params(quick=False), notebooks.benchmark_params(quick=True)
    for exp in QUICK:
        assert exp.epochs <= notebooks.QUICK_EPOCHS and exp.quick
        small, big = generate.build(quick, exp.dataset), generate.build(full, exp.dataset)
        assert small.x_train.size < big.x_train.size / 3, exp.dataset
    assert quick.train.epochs == notebooks.QUICK_EPOCHS < full.train.epochs
    assert [dataclasses.replace(e, epochs=0, quick=False) for e in QUICK] == \
        [dataclasses.replace(e, epochs=0) for e in notebooks.notebook_experiments(quick=False)]


@pytest.mark.parametrize("exp", QUICK, ids=lambda e: e.name)
def test_notebook_loop_runs_in_quick_mode(quick_root, exp):
    result = notebooks.run_notebook(exp, 0, quick_data(quick_root, exp))
    assert result["seconds"] > 0
    assert math.isfinite(result["mse"]) and result["mse"] > 0
    assert result["epochs"] == notebooks.QUICK_EPOCHS
    assert result["parameters"] == NOTEBOOK_PARAMETERS[exp.name]
    assert (result["rollout_mse"] is not None) == exp.rollout
    if exp.rollout:
        assert math.isfinite(result["rollout_mse"])


def test_notebook_loop_trains_the_model(quick_root):
    """More epochs of seed 002's loop must move the test error: the loop really updates the weights."""
    exp = next(e for e in QUICK if e.notebook == "002")
    data = quick_data(quick_root, exp)
    short = notebooks.run_notebook(dataclasses.replace(exp, epochs=1), 0, data)
    longer = notebooks.run_notebook(dataclasses.replace(exp, epochs=30), 0, data)
    assert longer["mse"] < short["mse"] / 2


@pytest.mark.parametrize("exp", QUICK, ids=lambda e: e.name)
def test_pipeline_side_runs_in_quick_mode(quick_root, exp):
    result = notebooks.run_pipeline(exp, 0, quick_root)
    assert result["seconds"] > 0
    assert math.isfinite(result["mse"]) and result["mse"] > 0
    assert 1 <= result["epochs"] <= notebooks.QUICK_EPOCHS
    assert result["parameters"] > 0
    assert (result["rollout_mse"] is not None) == exp.rollout


def test_pipeline_side_trains_exactly_as_the_train_stage(quick_root, tmp_path):
    """The timed pipeline run must be the train stage's training: the same seed gives a byte-identical
    checkpoint through `training.run`, and a different seed gives different weights."""
    exp = next(e for e in QUICK if e.variant == "elman")
    notebooks.run_pipeline(exp, 3, quick_root)
    benchmarked = Paths(quick_root).checkpoint(exp.dataset, exp.variant).read_bytes()
    paths = Paths(tmp_path)
    paths.dataset(exp.dataset).parent.mkdir(parents=True)
    shutil.copy(Paths(quick_root).dataset(exp.dataset), paths.dataset(exp.dataset))
    stage_params = dataclasses.replace(notebooks.benchmark_params(quick=True), seed=3)
    training.run(stage_params, exp.dataset, exp.variant, paths)
    assert paths.checkpoint(exp.dataset, exp.variant).read_bytes() == benchmarked
    notebooks.run_pipeline(exp, 4, quick_root)
    assert Paths(quick_root).checkpoint(exp.dataset, exp.variant).read_bytes() != benchmarked


# --- throughput ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, parameters", [("elman", 4 + 8 + 20 + 5), ("concat", 24 + 5),
                                              (kernels.TORCH_RNN, 28 + 5)])
def test_throughput_times_a_training_step(kind, parameters):
    result = kernels.throughput(kind, hidden=4, batch=4, seq_len=5, steps=2, repeats=2)
    assert result["parameters"] == parameters
    assert 0 < result["seconds_per_update"] < 1
    assert result["sequence_steps_per_second"] == pytest.approx(4 * 5 / result["seconds_per_update"])


# --- the free-running objective's cost ------------------------------------------------------------------------

def test_objective_bench_times_both_phases(project):
    from benchmarks import objective_bench
    from pipeline import params as params_module

    costs = objective_bench.epoch_costs(params_module.load("params.yaml"), kinds=("rnn",), steps=(2,), epochs=1,
                                        repeats=1, replicas=2)
    rnn = costs["kinds"]["rnn"]
    assert costs["steps"] == [2] and set(rnn["runs"]) == {"0", "2"}
    assert rnn["teacher_forced"] > 0 and rnn["2"] > 0  # the phase costs something beyond its first epoch
    assert rnn["ratio_2"] == pytest.approx(rnn["2"] / rnn["teacher_forced"])


# --- the shared timing code (benchmarks/timing.py) ----------------------------------------------------------------

def test_alternating_runs_the_sides_in_turns_after_untimed_warm_up_rounds_and_takes_medians():
    from benchmarks import timing

    calls, clock = [], iter([9.0, 9.0, 3.0, 1.0, 1.0, 5.0, 2.0, 3.0])  # round 0 is the warm-up, then 3 rounds
    sides = {"a": lambda: calls.append("a") or "ra", "b": lambda: calls.append("b") or "rb"}
    medians, runs, results = timing.alternating(sides, 3, warm_up_rounds=1, clock=lambda fn: (next(clock), fn()))
    assert calls == ["a", "b"] * 4
    assert runs == {"a": [3.0, 1.0, 2.0], "b": [1.0, 5.0, 3.0]} and medians == {"a": 2.0, "b": 3.0}
    assert results == {"a": "ra", "b": "rb"}


def test_median_time_keeps_every_run_and_the_last_result():
    from benchmarks import timing

    counter = iter(range(5))
    median, runs, last = timing.median_time(lambda: next(counter), 5)
    assert len(runs) == 5 and median == sorted(runs)[2] and last == 4
