"""Window normalisation (`data.<name>.normalise`, issue 31): the round trip, no look-ahead, each rollout step's own
statistics, numpy (evaluation) against torch (training), the params, and the trending panel it is for."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, real_params, tiny_params, use_datasets, write_params
from pipeline import params as params_module
from pipeline.analysis import scoring
from pipeline.errors import ParamsError
from pipeline.files.artifacts import Paths
from pipeline.learning import normalisation as torch_normalisation
from pipeline.learning.replicas import ReplicaStack
from pipeline.files.checkpoints import Checkpoint, Shape
from pipeline.models import inference, normalisation
from pipeline.stages import evaluate, generate, train

MODES = [m for m in normalisation.MODES if m != "none"]
RNG = np.random.default_rng(7)
X = (RNG.normal(size=(6, 9, 2)) * 3 + np.linspace(0, 5, 9)[None, :, None]).astype(np.float32)  # trending windows
LENGTHS = np.array([9, 4, 1, 9, 2, 7])
Y = RNG.normal(size=(6, 2)).astype(np.float32)


def test_the_params_list_the_modes_the_code_implements():
    assert params_module.NORMALISATIONS == normalisation.MODES


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
def test_normalising_then_mapping_back_is_the_identity(mode, lengths):
    """A target put in its window's units and mapped back is itself; so is every real step of the window (its
    first differences summed from its first value, for `difference`)."""
    z, shift, scale = normalisation.forward(X, lengths, mode)
    np.testing.assert_allclose(normalisation.inverse(normalisation.targets(Y, shift, scale), shift, scale), Y,
                               rtol=1e-6, atol=1e-6)
    ends = np.full(len(X), X.shape[1]) if lengths is None else lengths
    real = np.arange(X.shape[1])[None, :] < ends[:, None]
    if mode == "difference":
        rebuilt = X[:, :1] + np.cumsum(z, axis=1)
    else:
        rebuilt = z * scale + shift
    np.testing.assert_allclose(rebuilt[real], X[real], rtol=1e-5, atol=1e-5)
    assert np.all(z[~real] == 0)  # padding reads 0, never a statistic of it


@pytest.mark.parametrize("mode", MODES)
def test_a_windows_statistics_never_see_its_target_or_its_padding(mode):
    """No look-ahead: what comes after a window's last real step (its target, the padding of a short window)
    cannot move the statistics its prediction is mapped back with."""
    before = normalisation.statistics(X, LENGTHS, mode)
    later = X.copy()
    for row, length in enumerate(LENGTHS):
        later[row, length:] = 1e6  # the padding, where the window's future would be
    after = normalisation.statistics(later, LENGTHS, mode)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


class MeanOfWindow:
    """A stand-in model that predicts 0 in its window's units: the window's own shift (its mean, median, or for
    `difference` its last value plus no change)."""

    def predict_next(self, x, lengths=None):
        return np.zeros((len(x), x.shape[2]), np.float32)


@pytest.mark.parametrize("mode", MODES)
def test_each_rollout_step_maps_back_with_the_statistics_of_its_own_window(mode):
    """Along a rollout the model sees the window it is fed at that step; the prediction is that window's shift,
    computed here from the fed-back window by hand, step after step."""
    context, steps = X[:, :5], 4
    rolled = scoring.rollout(normalisation.Normalised(MeanOfWindow(), mode), context, steps)
    window = context.astype(np.float64)
    for k in range(steps):
        if mode == "window":
            expected = window.mean(axis=1)
        elif mode == "window_robust":
            expected = np.median(window, axis=1)
        else:
            expected = window[:, -1]
        np.testing.assert_allclose(rolled[:, k], expected, rtol=1e-6, atol=1e-6)
        window = np.concatenate([window[:, 1:], rolled[:, k:k + 1].astype(np.float64)], axis=1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
def test_torch_normalises_as_numpy_does(mode, lengths):
    z, shift, scale = normalisation.forward(X, lengths, mode)
    tz, tshift, tscale = torch_normalisation.forward(torch.from_numpy(X),
                                                     None if lengths is None else torch.from_numpy(lengths), mode)
    np.testing.assert_allclose(tz.numpy(), z, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tshift.numpy(), shift, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tscale.numpy(), scale, rtol=1e-6, atol=1e-6)
    pred = RNG.normal(size=(6, 2)).astype(np.float32)
    np.testing.assert_allclose(torch_normalisation.inverse(torch.from_numpy(pred), tshift, tscale).numpy(),
                               normalisation.inverse(pred, shift, scale), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["gru", "elman"])
@pytest.mark.parametrize("mode", MODES)
def test_a_trained_model_predicts_the_same_in_training_and_in_evaluation(kind, mode):
    """The replica stack (torch, what trains) and the checkpoint's numpy forward behind Normalised (what the
    evaluate stage runs) give the same predictions under each mode, to 1e-6 of the data's scale."""
    shape = Shape(input_size=2, output_size=2, window=9, hidden=5, layers=1)
    stack = ReplicaStack(kind, shape, [3, 4], normalise=mode)
    with torch.no_grad():
        trained = stack.predict_next(torch.from_numpy(X).expand(2, *X.shape), [0, 1]).numpy()
    checkpoint = Checkpoint(kind, shape, [stack.state_arrays(r) for r in range(2)], ROOT)
    for r in range(2):
        evaluated = normalisation.Normalised(inference.restore(checkpoint, r), mode).predict_next(X)
        np.testing.assert_allclose(evaluated, trained[r], rtol=1e-5, atol=1e-6)


# --- params ---------------------------------------------------------------------------------------------------

def test_a_users_csv_is_normalised_by_default_and_the_synthetic_tasks_are_not():
    loaded = params_module.load(ROOT / "params.yaml")
    assert loaded.normalise("trending") == loaded.normalise("stores") == params_module.DEFAULT_NORMALISE["csv"]
    assert all(loaded.normalise(ds) == "none" for ds in loaded.datasets if loaded.data_kinds[ds] != "csv")


@pytest.mark.parametrize("entry, value, expected", [
    ("ramp", "windows", "params.yaml: data.ramp.normalise must be one of: none, window, window_robust, "
                        "difference; got 'windows'"),
    ("memory_short", "window", "params.yaml: data.memory_short.normalise applies to data whose target is its "
                               "next value; a memory dataset's is not, so use none (got 'window')"),
])
def test_a_bad_normalise_is_one_line(project, entry, value, expected):
    raw = tiny_params()
    raw["data"][entry]["normalise"] = value
    write_params(project, raw)
    with pytest.raises(ParamsError) as info:
        params_module.load("params.yaml")
    assert str(info.value) == expected


def test_a_synthetic_dataset_file_is_unchanged_by_the_setting_it_does_not_use(project):
    """`none` writes no key, so the notebook tasks' dataset files (and everything after them) stay the bytes
    they were; another mode travels with the data, for the train and evaluate stages to read."""
    raw = use_datasets(tiny_params(), ["ramp"])
    write_params(project, raw)
    plain = generate.build(params_module.load("params.yaml"), "ramp")
    assert "normalise" not in plain.meta and plain.normalise == "none"
    raw["data"]["ramp"]["normalise"] = "window"
    write_params(project, raw)
    assert generate.build(params_module.load("params.yaml"), "ramp").normalise == "window"


# --- the trending panel it is for --------------------------------------------------------------------------------

def test_the_committed_trending_panel_is_what_its_script_writes(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "trending_panel.py"), "-o", str(tmp_path / "p.csv")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p.csv").read_bytes() == (ROOT / "data" / "raw" / "trending_panel.csv").read_bytes()


def trending_results(project, mode: str | None) -> dict[str, dict]:
    """Every default model on the trending panel, through the stages, with 3 replicas; the eval metrics."""
    raw = use_datasets(real_params(), ["trending"])
    raw["device"], raw["train"]["replicas"] = "cpu", 3
    if mode is not None:
        raw["data"]["trending"]["normalise"] = mode
    write_params(project, raw)
    (project / "data" / "raw" / "trending_panel.csv").write_bytes(
        (ROOT / "data" / "raw" / "trending_panel.csv").read_bytes())
    loaded = params_module.load("params.yaml")
    generate.run(loaded, "trending")
    for model in loaded.models_on("trending"):
        train.run(loaded, "trending", model)
    evaluate.run_dataset(loaded, "trending")
    return {m: json.loads(Paths().eval_metrics("trending", m).read_text()) for m in loaded.models_on("trending")}


@pytest.mark.slow
def test_on_a_trending_panel_the_default_beats_persistence_and_none_does_not(project):
    """The issue's case: with the default the best learned kind beats persistence in every replica, one step
    ahead (test RMSE) and in the backtest (MASE); read as the training part scaled them (`none`), every learned
    kind is worse than persistence in every replica."""
    def replicas(ev, key):
        return [row[key] for row in ev["per_replica"].values()]

    default = trending_results(project, None)
    reference = default["persistence"]
    learned = {m: ev for m, ev in default.items() if m in ("elman", "concat", "rnn", "lstm", "gru")}
    best = min(learned, key=lambda m: learned[m]["test"]["rmse"])
    assert all(v < reference["test"]["rmse"] for v in replicas(learned[best], "test_rmse")), best
    assert all(v < reference["rollout"]["mase"] for v in replicas(learned[best], "rollout_mase")), best
    plain = trending_results(project, "none")
    assert all(v > plain["persistence"]["test"]["rmse"]
               for m in learned for v in replicas(plain[m], "test_rmse"))
