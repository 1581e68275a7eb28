"""The evaluate stage: metric helpers on hand-checked numbers, the free-running rollout against a system whose
continuation is known exactly, and the stage's outputs (metrics JSON, CSVs, figure) on a tiny generated run."""

import csv
import json
import math

import numpy as np
import pytest
import torch

import pipeline.stages.generate
import pipeline.params
import pipeline.stages.train
from pipeline.stages import evaluate as evaluation
from pipeline.learning import models
from pipeline.files.artifacts import Paths, read_arrays
from pipeline.models.baselines import LinearAR, Persistence
from pipeline.errors import ArtifactError
from pipeline.analysis import scoring

from conftest import tiny_params, use_datasets, write_params


EVAL_KEYS = {"replicas", "deterministic", "test", "rollout", "spread", "per_replica", "median_replica"}

# The tiny sine continues for round((25 - 20) / 0.1) = 50 steps, so horizon 100 is longer than the rollout.
SINE_STEPS = 50
HORIZONS = [1, 10, 50, 100]


# --- the exact sine recurrence ------------------------------------------------------------------------------

def sine_recurrence(dt_hint: float = 0.1) -> tuple[LinearAR, float]:
    """A window-2 LinearAR holding x[t+1] = 2cos(dt) x[t] - x[t-1] with zero bias.

    The coefficient 2cos(dt) is rounded to float32 first and dt recomputed from it, so the float32 model holds
    the recurrence of *exactly* that dt: the only error left is float32 round-off, not a frequency mismatch."""
    c = np.float32(2 * np.cos(dt_hint))
    dt = float(np.arccos(np.float64(c) / 2))
    model = LinearAR(models.Shape(input_size=1, output_size=1, window=2, hidden=4, layers=1))
    model.weight = np.array([[-1.0, float(c)]])  # the flattened window holds the oldest value first
    model.bias = np.zeros(1)
    return model, dt


def sine_context(dt: float, phases) -> np.ndarray:
    """(M, 2, 1) float32 windows sin(dt * (k + phase)) for k = 0, 1."""
    k = np.arange(2)[None, :] + np.asarray(phases, dtype=np.float64)[:, None]
    return np.sin(dt * k)[..., None].astype(np.float32)


def test_rollout_continues_the_sine_recurrence_exactly():
    model, dt = sine_recurrence()
    steps = 1000
    out = scoring.rollout(model, sine_context(dt, [0.0]), steps)
    assert out.shape == (1, steps, 1)
    pred = out[0, :, 0].astype(np.float64)
    truth = np.sin(dt * np.arange(2, steps + 2))  # the context held k = 0, 1; the rollout starts at k = 2
    np.testing.assert_allclose(pred, truth, rtol=0, atol=1e-4)
    # The tolerance is far tighter than a one-step shift (about dt = 0.1), in either direction.
    assert np.abs(pred[1:] - truth[:-1]).max() > 50 * 1e-4
    assert np.abs(pred[:-1] - truth[1:]).max() > 50 * 1e-4


def test_rollout_is_batched_each_sequence_as_if_alone():
    model, dt = sine_recurrence()
    phases = [0.0, 3.5, 11.25, 40.0]
    steps = 300
    batched = scoring.rollout(model, sine_context(dt, phases), steps)
    assert batched.shape == (len(phases), steps, 1)
    for i, phase in enumerate(phases):
        alone = scoring.rollout(model, sine_context(dt, [phase]), steps)
        np.testing.assert_allclose(batched[i], alone[0], rtol=0, atol=1e-6)
        truth = np.sin(dt * (np.arange(2, steps + 2) + phase))
        np.testing.assert_allclose(batched[i, :, 0], truth, rtol=0, atol=1e-4)
    # the sequences really are different, so mixing them up would be caught
    assert np.abs(batched[0] - batched[1]).max() > 0.1


@pytest.mark.parametrize("kind", ["linear", "gru"])
def test_rollout_first_prediction_is_predict_next_then_slides(kind):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    shape = models.Shape(input_size=2, output_size=2, window=4, hidden=5, layers=1)
    if kind == "linear":
        model = LinearAR(shape)
        model.weight, model.bias = rng.normal(size=model.weight.shape) * 0.5, rng.normal(size=2)
    else:
        model = models.NumpyPredictor(models.build(kind, shape))
    context = rng.normal(size=(3, 4, 2)).astype(np.float32)
    original = context.copy()
    out = scoring.rollout(model, context, 3)
    assert out.shape == (3, 3, 2)
    assert np.array_equal(context, original)  # the caller's context is not modified
    first = model.predict_next(context)
    second = model.predict_next(np.concatenate([context[:, 1:], first[:, None]], axis=1))
    np.testing.assert_allclose(out[:, 0], first, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[:, 1], second, rtol=1e-6, atol=1e-6)
    assert not np.allclose(first, second)  # a rollout that repeated its first step would fail above


# --- metric helpers ------------------------------------------------------------------------------------------

def test_regression_metrics_by_hand():
    m = scoring.regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0]))
    assert set(m) == {"mse", "rmse", "mae"}
    assert m["mse"] == pytest.approx(5 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert m["mae"] == pytest.approx(1.0)
    # negative errors: squared and absolute, over every element of a 2-D array
    m = scoring.regression_metrics(np.array([[0.0, -2.0], [4.0, 1.0]]), np.zeros((2, 2)))
    assert m["mse"] == pytest.approx((0 + 4 + 16 + 1) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(21 / 4))
    assert m["mae"] == pytest.approx((0 + 2 + 4 + 1) / 4)
    assert scoring.regression_metrics(np.ones(4), np.ones(4)) == {"mse": 0.0, "rmse": 0.0, "mae": 0.0}


def test_horizon_rmse_per_step_by_hand():
    # (M=2 sequences, H=3 steps, F=2 features); prediction zero, so the error is -truth
    truth = np.array([
        [[1.0, 1.0], [3.0, 4.0], [2.0, 2.0]],
        [[1.0, 1.0], [0.0, 0.0], [2.0, -2.0]],
    ])
    errors = scoring.horizon_rmse(np.zeros_like(truth), truth)
    assert errors.shape == (3,)
    np.testing.assert_allclose(errors, [1.0, math.sqrt((9 + 16) / 4), 2.0])
    # the order of pred and truth does not matter; a constant offset of 0.5 gives 0.5 at every step
    np.testing.assert_allclose(scoring.horizon_rmse(truth, np.zeros_like(truth)), errors)
    np.testing.assert_allclose(scoring.horizon_rmse(truth + 0.5, truth), [0.5, 0.5, 0.5])


def test_valid_horizon_on_constructed_curves():
    threshold = 1.0
    assert scoring.valid_horizon(np.array([0.1, 0.2, 0.3, 0.4, 0.5]), threshold) == 5
    assert scoring.valid_horizon(np.array([0.0, 0.5, 0.9, 2.0, 0.1, 0.1]), threshold) == 3  # never revives
    assert scoring.valid_horizon(np.array([5.0, 0.0, 0.0]), threshold) == 0
    assert scoring.valid_horizon(np.array([0.0, np.nan, 0.0]), threshold) == 1  # NaN counts as above
    assert scoring.valid_horizon(np.array([np.nan]), threshold) == 0
    assert scoring.valid_horizon(np.array([0.2, np.inf]), threshold) == 1
    assert scoring.valid_horizon(np.array([1.0, 1.0]), threshold) == 2  # exactly at the tolerance is within


# --- score and the evaluate stage on a tiny generated dataset -----------------------------------------------

def load_params(project, models_: dict | None = None):
    raw = tiny_params()
    use_datasets(raw, ["sine", "memory_short"])
    raw["models"] = models_ or {"persistence": {}, "gru": {}}
    raw["data"]["sine"]["extrapolate_until"] = 25.0
    raw["evaluate"]["horizons"] = HORIZONS
    write_params(project, raw)
    return pipeline.params.load("params.yaml")


def read_csv(path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def persistence_by_hand(data) -> dict:
    """Persistence repeats the last value, computed here from the dataset arrays in original units."""
    test_err = data.x_test[:, -1].astype(np.float64) - data.y_test
    out = {"test": {"mse": np.mean(test_err ** 2), "rmse": math.sqrt(np.mean(test_err ** 2)),
                    "mae": np.mean(np.abs(test_err))}}
    if len(data.rollout_context):
        pred = np.repeat(data.rollout_context[:, -1:].astype(np.float64), data.rollout_target.shape[1], axis=1)
        err = pred - data.rollout_target
        per_step = np.sqrt(np.mean(err ** 2, axis=(0, 2)))
        threshold = 0.1 * np.std(data.x_train.astype(np.float64))  # tolerance 0.1 x the training inputs' std
        above = np.flatnonzero(per_step > threshold)
        out["rollout"] = {"mse": np.mean(err ** 2), "rmse": math.sqrt(np.mean(err ** 2)), "per_step": per_step,
                          "valid_horizon": int(above[0]) if len(above) else len(per_step)}
    return out


def test_score_sine_persistence_metrics_shape_and_values(project):
    params = load_params(project)
    data = pipeline.stages.generate.build(params, "sine")
    model = Persistence(models.Shape(1, 1, data.meta["window"], 4, 1))
    result = scoring.score(data, model, params.evaluate)
    m = result["metrics"]
    assert set(m) == {"test", "rollout"}
    assert set(m["test"]) == {"mse", "rmse", "mae"}
    assert set(m["rollout"]) == {"steps", "mse", "rmse", "rmse_at", "valid_horizon"}
    assert m["rollout"]["steps"] == SINE_STEPS
    assert list(m["rollout"]["rmse_at"]) == ["1", "10", "50"]  # 100 > 50 steps is left out
    json.dumps(m)  # plain JSON types only

    hand = persistence_by_hand(data)
    for key in ("mse", "rmse", "mae"):
        assert m["test"][key] == pytest.approx(hand["test"][key], rel=1e-5)
    assert m["rollout"]["mse"] == pytest.approx(hand["rollout"]["mse"], rel=1e-5)
    assert m["rollout"]["rmse"] == pytest.approx(hand["rollout"]["rmse"], rel=1e-5)
    for h in ("1", "10", "50"):
        assert m["rollout"]["rmse_at"][h] == pytest.approx(hand["rollout"]["per_step"][int(h) - 1], rel=1e-5)
    assert m["rollout"]["valid_horizon"] == hand["rollout"]["valid_horizon"]
    # in original units: the errors are not those of the scaled data
    assert m["test"]["mse"] != pytest.approx(np.mean((data.scaled(data.x_test[:, -1]) -
                                                       data.scaled(data.y_test)) ** 2), rel=1e-3)
    np.testing.assert_allclose(result["pred_test"], data.x_test[:, -1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result["horizon_errors"], hand["rollout"]["per_step"], rtol=1e-5, atol=1e-7)


def test_score_memory_has_no_rollout(project):
    params = load_params(project)
    data = pipeline.stages.generate.build(params, "memory_short")
    model = Persistence(models.Shape(1, 1, data.meta["window"], 4, 1))
    result = scoring.score(data, model, params.evaluate)
    assert set(result["metrics"]) == {"test"}
    assert "pred_rollout" not in result
    hand = persistence_by_hand(data)
    for key in ("mse", "rmse", "mae"):
        assert result["metrics"]["test"][key] == pytest.approx(hand["test"][key], rel=1e-5)


def test_run_writes_every_output_for_sine(project):
    params = load_params(project)
    data = pipeline.stages.generate.run(params, "sine")
    paths = Paths()
    for model in ("persistence", "gru"):
        pipeline.stages.train.run(params, "sine", model)
        returned = evaluation.run(params, "sine", model)
        metrics = json.loads(paths.eval_metrics("sine", model).read_text())
        assert metrics == returned
        replicas = 1 if model == "persistence" else params.train.replicas
        assert set(metrics) == EVAL_KEYS and metrics["replicas"] == replicas
        assert list(metrics["per_replica"]) == [str(r) for r in range(replicas)]
        assert set(metrics["spread"]) == {"test_rmse", "rollout_rmse", "valid_horizon"}
        assert set(metrics["test"]) == {"mse", "rmse", "mae"}
        assert set(metrics["rollout"]) == {"steps", "mse", "rmse", "rmse_at", "valid_horizon"}
        assert metrics["rollout"]["steps"] == SINE_STEPS
        assert list(metrics["rollout"]["rmse_at"]) == ["1", "10", "50"]
        assert 0 <= metrics["rollout"]["valid_horizon"] <= SINE_STEPS

        header, rows = read_csv(paths.horizon_curve("sine", model))
        assert header == ["step", "rmse", "rmse_min", "rmse_max"]
        assert [int(r["step"]) for r in rows] == list(range(1, SINE_STEPS + 1))
        assert all(float(r["rmse_min"]) <= float(r["rmse"]) <= float(r["rmse_max"]) for r in rows)
        if replicas == 1:
            for h, value in metrics["rollout"]["rmse_at"].items():
                assert float(rows[int(h) - 1]["rmse"]) == pytest.approx(value, rel=1e-5)

        header, rows = read_csv(paths.rollout_curve("sine", model))
        assert header == ["sequence", "feature", "step", "truth", "prediction", "prediction_min", "prediction_max"]
        window = data.meta["window"]
        assert len(rows) == window + SINE_STEPS  # the sine has one held-out sequence
        assert [int(r["step"]) for r in rows] == list(range(-window + 1, SINE_STEPS + 1))
        assert {r["sequence"] for r in rows} == {"0"} and {r["feature"] for r in rows} == {"sin(t)"}
        np.testing.assert_allclose([float(r["truth"]) for r in rows[:window]], data.rollout_context[0, :, 0],
                                   rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose([float(r["truth"]) for r in rows[window:]], data.rollout_target[0, :, 0],
                                   rtol=1e-6, atol=1e-7)
        assert all(r["prediction"] == r["prediction_min"] == r["prediction_max"] == "" for r in rows[:window])
        predictions = np.array([float(r["prediction"]) for r in rows[window:]])
        assert np.isfinite(predictions).all()
        assert all(float(r["prediction_min"]) <= float(r["prediction"]) <= float(r["prediction_max"])
                   for r in rows[window:])
        if model == "persistence":
            np.testing.assert_allclose(predictions, data.rollout_context[0, -1, 0], rtol=1e-5, atol=1e-6)
            hand = persistence_by_hand(data)
            assert metrics["test"]["mse"] == pytest.approx(hand["test"]["mse"], rel=1e-5)
            assert metrics["rollout"]["rmse"] == pytest.approx(hand["rollout"]["rmse"], rel=1e-5)
            assert metrics["rollout"]["valid_horizon"] == hand["rollout"]["valid_horizon"]

        arrays = read_arrays(paths.predictions("sine", model))  # what compare draws the pair's figure from
        assert set(arrays) == {"pred_test", "pred_rollout", "horizon_errors", "threshold", "median_replica"}
        assert arrays["pred_test"].shape == (replicas,) + data.y_test.shape
        median = int(arrays["median_replica"])
        assert median == metrics["median_replica"]
        np.testing.assert_allclose(arrays["pred_rollout"][median, 0, :, 0], predictions, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(arrays["pred_rollout"][:, 0, :, 0].min(axis=0),
                                   [float(r["prediction_min"]) for r in rows[window:]], rtol=1e-6, atol=1e-7)
        _, horizon = read_csv(paths.horizon_curve("sine", model))
        np.testing.assert_allclose(arrays["horizon_errors"][median], [float(r["rmse"]) for r in horizon], rtol=1e-6)
        for r, row in metrics["per_replica"].items():  # every replica scored on the full rollout
            errors = arrays["horizon_errors"][int(r)]
            assert row["rollout_rmse"] == pytest.approx(float(np.sqrt(np.mean(errors ** 2))), rel=1e-5)
            assert row["valid_horizon"] == scoring.valid_horizon(errors, float(arrays["threshold"]))
        assert arrays["threshold"].shape == () and arrays["threshold"] > 0
        assert not paths.pair_figure("sine", model).exists()  # evaluate draws nothing


def test_run_writes_every_output_for_memory(project):
    params = load_params(project)
    data = pipeline.stages.generate.run(params, "memory_short")
    paths = Paths()
    pipeline.stages.train.run(params, "memory_short", "persistence")
    returned = evaluation.run(params, "memory_short", "persistence")
    metrics = json.loads(paths.eval_metrics("memory_short", "persistence").read_text())
    assert metrics == returned
    assert set(metrics) == EVAL_KEYS - {"rollout"} and metrics["deterministic"] is True
    assert set(metrics["spread"]) == {"test_rmse"} and metrics["replicas"] == 1
    assert set(metrics["test"]) == {"mse", "rmse", "mae"}
    hand = persistence_by_hand(data)
    assert metrics["test"]["mse"] == pytest.approx(float(np.mean((data.x_test[:, -1].astype(np.float64)
                                                                  - data.y_test) ** 2)), rel=1e-5)
    assert metrics["test"]["mae"] == pytest.approx(hand["test"]["mae"], rel=1e-5)

    for path, header in ((paths.horizon_curve("memory_short", "persistence"), "step,rmse,rmse_min,rmse_max"),
                         (paths.rollout_curve("memory_short", "persistence"),
                          "sequence,feature,step,truth,prediction,prediction_min,prediction_max")):
        assert path.read_text().splitlines() == [header]  # a header and nothing else
    arrays = read_arrays(paths.predictions("memory_short", "persistence"))
    assert set(arrays) == {"pred_test", "median_replica"} and arrays["pred_test"].shape == (1,) + data.y_test.shape


def test_the_dataset_stage_scores_every_model_of_the_dataset_as_pair_by_pair(project):
    """`evaluate DATASET` (the DVC stage) scores each model the dataset has, free-running variants included,
    and writes exactly what evaluating each pair on its own writes; models of other datasets are left out."""
    raw = tiny_params()
    use_datasets(raw, ["sincos", "memory_short"])
    raw["models"] = {"persistence": {}, "linear": {},
                     "rnn_fr": {"kind": "rnn", "datasets": ["sincos"], "train": {"rollout_steps": 2}}}
    write_params(project, raw)
    params = pipeline.params.load("params.yaml")
    paths = Paths()
    for dataset in ("sincos", "memory_short"):
        pipeline.stages.generate.run(params, dataset)
        for model in params.models_on(dataset):
            pipeline.stages.train.run(params, dataset, model)
    outputs = lambda ds, m: [p.read_bytes() for p in (paths.eval_metrics(ds, m), paths.rollout_curve(ds, m),
                                                       paths.horizon_curve(ds, m), paths.predictions(ds, m))]
    one_by_one = {m: (evaluation.run(params, "sincos", m), outputs("sincos", m)) for m in params.models_on("sincos")}
    for m in one_by_one:
        for path in (paths.eval_metrics("sincos", m), paths.predictions("sincos", m)):
            path.unlink()

    returned = evaluation.run_dataset(params, "sincos")
    assert list(returned) == ["persistence", "linear", "rnn_fr"]
    for m, (metrics, files) in one_by_one.items():
        assert returned[m] == metrics and outputs("sincos", m) == files
    assert list(evaluation.run_dataset(params, "memory_short")) == ["persistence", "linear"]


def test_the_dataset_stage_writes_nothing_when_a_checkpoint_is_missing(project):
    params = load_params(project, {"persistence": {}, "linear": {}})
    pipeline.stages.generate.run(params, "sine")
    pipeline.stages.train.run(params, "sine", "persistence")  # linear is never trained
    with pytest.raises(ArtifactError, match="linear.npz does not exist"):
        evaluation.run_dataset(params, "sine")
    assert not (project / "metrics" / "eval").exists() and not (project / "data" / "predictions").exists()


# --- medians over replicas -------------------------------------------------------------------------------------

def replica_result(test_rmse: float, rollout_rmse: float | None = None, valid: int = 0) -> dict:
    metrics = {"test": {"mse": test_rmse ** 2, "rmse": test_rmse, "mae": test_rmse / 2}}
    if rollout_rmse is not None:
        metrics["rollout"] = {"steps": 10, "mse": None if math.isinf(rollout_rmse) else rollout_rmse ** 2,
                              "rmse": None if math.isinf(rollout_rmse) else rollout_rmse,
                              "rmse_at": {"1": rollout_rmse / 10}, "valid_horizon": valid}
    return {"metrics": metrics}


def test_combine_takes_medians_and_spreads_over_replicas():
    results = [replica_result(t, r, v) for t, r, v in [(0.3, 0.9, 2), (0.1, 0.2, 8), (0.2, 0.5, 5),
                                                         (0.5, 0.4, 4), (0.4, 0.1, 9)]]
    m = scoring.combine(results, deterministic=False)
    assert m["replicas"] == 5 and m["deterministic"] is False
    assert m["test"] == {"mse": 0.09, "rmse": 0.3, "mae": 0.15}
    assert m["rollout"]["rmse"] == 0.4 and m["rollout"]["mse"] == 0.16 and m["rollout"]["valid_horizon"] == 5
    assert m["rollout"]["rmse_at"] == {"1": 0.04}
    assert m["spread"]["test_rmse"] == {"min": 0.1, "q1": 0.2, "q3": 0.4, "max": 0.5}
    assert m["spread"]["rollout_rmse"] == {"min": 0.1, "q1": 0.2, "q3": 0.5, "max": 0.9}
    assert m["spread"]["valid_horizon"] == {"min": 2, "q1": 4, "q3": 8, "max": 9}
    assert m["per_replica"]["3"] == {"test_mse": 0.25, "test_rmse": 0.5, "test_mae": 0.25, "rollout_mse": 0.4 ** 2,
                                     "rollout_rmse": 0.4, "valid_horizon": 4}
    assert m["median_replica"] == 3  # its rollout RMSE, 0.4, is the median
    json.dumps(m)


def test_median_replica_for_even_counts_ties_and_failed_rollouts():
    even = [replica_result(0.1, r) for r in (0.4, 0.1, 0.3, 0.2)]
    assert scoring.median_replica(even) == 3  # 0.2, the lower middle one of 0.1 0.2 0.3 0.4
    tied = [replica_result(0.1, 0.5), replica_result(0.1, 0.5), replica_result(0.1, 0.5)]
    assert scoring.median_replica(tied) == 1
    failed = [replica_result(0.1, math.inf), replica_result(0.1, 0.3), replica_result(0.1, math.inf)]
    assert scoring.median_replica(failed) == 0  # a non-finite rollout counts as the worst: 0.3, inf, inf
    m = scoring.combine(failed, deterministic=False)
    assert m["rollout"]["rmse"] is None and m["spread"]["rollout_rmse"]["min"] == 0.3
    no_rollout = [replica_result(t) for t in (0.3, 0.1, 0.2)]
    assert scoring.median_replica(no_rollout) == 2 and "rollout" not in scoring.combine(no_rollout, True)


def test_one_replica_has_the_same_schema_with_a_point_spread():
    m = scoring.combine([replica_result(0.2, 0.4, 3)], deterministic=True)
    assert m["test"]["rmse"] == 0.2 and m["rollout"]["valid_horizon"] == 3
    assert m["spread"]["rollout_rmse"] == {"min": 0.4, "q1": 0.4, "q3": 0.4, "max": 0.4}
    five = scoring.combine([replica_result(0.2, 0.4, 3)] * 5, deterministic=False)
    assert set(m) == set(five) and set(m["per_replica"]["0"]) == set(five["per_replica"]["4"])
