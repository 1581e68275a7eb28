"""params.yaml validation: the real file loads, and every bad input is one exact, one-line ParamsError."""

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline import params as params_module
from pipeline.errors import ParamsError, PipelineError
from pipeline.schema import SchemaError

from conftest import ROOT, tiny_params, write_params

DEFAULT_DATASETS = ("sine", "sincos", "ramp", "trajectory", "memory_short", "memory_long", "mackey_glass", "lorenz",
                    "adding")
DEFAULT_MODELS = ["persistence", "mean", "linear", "elman", "concat", "rnn", "lstm", "gru"]
FREE_RUNNING = {"rnn_fr": ("sincos", "ramp")}  # the variants with `datasets:` and the datasets they run on
KIND_CHOICES = "adding, csv, lorenz, mackey_glass, memory, ramp, sincos, sine, trajectory"
MODEL_CHOICES = "concat, elman, gru, linear, lstm, mean, persistence, rnn"


def load_error(project: Path, raw: dict) -> str:
    """Write `raw` as params.yaml in the project, load it by its relative name, and return the error message."""
    write_params(project, raw)
    with pytest.raises(ParamsError) as exc:
        params_module.load("params.yaml")
    message = str(exc.value)
    assert message == exc.value.message
    assert "\n" not in message, "a params error must be one line"
    return message


def load_text_error(project: Path, text: str) -> str:
    (project / "params.yaml").write_text(text)
    with pytest.raises(ParamsError) as exc:
        params_module.load("params.yaml")
    assert "\n" not in str(exc.value)
    return str(exc.value)


def mutated(change: Callable[[dict], object]) -> dict:
    raw = tiny_params()
    change(raw)
    return raw


# --- the good files ----------------------------------------------------------------------------------------

def test_default_params_yaml_loads():
    params = params_module.load(ROOT / "params.yaml")
    assert params.seed == 0
    assert params.device == "auto"
    assert params.datasets == DEFAULT_DATASETS
    assert list(params.models) == DEFAULT_MODELS + list(FREE_RUNNING)
    assert all(spec.kind == name and spec.hidden == 16 and spec.layers == 1
               for name, spec in params.models.items() if name in DEFAULT_MODELS)
    assert [m for m in params.models if params.free_running(m)] == list(FREE_RUNNING)
    assert {m: params.models[m].datasets for m in FREE_RUNNING} == FREE_RUNNING
    for ds in DEFAULT_DATASETS:
        # persistence needs a target with the inputs' features: the adding problem's is a sum of two channels
        expected = [m for m in DEFAULT_MODELS if not (ds == "adding" and m == "persistence")]
        assert params.models_on(ds) == expected + [m for m, on in FREE_RUNNING.items() if ds in on]
    assert params.variant("rnn_fr").kind == "rnn" and params.training("ramp", "rnn_fr").rollout_steps == 10
    assert params.data_kinds == {"sine": "sine", "sincos": "sincos", "ramp": "ramp", "trajectory": "trajectory",
                                 "memory_short": "memory", "memory_long": "memory", "mackey_glass": "mackey_glass",
                                 "lorenz": "lorenz", "adding": "adding", "stores": "csv",
                                 "trending": "csv"}  # the last two are examples of your own data, not listed
    sine = params.dataset("sine")
    assert (sine.dt, sine.train_until, sine.extrapolate_until, sine.window) == (0.1, 75.0, 175.0, 15)
    assert params.dataset("memory_short").lag == -5 and params.dataset("memory_long").lag == 0
    assert params.dataset("sincos").frequency_range == (0.5, 2.5)
    assert params.train.lr == 0.01 and params.train.epochs == 100
    assert params.evaluate.horizons == (1, 10, 100)


def test_tiny_profile_loads(project):
    params = params_module.load("params.yaml")
    assert params.device == "cpu"
    assert params.train.epochs == 2
    assert params.dataset("ramp").n_train == 6 and params.dataset("ramp").windows == "all"
    assert params.training("sine", "gru") == params.train  # no dataset's own training settings


def test_params_are_frozen(project):
    params = params_module.load("params.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.train.lr = 1.0  # type: ignore[misc]


def test_variant_inherits_shared_sizes_and_can_override_them(project):
    raw = tiny_params()
    raw["models"] = {"lstm": {}, "big": {"kind": "gru", "hidden": 32, "layers": 2}}
    write_params(project, raw)
    params = params_module.load("params.yaml")
    assert params.variant("lstm") == params_module.ModelSpec("lstm", "lstm", 4, 1)
    assert params.variant("big") == params_module.ModelSpec("big", "gru", 32, 2)


def test_train_settings_resolve_train_then_variant_then_dataset(project):
    """The documented order: `train:`, overridden by `models.<name>.train:`, overridden by `data.<name>.train:`;
    each sets only its own keys, and a pair with no override gets `train:` itself."""
    raw = tiny_params()
    raw["train"].update(epochs=7, lr=0.01, patience=3)
    raw["models"] = {"gru": {}, "gru_slow": {"kind": "gru", "train": {"lr": 0.001, "epochs": 9}}}
    raw["data"]["memory_short"]["train"] = {"epochs": 11, "schedule": "cosine"}
    write_params(project, raw)
    params = params_module.load("params.yaml")
    base = params.train
    assert params.training("sine", "gru") == base
    assert params.training("sine", "gru_slow") == dataclasses.replace(base, lr=0.001, epochs=9)
    assert params.training("memory_short", "gru") == dataclasses.replace(base, epochs=11, schedule="cosine")
    assert params.training("memory_short", "gru_slow") == dataclasses.replace(base, lr=0.001, epochs=11,
                                                                               schedule="cosine")
    with pytest.raises(ParamsError, match="no models.lstm entry"):
        params.training("sine", "lstm")


def test_forget_bias_reaches_gated_variants_only(project):
    raw = tiny_params()
    raw["model"]["forget_bias"] = 2.0
    raw["models"] = {"lstm": {}, "gru": {}, "rnn": {}, "lstm_far": {"kind": "lstm", "forget_bias": 3}}
    write_params(project, raw)
    params = params_module.load("params.yaml")
    assert params.variant("lstm").forget_bias == params.variant("gru").forget_bias == 2.0
    assert params.variant("lstm_far").forget_bias == 3.0
    assert params.variant("rnn").forget_bias is None  # a tanh RNN has no gate to bias


@pytest.mark.parametrize("text", ["lr: '1e-3'", "lr: 1e-3", "lr: 1.0e-3"])
def test_numeric_string_lr_is_accepted(project, text):
    """PyYAML reads `1e-3` (no dot) as a string; it must still mean 0.001."""
    params_text = (project / "params.yaml").read_text()
    assert "lr: 0.01" in params_text
    (project / "params.yaml").write_text(params_text.replace("lr: 0.01", text))
    lr = params_module.load("params.yaml").train.lr
    assert isinstance(lr, float)
    assert lr == 0.001


@pytest.mark.parametrize("lag", [-12, -1, 0, 11])
def test_memory_lag_at_the_bounds_is_accepted(project, lag):
    write_params(project, mutated(lambda r: r["data"]["memory_short"].update(lag=lag)))
    assert params_module.load("params.yaml").dataset("memory_short").lag == lag


@pytest.mark.parametrize("length, lag", [([4, 12], -4), ([4, 12], 3), ([1, 12], 0), ([12, 12], -12)])
def test_memory_length_range_is_accepted(project, length, lag):
    write_params(project, mutated(lambda r: r["data"]["memory_short"].update(length=length, lag=lag)))
    spec = params_module.load("params.yaml").dataset("memory_short")
    assert spec.length == tuple(length) and spec.lag == lag
    assert (spec.shortest, spec.longest) == tuple(length)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_good_device_strings_are_accepted(project, device):
    write_params(project, mutated(lambda r: r.update(device=device)))
    assert params_module.load("params.yaml").device == device


def test_csv_path_under_data_raw_is_accepted(project):
    raw = mutated(lambda r: r["data"].update(mine={"kind": "csv", "path": "data/raw/x.csv", "column": "v"}))
    write_params(project, raw)
    params = params_module.load("params.yaml")
    assert params.data_kinds["mine"] == "csv"
    assert params.dataset("mine").path == "data/raw/x.csv"


@pytest.mark.parametrize("section", [None, {}, {"datasets": [], "models": {}}, {"datasets": ["sincos"]}])
def test_a_free_running_section_without_models_is_accepted(section):
    """The retired section (its variants are `models:` entries now): absent, empty, or without models it is
    ignored, so older params files and `-S` narrowing still load."""
    raw = tiny_params()
    if section is not None:
        raw["free_running"] = section
    assert "rnn_fr" in params_module.parse(raw).models


# --- the bad files: one exact line each ----------------------------------------------------------------------

BAD = [
    ("unknown-key-typo", lambda r: r["model"].update(hiden=8),
     "params.yaml: unknown key 'model.hiden'; expected one of: forget_bias, hidden, layers"),
    ("unknown-top-level-key", lambda r: r.update(sed=1),
     "params.yaml: unknown key 'sed'; expected one of: seed, data_seed, device, threads, datasets, models, "
     "data, model, train, evaluate"),
    ("unknown-key-in-data-entry", lambda r: r["data"]["sine"].update(windw=5),
     "params.yaml: unknown key 'data.sine.windw'; expected one of: dt, extrapolate_until, frequency, kind, noise, "
     "normalise, train, train_until, val_fraction, window"),
    ("lr-not-a-number", lambda r: r["train"].update(lr="1e-3x"),
     "params.yaml: train.lr must be a number, got '1e-3x'"),
    ("lr-bool", lambda r: r["train"].update(lr=True),
     "params.yaml: train.lr must be a number, got True"),
    ("epochs-float", lambda r: r["train"].update(epochs=2.5),
     "params.yaml: train.epochs must be an integer, got 2.5"),
    ("epochs-string", lambda r: r["train"].update(epochs="2"),
     "params.yaml: train.epochs must be an integer, got '2'"),
    ("negative-dt", lambda r: r["data"]["sine"].update(dt=-0.5),
     "params.yaml: data.sine.dt must be > 0, got -0.5"),
    ("zero-dt", lambda r: r["data"]["sine"].update(dt=0.0),
     "params.yaml: data.sine.dt must be > 0, got 0.0"),
    ("zero-hidden", lambda r: r["model"].update(hidden=0),
     "params.yaml: model.hidden must be >= 1, got 0"),
    ("zero-hidden-in-variant", lambda r: r["models"].update(lstm={"hidden": 0}),
     "params.yaml: models.lstm.hidden must be >= 1, got 0"),
    ("unknown-dataset-kind", lambda r: r["data"]["sine"].update(kind="sinus"),
     f"params.yaml: data.sine.kind must be one of: {KIND_CHOICES}; got 'sinus'"),
    ("missing-dataset-kind", lambda r: r["data"]["sine"].pop("kind"),
     f"params.yaml: data.sine.kind must be one of: {KIND_CHOICES}; got None"),
    ("unknown-model-name", lambda r: r["models"].update(lstn={}),
     f"params.yaml: models.lstn is not a known model; choose from: {MODEL_CHOICES} "
     "(or give the entry a `kind:`), got 'lstn'"),
    ("unknown-model-kind", lambda r: r["models"].update(mine={"kind": "tcn"}),
     f"params.yaml: models.mine.kind is not a known model; choose from: {MODEL_CHOICES} "
     "(or give the entry a `kind:`), got 'tcn'"),
    ("no-models", lambda r: r.update(models={}),
     "params.yaml: models must name at least one model, e.g. `lstm: {}`"),
    ("dataset-without-data-entry", lambda r: r["datasets"].append("weather"),
     "params.yaml: datasets lists 'weather' but there is no data.weather entry; add one or choose from: "
     "adding, lorenz, mackey_glass, memory_long, memory_short, ramp, sincos, sine, stores, trajectory, trending"),
    ("dataset-listed-twice", lambda r: r.update(datasets=["sine", "ramp", "sine"]),
     "params.yaml: datasets lists a dataset twice: ['sine', 'ramp', 'sine']"),
    ("empty-datasets", lambda r: r.update(datasets=[]),
     "params.yaml: datasets must be a non-empty list of data.<name> entries, got []"),
    ("missing-section", lambda r: r.pop("train"),
     "params.yaml: missing key 'train'; add it (the README lists every setting)"),
    ("missing-required-csv-key", lambda r: r["data"].update(mine={"kind": "csv", "column": "v"}),
     "params.yaml: missing key 'data.mine.path'; add it (the README lists every setting)"),
    ("section-not-a-mapping", lambda r: r.update(train=5),
     "params.yaml: train must be a mapping of keys to values, got 5"),
    ("bad-device", lambda r: r.update(device="gpu"),
     "params.yaml: device must be auto, cpu, cuda, cuda:N or mps; got 'gpu'"),
    ("bad-device-cuda-colon", lambda r: r.update(device="cuda:"),
     "params.yaml: device must be auto, cpu, cuda, cuda:N or mps; got 'cuda:'"),
    ("negative-seed", lambda r: r.update(seed=-1),
     "params.yaml: seed must be an integer >= 0, got -1"),
    ("window-too-long", lambda r: r["data"]["sine"].update(window=500),
     "params.yaml: data.sine.window must leave at least 2 training windows in 200 points (train_until / dt), "
     "got 500"),
    ("extrapolate-equal-train", lambda r: r["data"]["sine"].update(extrapolate_until=20.0),
     "params.yaml: data.sine.extrapolate_until must be > train_until (20.0), got 20.0"),
    ("extrapolate-before-train", lambda r: r["data"]["sine"].update(extrapolate_until=10.0),
     "params.yaml: data.sine.extrapolate_until must be > train_until (20.0), got 10.0"),
    ("extrapolation-too-short-for-test-windows", lambda r: r["data"]["sine"].update(extrapolate_until=21.0),
     "params.yaml: data.sine.extrapolate_until must give more than window (15) points after train_until for "
     "the test windows"),
    ("val-fraction-one", lambda r: r["data"]["sine"].update(val_fraction=1),
     "params.yaml: data.sine.val_fraction must be < 1, got 1"),
    ("memory-lag-too-high", lambda r: r["data"]["memory_short"].update(lag=12),
     "params.yaml: data.memory_short.lag must index a sequence of length 12 (-12..11), got 12"),
    ("memory-lag-too-low", lambda r: r["data"]["memory_short"].update(lag=-13),
     "params.yaml: data.memory_short.lag must index a sequence of length 12 (-12..11), got -13"),
    ("memory-length-too-short", lambda r: r["data"]["memory_short"].update(length=1),
     "params.yaml: data.memory_short.length must be >= 2, got 1"),
    ("memory-length-range-reversed", lambda r: r["data"]["memory_short"].update(length=[12, 5]),
     "params.yaml: data.memory_short.length must be [min, max] with min <= max, got [12, 5]"),
    ("memory-length-range-from-zero", lambda r: r["data"]["memory_short"].update(length=[0, 5], lag=0),
     "params.yaml: data.memory_short.length must have min >= 1 in [min, max], got [0, 5]"),
    ("memory-length-range-of-three", lambda r: r["data"]["memory_short"].update(length=[2, 5, 9]),
     "params.yaml: data.memory_short.length must be one integer or a range [min, max] of two, got [2, 5, 9]"),
    ("memory-length-text", lambda r: r["data"]["memory_short"].update(length="long"),
     "params.yaml: data.memory_short.length must be an integer or a list of them, got 'long'"),
    ("memory-length-range-of-floats", lambda r: r["data"]["memory_short"].update(length=[2.5, 9]),
     "params.yaml: data.memory_short.length[0] must be an integer, got 2.5"),
    ("memory-lag-beyond-the-shortest-end", lambda r: r["data"]["memory_short"].update(length=[4, 12], lag=-5),
     "params.yaml: data.memory_short.lag must index the shortest sequence (length 4) (-4..3), got -5"),
    ("memory-lag-beyond-the-shortest-start", lambda r: r["data"]["memory_short"].update(length=[4, 12], lag=4),
     "params.yaml: data.memory_short.lag must index the shortest sequence (length 4) (-4..3), got 4"),
    ("range-reversed", lambda r: r["data"]["sincos"].update(frequency_range=[2.0, 1.0]),
     "params.yaml: data.sincos.frequency_range must be [low, high] with low <= high, got [2.0, 1.0]"),
    ("horizons-not-a-list", lambda r: r["evaluate"].update(horizons=5),
     "params.yaml: evaluate.horizons must be a list, got 5"),
    ("bad-data-name", lambda r: r["data"].update({"my data": {"kind": "sine"}}),
     "params.yaml: data has a bad name 'my data': use letters, digits and _ (it becomes a file name)"),
    ("csv-fractions-too-big",
     lambda r: r["data"].update(mine={"kind": "csv", "path": "data/raw/x.csv", "column": "v",
                                      "val_fraction": 0.5, "test_fraction": 0.5}),
     "params.yaml: data.mine.test_fraction plus val_fraction must be < 1, got 0.5 + 0.5"),
    ("csv-path-outside-data-raw",
     lambda r: r["data"].update(mine={"kind": "csv", "path": "/etc/passwd", "column": "v"}),
     "params.yaml: data.mine.path must be a file under data/raw/ (the folder DVC watches for this stage), "
     "got '/etc/passwd'"),
    ("unknown-schedule", lambda r: r["train"].update(schedule="step"),
     "params.yaml: train.schedule must be one of: constant, exponential, cosine; got 'step'"),
    ("decay-above-one", lambda r: r["train"].update(schedule="exponential", lr_decay=1.5),
     "params.yaml: train.lr_decay must be <= 1, got 1.5"),
    ("cosine-floor-above-lr", lambda r: r["train"].update(schedule="cosine", lr_min=0.5),
     "params.yaml: train.lr_min must be <= lr (0.01) for the cosine schedule, got 0.5"),
    ("unknown-key-in-variant-train", lambda r: r["models"].update(gru={"train": {"lrr": 0.1}}),
     "params.yaml: unknown key 'models.gru.train.lrr'; expected one of: batch_size, clip_norm, epochs, lr, "
     "lr_decay, lr_min, patience, replicas, replicas_per_network, rollout_epochs, rollout_lr, rollout_patience, "
     "rollout_steps, schedule"),
    ("bad-value-in-dataset-train", lambda r: r["data"]["sine"].update(train={"epochs": 0}),
     "params.yaml: data.sine.train.epochs must be >= 1, got 0"),
    ("dataset-train-not-a-mapping", lambda r: r["data"]["sine"].update(train=5),
     "params.yaml: data.sine.train must be a mapping of keys to values, got 5"),
    ("forget-bias-on-an-rnn", lambda r: r["models"].update(rnn={"forget_bias": 1.0}),
     "params.yaml: models.rnn.forget_bias applies to lstm and gru variants only; this one is a rnn"),
    ("forget-bias-not-a-number", lambda r: r["model"].update(forget_bias="high"),
     "params.yaml: model.forget_bias must be a number, got 'high'"),
    ("zero-replicas-per-network", lambda r: r["train"].update(replicas_per_network=0),
     "params.yaml: train.replicas_per_network must be >= 1, got 0"),
    ("retired-replica-groups", lambda r: r["train"].update(replica_groups=2),
     "params.yaml: train.replica_groups is retired: set train.replicas_per_network instead (the default 3 trains "
     "5 replicas as 0-2 and 3-4, as replica_groups: 2 did)"),
    ("retired-replica-groups-in-a-dataset", lambda r: r["data"]["sine"].update(train={"replica_groups": 1}),
     "params.yaml: data.sine.train.replica_groups is retired: set train.replicas_per_network instead (the "
     "default 3 trains 5 replicas as 0-2 and 3-4, as replica_groups: 2 did)"),
    ("variant-dataset-misspelt", lambda r: r["models"]["rnn_fr"].update(datasets=["ramp", "sincoss"]),
     "params.yaml: models.rnn_fr.datasets lists 'sincoss', which no data: entry names; choose from: adding, "
     "lorenz, mackey_glass, memory_long, memory_short, ramp, sincos, sine, stores, trajectory, trending"),
    ("variant-datasets-not-a-list", lambda r: r["models"]["rnn_fr"].update(datasets="ramp"),
     "params.yaml: models.rnn_fr.datasets must be a list of data.<name> entries, got 'ramp'"),
    ("free-running-on-memory", lambda r: r["models"]["rnn_fr"]["datasets"].append("memory_long"),
     "params.yaml: models.rnn_fr.datasets lists 'memory_long', a memory dataset, which cannot be rolled out (its "
     "target is not its next value), but this rnn trains on its rollouts (train.rollout_steps); remove it"),
    ("variant-dataset-twice", lambda r: r["models"]["rnn_fr"].update(datasets=["ramp", "ramp"]),
     "params.yaml: models.rnn_fr.datasets lists a dataset twice: ['ramp', 'ramp']"),
    ("free-running-baseline", lambda r: r["models"].update(
        lin_fr={"kind": "linear", "train": {"rollout_steps": 5}}),
     "params.yaml: models.lin_fr.train.rollout_steps applies to learned variants only; this one is a linear, a "
     "closed-form baseline with nothing to train on its rollouts"),
    ("retired-free-running-section", lambda r: r.update(free_running={"datasets": ["ramp"], "models": {
        "gru_fr": {"kind": "gru", "train": {"rollout_steps": 5}}}}),
     "params.yaml: free_running is no longer a section: move each of its models into `models:` with the datasets "
     "it runs on, e.g. `rnn_fr: {kind: rnn, datasets: [sincos, ramp], train: {rollout_steps: 10}}`"),
    ("free-running-bad-train-key", lambda r: r["models"]["rnn_fr"].update(train={"steps": 5}),
     "params.yaml: unknown key 'models.rnn_fr.train.steps'; expected one of: batch_size, clip_norm, "
     "epochs, lr, lr_decay, lr_min, patience, replicas, replicas_per_network, rollout_epochs, rollout_lr, "
     "rollout_patience, rollout_steps, schedule"),
]


@pytest.mark.parametrize("change, expected", [pytest.param(c, e, id=i) for i, c, e in BAD])
def test_bad_value_is_one_exact_line(project, change, expected):
    assert load_error(project, mutated(change)) == expected


def test_there_are_at_least_ten_bad_inputs():
    assert len(BAD) >= 10


def test_invalid_yaml(project):
    message = load_text_error(project, "seed: 0\ndevice: [cpu\n")
    assert message == "params.yaml is not valid YAML at line 3: expected ',' or ']', but got '<stream end>'"


def test_yaml_that_is_not_a_mapping(project):
    assert load_text_error(project, "- seed\n- device\n") == \
        "params.yaml: the file must be a mapping of keys to values, got ['seed', 'device']"


def test_empty_file_names_the_first_missing_key(project):
    assert load_text_error(project, "") == \
        "params.yaml: missing key 'seed'; add it (the README lists every setting)"


def test_infinite_lr(project):
    text = (project / "params.yaml").read_text().replace("lr: 0.01", "lr: .inf")
    assert load_text_error(project, text) == "params.yaml: train.lr must be a finite number, got inf"


def test_missing_file_names_the_path_as_given(project):
    with pytest.raises(ParamsError) as exc:
        params_module.load("other.yaml")
    assert str(exc.value) == "other.yaml not found; run from the project root (where params.yaml is)"


def test_message_starts_with_the_path_as_given(project):
    (project / "conf").mkdir()
    write_params(project / "conf", mutated(lambda r: r["model"].update(hidden=0)))
    with pytest.raises(ParamsError) as exc:
        params_module.load(Path("conf") / "params.yaml")
    assert str(exc.value) == "conf/params.yaml: model.hidden must be >= 1, got 0"


def test_params_error_is_a_pipeline_error_with_exit_status_1(project):
    write_params(project, mutated(lambda r: r.update(device="gpu")))
    with pytest.raises(PipelineError) as exc:
        params_module.load("params.yaml")
    assert isinstance(exc.value, ParamsError)
    assert exc.value.exit_code == 1


def test_parse_raises_schema_error_without_the_file_name():
    with pytest.raises(SchemaError) as exc:
        params_module.parse(mutated(lambda r: r["model"].update(hidden=0)))
    assert str(exc.value) == "model.hidden must be >= 1, got 0"


def test_lookup_of_unknown_dataset_and_model(project):
    params = params_module.load("params.yaml")
    with pytest.raises(ParamsError) as exc:
        params.dataset("weather")
    assert str(exc.value) == ("params.yaml: no data.weather entry; datasets are: "
                              "adding, lorenz, mackey_glass, memory_long, memory_short, ramp, sincos, sine, stores, trajectory, trending")
    with pytest.raises(ParamsError) as exc:
        params.variant("lstn")
    assert str(exc.value) == ("params.yaml: no models.lstn entry; models are: "
                              "persistence, mean, linear, elman, concat, rnn, lstm, gru, rnn_fr")


# --- known bugs: the correct behaviour, expected to fail until fixed ---------------------------------------

def test_negative_integer_dt_is_shown_as_written(project):
    assert load_error(project, mutated(lambda r: r["data"]["sine"].update(dt=-1))) == \
        "params.yaml: data.sine.dt must be > 0, got -1"


def test_list_as_dataset_kind_is_a_params_error(project):
    raw = mutated(lambda r: r["data"]["sine"].update(kind=["sine"]))
    assert load_error(project, raw) == \
        f"params.yaml: data.sine.kind must be one of: {KIND_CHOICES}; got ['sine']"


def test_nested_list_in_datasets_is_a_params_error(project):
    message = load_error(project, mutated(lambda r: r.update(datasets=[["sine"]])))
    assert message.startswith("params.yaml: datasets ")


def test_device_with_trailing_newline_is_rejected(project):
    assert load_error(project, mutated(lambda r: r.update(device="cpu\n"))) == \
        "params.yaml: device must be auto, cpu, cuda, cuda:N or mps; got 'cpu\\n'"
