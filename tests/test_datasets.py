"""Dataset generators, the dataset file format and CSV loading.

Every registered kind is generated from a small spec and checked for consistent shapes, determinism, held-out
data that never appears in training, scaling statistics from the training inputs only and, where the data can
be continued, a rollout target equal to the true continuation computed here independently.
"""

import io
import json
import math
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.files import datasets
from pipeline.stages import generate as generate_stage
from pipeline import params as params_module
from pipeline.errors import ArtifactError, DataError, ParamsError
from pipeline.data import user_data
from pipeline.data.generators import KINDS
from pipeline.schema import SchemaError, build

from conftest import tiny_params, write_params

CSV_PATH = "data/raw/series.csv"
CSV_LENGTH = 120

# One small spec per registered kind (the keys of a `data.<name>` entry, without `kind`).
SPECS = {
    "sine": {"dt": 0.1, "frequency": 1.5, "train_until": 20.0, "extrapolate_until": 30.0, "window": 15,
             "val_fraction": 0.2, "noise": 0.0},
    "sincos": {"n_train": 40, "n_val": 10, "n_test": 10, "length": 20, "n_terms": 4,
               "frequency_range": [0.5, 2.5], "weight_range": [0.5, 2.0], "rollout_steps": 10},
    "ramp": {"n_train": 60, "n_val": 10, "n_test": 12, "length": 5, "rollout_steps": 10},
    "trajectory": {"n_train": 60, "n_val": 10, "n_test": 12, "length": 5, "intercept_scale": 5.0,
                   "rollout_steps": 10},
    "memory": {"lag": -5, "length": 12, "n_train": 60, "n_val": 10, "n_test": 12},
    "csv": {"path": CSV_PATH, "column": "value", "window": 10, "val_fraction": 0.2, "test_fraction": 0.2},
    "mackey_glass": {"transient": 100.0, "samples": 200, "window": 8, "sample_every": 6.0, "rollout_steps": 20},
    "lorenz": {"transient": 5.0, "samples": 300, "window": 5, "rollout_steps": 20},
    "adding": {"length": 12, "n_train": 60, "n_val": 10, "n_test": 12},
}
# A CSV series is split in time order, and the chaotic systems are integrated from fixed initial values: no randomness
RANDOM_KINDS = [k for k in SPECS if k not in ("csv", "mackey_glass", "lorenz")]


def csv_series(n: int = CSV_LENGTH) -> np.ndarray:
    """Distinct values (a trend plus a wave), so that every value identifies its position in the series."""
    k = np.arange(n)
    return 0.25 * k + np.sin(0.7 * k)


def write_csv(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"2020-01-{i:03d},{float(v)!r}\n" for i, v in enumerate(values))
    path.write_text("date,value\n" + rows)


def make_spec(kind: str, **overrides):
    return build(KINDS.get(kind).spec, {**SPECS[kind], **overrides}, f"data.{kind}")


def generate(kind: str, seed: int = 0, **overrides) -> datasets.Dataset:
    return KINDS.get(kind).generate(make_spec(kind, **overrides), kind, np.random.default_rng(seed))


@pytest.fixture
def in_project(project):
    """The project folder as working directory, with the CSV series the csv kind reads."""
    write_csv(project / CSV_PATH, csv_series())
    return project


def rows(array: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.ascontiguousarray(array)}


# --- every kind ----------------------------------------------------------------------------------------------

def test_every_registered_kind_is_covered():
    assert sorted(SPECS) == KINDS.names()


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_shapes_are_consistent(in_project, kind):
    data = generate(kind)
    meta = data.meta
    n_features, window = meta["n_features"], meta["window"]
    for split in datasets.SPLITS:
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        assert x.dtype == np.float32 and y.dtype == np.float32
        assert x.ndim == 3 and x.shape[1:] == (window, n_features), split
        assert y.shape == (len(x), 1 if kind == "adding" else n_features), split  # adding: one sum
        assert len(x) == meta["sizes"][split] > 0
    assert data.rollout_context.ndim == 3 and data.rollout_target.ndim == 3
    m = meta["rollout_sequences"]
    assert data.rollout_context.shape == (m, window, n_features)
    assert data.rollout_target.shape == (m, meta["rollout_steps"], n_features)
    assert data.has_rollout == meta["autoregressive"] == (kind not in ("memory", "adding"))
    assert len(meta["features"]) == n_features
    assert meta["kind"] == kind and meta["name"] == kind


@pytest.mark.parametrize("kind, sizes", [
    ("sincos", (40, 10, 10)), ("ramp", (60, 10, 12)), ("trajectory", (60, 10, 12)), ("memory", (60, 10, 12)),
])
def test_split_sizes_follow_the_spec(kind, sizes):
    data = generate(kind)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == sizes


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_same_seed_gives_bitwise_equal_data(in_project, kind):
    first, second = generate(kind, seed=7), generate(kind, seed=7)
    for name in datasets.ARRAYS:
        a, b = getattr(first, name), getattr(second, name)
        assert a.shape == b.shape and a.tobytes() == b.tobytes(), name
    assert first.meta == second.meta


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_another_seed_gives_different_data(kind):
    first, second = generate(kind, seed=0), generate(kind, seed=1)
    assert not np.array_equal(first.x_train, second.x_train)  # noise-free sine: a different validation split
    if kind != "sine":  # noise-free sine's test part is the fixed continuation of sin(t)
        assert not np.array_equal(first.x_test, second.x_test)


def test_noisy_sine_depends_on_the_seed_everywhere():
    first, second = generate("sine", seed=0, noise=0.1), generate("sine", seed=1, noise=0.1)
    assert not np.array_equal(first.x_test, second.x_test)
    assert not np.array_equal(first.rollout_target, second.rollout_target)
    again = generate("sine", seed=0, noise=0.1)
    assert first.rollout_target.tobytes() == again.rollout_target.tobytes()


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_no_held_out_window_is_a_training_window(in_project, kind):
    data = generate(kind)
    train = rows(data.x_train)
    assert len(train) == len(data.x_train), "training windows repeat: the check below would be meaningless"
    assert not rows(data.x_val) & train
    assert not rows(data.x_test) & train
    assert not rows(data.x_val) & rows(data.x_test)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_scaling_statistics_come_from_training_inputs_only(in_project, kind):
    data = generate(kind)
    flat = data.x_train.reshape(-1, data.meta["n_features"]).astype(np.float64)
    np.testing.assert_allclose(data.meta["scale_mean"], flat.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data.meta["scale_std"], flat.std(axis=0), rtol=1e-5, atol=1e-6)
    scaled = data.scaled(data.x_train).reshape(flat.shape)
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(data.unscaled(data.scaled(data.y_test)), data.y_test, rtol=1e-5, atol=1e-5)


def test_scaling_ignores_held_out_data():
    x_train = np.array([[[0.0], [2.0]], [[4.0], [6.0]]])
    far = np.full((2, 2, 1), 100.0)
    splits = {"train": (x_train, np.ones((2, 1))), "val": (far, np.ones((2, 1))), "test": (far, np.ones((2, 1)))}
    data = datasets.make_dataset("toy", "toy", ["v"], splits, None)
    assert data.meta["scale_mean"] == [3.0]
    assert data.meta["scale_std"] == [pytest.approx(math.sqrt(5.0))]


def test_constant_feature_is_left_unscaled():
    x_train = np.stack([np.full((3, 1), 2.0), np.arange(3.0)[:, None]], axis=-1).reshape(1, 3, 2)
    x_train = np.concatenate([x_train, x_train + [0.0, 1.0]])
    splits = {s: (x_train, x_train[:, -1]) for s in datasets.SPLITS}
    data = datasets.make_dataset("toy", "toy", ["a", "b"], splits, None)
    assert data.meta["scale_std"][0] == 1.0
    assert np.isfinite(data.scaled(x_train)).all()


def test_build_uses_the_params_data_seed_and_spec(project):
    raw = tiny_params()
    raw["data_seed"], raw["seed"] = 3, 5  # the training seed plays no part in the data
    params = params_module.parse(raw)
    data = generate_stage.build(params, "ramp")
    direct = KINDS.get("ramp").generate(params.dataset("ramp"), "ramp", np.random.default_rng(3))
    for name in datasets.ARRAYS:
        assert getattr(data, name).tobytes() == getattr(direct, name).tobytes(), name
    assert len(data.x_train) == raw["data"]["ramp"]["n_train"] * raw["data"]["ramp"]["rollout_steps"]  # windows: all
    assert generate_stage.build(params, "ramp").x_train.tobytes() == data.x_train.tobytes()


def test_build_of_every_default_dataset(project):
    params = params_module.parse(tiny_params())
    for name in params.datasets:
        data = generate_stage.build(params, name)
        assert data.meta["name"] == name
        assert data.meta["kind"] == params.data_kinds[name]


# --- kind by kind: the data is what the kind promises ---------------------------------------------------------

def sine_points(spec: dict) -> tuple[int, int]:
    """(points before train_until, points from train_until to extrapolate_until)."""
    n_train = round(spec["train_until"] / spec["dt"])
    return n_train, round((spec["extrapolate_until"] - spec["train_until"]) / spec["dt"])


def true_sine(k: np.ndarray) -> np.ndarray:
    return np.sin(SPECS["sine"]["frequency"] * SPECS["sine"]["dt"] * k)


def test_sine_rollout_is_the_true_continuation():
    data = generate("sine")
    n_train, n_ext = sine_points(SPECS["sine"])
    window = SPECS["sine"]["window"]
    assert data.rollout_context.shape == (1, window, 1)
    np.testing.assert_allclose(data.rollout_context[0, :, 0], true_sine(np.arange(n_train - window, n_train)),
                               atol=1e-6)
    np.testing.assert_allclose(data.rollout_target[0, :, 0], true_sine(np.arange(n_train, n_train + n_ext)),
                               atol=1e-6)
    assert data.meta["time_step"] == SPECS["sine"]["dt"]


def test_sine_test_data_comes_only_from_after_train_until():
    data = generate("sine")
    n_train, n_ext = sine_points(SPECS["sine"])
    window = SPECS["sine"]["window"]
    n_test = n_ext - window
    assert len(data.x_test) == n_test
    start = n_train + np.arange(n_test)
    np.testing.assert_allclose(data.x_test[..., 0], true_sine(start[:, None] + np.arange(window)), atol=1e-6)
    np.testing.assert_allclose(data.y_test[:, 0], true_sine(start + window), atol=1e-6)


def test_sine_training_and_validation_cover_exactly_the_training_part():
    data = generate("sine")
    n_train, _ = sine_points(SPECS["sine"])
    window = SPECS["sine"]["window"]
    targets = np.sort(np.concatenate([data.y_train[:, 0], data.y_val[:, 0]]))
    expected = np.sort(true_sine(np.arange(window, n_train)).astype(np.float32))
    np.testing.assert_allclose(targets, expected, atol=1e-6)
    assert len(data.x_val) == max(1, round(SPECS["sine"]["val_fraction"] * (n_train - window)))


def test_sincos_rollout_continues_the_test_sequences():
    data = generate("sincos")
    np.testing.assert_array_equal(data.rollout_context, data.x_test)
    np.testing.assert_array_equal(data.rollout_target[:, 0], data.y_test)
    assert data.rollout_target.shape[1] == SPECS["sincos"]["rollout_steps"]


@pytest.mark.parametrize("max_start", [0, 4])
def test_ramp_rollout_is_the_true_continuation(max_start):
    data = generate("ramp", max_start=max_start)
    context, target = data.rollout_context[..., 0].astype(np.float64), data.rollout_target[..., 0]
    slope = context[:, 1] - context[:, 0]  # s: the value grows by s per step
    steps = np.arange(1, target.shape[1] + 1)
    expected = context[:, -1:] + slope[:, None] * steps
    np.testing.assert_allclose(target, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(data.y_test[:, 0], context[:, -1] + slope, rtol=1e-5, atol=1e-4)
    if max_start == 0:  # seed 001: every sequence is 0, s, 2s, ...
        np.testing.assert_allclose(context, slope[:, None] * np.arange(context.shape[1]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("max_start", [0, 3])
def test_trajectory_rollout_is_the_true_continuation(max_start):
    data = generate("trajectory", max_start=max_start)
    context = data.rollout_context.astype(np.float64)
    target = data.rollout_target
    x0, y0, x1, y1 = context[:, 0, 0], context[:, 0, 1], context[:, 1, 0], context[:, 1, 1]
    np.testing.assert_array_equal(x1 - x0, 1.0)
    a = (y1 - y0) / (x1 - x0)
    b = y0 - a * x0
    x_next = context[:, -1:, 0] + np.arange(1, target.shape[1] + 1)
    np.testing.assert_array_equal(target[..., 0], x_next)  # small integers: exact in float32
    np.testing.assert_allclose(target[..., 1], a[:, None] * x_next + b[:, None], rtol=1e-5, atol=1e-4)
    assert data.meta["features"] == ["x", "y"]
    if max_start == 0:
        np.testing.assert_array_equal(context[:, 0, 0], 0.0)


@pytest.mark.parametrize("lag", [-5, 0, 3])
def test_memory_target_is_lagged_plus_last_value(lag):
    data = generate("memory", lag=lag)
    for split in datasets.SPLITS:
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        np.testing.assert_allclose(y, x[:, lag] + x[:, -1], rtol=1e-6, atol=1e-6)
        assert not np.allclose(y, x[:, -1] * 2)
    assert not data.has_rollout
    assert data.rollout_context.shape[0] == 0 and data.rollout_target.shape[0] == 0
    assert data.meta["rollout_sequences"] == 0 and data.meta["autoregressive"] is False


def memory_of_before(seed: int = 0, lag: int = -5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The memory kind's splits as the code before length ranges computed them, written out here."""
    spec = SPECS["memory"]
    n = spec["n_train"] + spec["n_val"] + spec["n_test"]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, spec["length"], 1))
    y = x[:, lag] + x[:, -1]
    order = rng.permutation(n)
    cut = {"val": order[:spec["n_val"]], "test": order[spec["n_val"]:spec["n_val"] + spec["n_test"]],
           "train": order[spec["n_val"] + spec["n_test"]:]}
    return {s: (x[i], y[i]) for s, i in cut.items()}


def test_memory_with_an_int_length_is_the_data_of_before():
    data = generate("memory")
    for split, (x, y) in memory_of_before().items():
        assert getattr(data, f"x_{split}").tobytes() == x.astype(np.float32).tobytes(), split
        assert getattr(data, f"y_{split}").tobytes() == y.astype(np.float32).tobytes(), split
        lengths = getattr(data, f"lengths_{split}")
        assert lengths.shape == (0,) and lengths.dtype == np.int64 and data.lengths(split) is None
    x_train = memory_of_before()["train"][0].reshape(-1, 1)  # float64: the statistics come before the cast
    assert data.meta["scale_mean"] == [float(v) for v in x_train.mean(axis=0)]
    assert data.meta["scale_std"] == [float(v) for v in x_train.std(axis=0)]
    assert data.meta["window"] == 12


@pytest.mark.parametrize("lag", [-5, -1, 0, 3])
def test_memory_length_range_gives_each_sequence_its_own_length(lag):
    data = generate("memory", lag=lag, length=[5, 12])
    drawn = []
    for split in datasets.SPLITS:
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        lengths = data.lengths(split)
        assert lengths is getattr(data, f"lengths_{split}")
        assert lengths.dtype == np.int64 and lengths.shape == (len(x),) and x.shape[1] == 12
        assert lengths.min() >= 5 and lengths.max() <= 12
        rows = np.arange(len(x))
        lagged = x[rows, lag if lag >= 0 else lengths + lag]
        np.testing.assert_allclose(y, lagged + x[rows, lengths - 1], rtol=1e-6, atol=1e-6)
        real = datasets.real_steps(lengths, 12)
        assert np.all(x[~real] == 0) and np.all(x[real] != 0)  # zeros past each end, and only there
        drawn.append(lengths)
    assert set(np.concatenate(drawn)) == set(range(5, 13))  # uniform over the range, both ends included
    assert data.meta["window"] == 12 and not data.has_rollout


def test_memory_length_range_draws_after_the_fixed_length_draws():
    """The values are those of the fixed-length data at the longest length, padding aside: the lengths are
    drawn after them, so adding a range changes nothing that was drawn before."""
    fixed, ranged = generate("memory", length=12), generate("memory", length=[5, 12])
    for split in datasets.SPLITS:
        real = datasets.real_steps(ranged.lengths(split), 12)
        np.testing.assert_array_equal(getattr(ranged, f"x_{split}")[real], getattr(fixed, f"x_{split}")[real])


def test_memory_length_range_scales_by_the_real_values_only():
    data = generate("memory", length=[2, 12], lag=-1)
    real = data.x_train[datasets.real_steps(data.lengths("train"), 12)]
    np.testing.assert_allclose(data.meta["scale_mean"], real.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(data.meta["scale_std"], real.std(axis=0), rtol=1e-6)
    assert not np.isclose(data.meta["scale_std"][0], data.x_train.reshape(-1).std(), rtol=1e-2)  # padding is no data


def test_csv_splits_in_time_order_and_rolls_out_over_the_test_part(in_project):
    data = generate("csv")
    series = csv_series().astype(np.float32)
    position = {v.tobytes(): i for i, v in enumerate(series)}
    index = {s: np.array([position[v.tobytes()] for v in getattr(data, f"y_{s}")[:, 0]]) for s in datasets.SPLITS}
    n_test = math.floor(CSV_LENGTH * 0.2)
    n_val = math.floor(CSV_LENGTH * 0.2)
    n_train = CSV_LENGTH - n_val - n_test
    window = SPECS["csv"]["window"]
    np.testing.assert_array_equal(index["train"], np.arange(window, n_train))
    np.testing.assert_array_equal(index["val"], np.arange(n_train, n_train + n_val))
    np.testing.assert_array_equal(index["test"], np.arange(n_train + n_val, CSV_LENGTH))
    np.testing.assert_array_equal(data.x_test[0, :, 0], series[n_train + n_val - window:n_train + n_val])
    np.testing.assert_array_equal(data.rollout_context[0, :, 0], series[n_train + n_val - window:n_train + n_val])
    np.testing.assert_array_equal(data.rollout_target[0, :, 0], series[n_train + n_val:])


def test_csv_rollout_steps_limits_the_rollout(in_project):
    data = generate("csv", rollout_steps=5)
    assert data.rollout_target.shape == (1, 5, 1)


def test_csv_rollout_longer_than_the_test_part_is_a_data_error(in_project):
    with pytest.raises(DataError) as exc:
        generate("csv", rollout_steps=25)
    assert str(exc.value) == "data.csv.rollout_steps is 25 but the test part has only 24 values"


# --- the dataset file -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(SPECS))
def test_save_load_round_trip(in_project, kind, tmp_path):
    data = generate(kind)
    path = tmp_path / "out" / f"{kind}.npz"
    datasets.save(data, path)
    assert sorted(p.name for p in path.parent.iterdir()) == [f"{kind}.npz"], "temporary files left behind"
    back = datasets.load(path)
    for name in datasets.ARRAYS:
        a, b = getattr(data, name), getattr(back, name)
        dtype = np.int64 if name.startswith(("starts_", "lengths_")) else np.float32
        assert b.dtype == dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), name
    assert back.meta == data.meta
    assert back.has_rollout == data.has_rollout


def test_lengths_survive_the_file(tmp_path):
    data = generate("memory", length=[5, 12])
    path = tmp_path / "memory.npz"
    datasets.save(data, path)
    back = datasets.load(path)
    for split in datasets.SPLITS:
        np.testing.assert_array_equal(back.lengths(split), data.lengths(split))
        assert back.lengths(split).dtype == np.int64


def test_fixed_length_data_stores_no_lengths_and_keeps_its_bytes(tmp_path):
    """Lengths are stored only where windows differ in length: a fixed-length dataset's file holds exactly the
    arrays it held before lengths existed (so DVC sees the same bytes), and reads back as full length."""
    path = tmp_path / "ramp.npz"
    datasets.save(generate("ramp"), path)
    with np.load(path) as stored:
        assert not any(name.startswith(("lengths_", "series_")) for name in stored.files)
    assert datasets.load(path).lengths("train") is None


def test_dataset_file_needs_no_pickle(tmp_path):
    path = tmp_path / "ramp.npz"
    datasets.save(generate("ramp"), path)
    with np.load(path, allow_pickle=False) as stored:
        assert set(stored.files) == {"meta", *datasets.ARRAYS}
        assert json.loads(str(stored["meta"]))["kind"] == "ramp"


def test_missing_dataset_file(tmp_path):
    path = tmp_path / "sine.npz"
    with pytest.raises(ArtifactError) as exc:
        datasets.load(path)
    assert str(exc.value) == f"{path} does not exist; run `dvc repro` to generate it"


def saved_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "good.npz"
    datasets.save(generate("ramp"), path)
    return path.read_bytes()


def corrupt_cases(good: bytes) -> dict[str, bytes]:
    no_meta = io.BytesIO()
    np.savez(no_meta, x_train=np.zeros(3))
    return {
        "truncated-half": good[:len(good) // 2],
        "truncated-to-10-bytes": good[:10],
        "empty": b"",
        "text-garbage": b"this is not a numpy file at all\n" * 4,
        "missing-arrays": no_meta.getvalue(),
    }


@pytest.mark.parametrize("case", ["truncated-half", "truncated-to-10-bytes", "empty", "text-garbage",
                                  "missing-arrays"])
def test_corrupt_dataset_file_is_one_clear_error(tmp_path, case):
    path = tmp_path / "data.npz"
    path.write_bytes(corrupt_cases(saved_bytes(tmp_path))[case])
    with pytest.raises(ArtifactError) as exc:
        datasets.load(path)
    message = str(exc.value)
    assert message.startswith(f"{path} is corrupt (")
    assert message.endswith("delete it and run `dvc repro`")
    assert "\n" not in message


def test_damaged_compressed_data_is_one_clear_error(tmp_path):
    good = bytearray(saved_bytes(tmp_path))
    with zipfile.ZipFile(io.BytesIO(bytes(good))) as archive:
        info = archive.getinfo("x_train.npy")
    assert info.compress_type == zipfile.ZIP_DEFLATED
    name_length, extra_length = struct.unpack("<HH", good[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length
    good[start] = 0x07  # a final deflate block of the reserved type 3: invalid from its first bit
    path = tmp_path / "data.npz"
    path.write_bytes(bytes(good))
    with pytest.raises(ArtifactError) as exc:
        datasets.load(path)
    assert str(exc.value).startswith(f"{path} is corrupt (")
    assert str(exc.value).endswith("delete it and run `dvc repro`")


# --- reading a user's CSV ------------------------------------------------------------------------------------

def read_series(path: Path, column: str) -> np.ndarray:
    """One column of a one-series file, as the csv kind reads it."""
    return user_data.read(path, user_data.Layout((column,))).series[0].values[:, 0]


def csv_error(project: Path, content: str | bytes, column: str = "value", name: str = "series.csv") -> str:
    path = Path("data/raw") / name
    (project / path).write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(DataError) as exc:
        read_series(path, column)
    message = str(exc.value)
    assert "\n" not in message, "a data error must be one line"
    assert message.startswith(str(path)), "a data error must name the file"
    return message


def test_good_csv_reads_the_numeric_column(project):
    path = project / "data" / "raw" / "good.csv"
    path.write_text("date,value,note\n2020,1.5,a\n2021, 2 ,b\n2022,3e1,c\n2023,-4,d\n")
    values = read_series(Path("data/raw/good.csv"), "value")
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, [1.5, 2.0, 30.0, -4.0])


def test_trailing_blank_lines_are_ignored(project):
    (project / "data" / "raw" / "s.csv").write_text("value\n1\n2\n\n\n")
    np.testing.assert_array_equal(read_series(Path("data/raw/s.csv"), "value"), [1.0, 2.0])


def test_missing_csv_file(project):
    with pytest.raises(DataError) as exc:
        read_series(Path("data/raw/nope.csv"), "value")
    assert str(exc.value) == "data/raw/nope.csv does not exist; put your CSV file there or fix data.<name>.path"


def test_missing_column_lists_the_columns(project):
    message = csv_error(project, "date,price,volume\n1,2,3\n")
    assert message == "data/raw/series.csv has no column 'value' (data.<name>.column); columns are: date, price, volume"


def test_empty_cell_names_the_line(project):
    message = csv_error(project, "date,value\n1,1.0\n2,2.0\n3,\n4,\n5,5.0\n")
    assert message == ("data/raw/series.csv: column 'value' has 2 missing cell(s), first on line 4; "
                       "fill those cells, or set data.<name>.missing to interpolate, ffill or drop")


def test_short_row_is_an_empty_cell(project):
    message = csv_error(project, "date,value\n1,1.0\n2\n")
    assert "1 missing cell(s), first on line 3" in message


def test_text_in_numeric_column_names_value_and_line(project):
    message = csv_error(project, "date,value\n1,1.0\n2,2.0\n3,abc\n4,4.0\n")
    assert message == "data/raw/series.csv: column 'value' has a non-numeric value 'abc' on line 4"


@pytest.mark.parametrize("cell", ["nan", "NA", "N/A", "null", " "])
def test_na_spellings_are_missing_cells(project, cell):
    message = csv_error(project, f"date,value\n1,1.0\n2,{cell}\n")
    assert "1 missing cell(s), first on line 3" in message


@pytest.mark.parametrize("content", [
    pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(200), id="png-bytes"),
    pytest.param(np.random.default_rng(0).bytes(2000), id="random-bytes"),
    pytest.param(bytes(range(256)) * 4, id="all-byte-values"),
    pytest.param("date,value\n1,1\n2,2,3,4\n", id="ragged-rows"),
    pytest.param("", id="empty-file"),
])
def test_file_that_is_not_csv(project, content):
    message = csv_error(project, content)
    assert message.startswith("data/raw/series.csv cannot be read as CSV: ")
    assert len(message) > len("data/raw/series.csv cannot be read as CSV: ")


@pytest.mark.parametrize("n", [0, 5, 14])
def test_series_too_short(project, n):
    write_csv(project / CSV_PATH, csv_series(n))
    with pytest.raises(DataError) as exc:
        generate("csv")
    message = str(exc.value)
    assert message.startswith(f"{CSV_PATH}: column 'value' has {n} values, too few for window 10")
    assert "use a longer series or a smaller data.csv.window" in message
    assert "\n" not in message


def test_shortest_usable_series_is_accepted(project):
    write_csv(project / CSV_PATH, csv_series(20))  # train 12 = window + 2, val 4, test 4
    data = generate("csv")
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (2, 4, 4)


def test_line_numbers_count_blank_lines(project):
    # a blank line in the middle is a row of empty cells, reported at its real line...
    message = csv_error(project, "date,value\n1,1.0\n\n2,2.0\n")
    assert message == ("data/raw/series.csv: column 'value' has 1 missing cell(s), first on line 3; "
                       "fill those cells, or set data.<name>.missing to interpolate, ffill or drop")
    # ...and counts for the lines after it (text is reported before gaps)
    message = csv_error(project, "date,value\n1,1.0\n\n2,2.0\n3,abc\n")
    assert message == "data/raw/series.csv: column 'value' has a non-numeric value 'abc' on line 5"
    # ...and blank lines at the end are not data, so later errors keep the file's line numbers
    message = csv_error(project, "date,value\n1,1.0\n2,2.0\n3,abc\n\n\n")
    assert message == "data/raw/series.csv: column 'value' has a non-numeric value 'abc' on line 4"


# --- csv path validation -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/etc/passwd", "data/raw/../secret.csv", "data/rawish/x.csv", "x.csv"])
def test_csv_path_outside_data_raw_is_rejected(project, path):
    raw = tiny_params()
    raw["data"]["mine"] = {"kind": "csv", "path": path, "column": "value"}
    write_params(project, raw)
    with pytest.raises(ParamsError) as exc:
        params_module.load("params.yaml")
    assert str(exc.value) == ("params.yaml: data.mine.path must be a file under data/raw/ (the folder DVC watches "
                              f"for this stage), got '{path}'")


def test_csv_path_under_data_raw_generates(in_project):
    raw = tiny_params()
    raw["data"]["mine"] = {"kind": "csv", "path": CSV_PATH, "column": "value", "window": 10}
    raw["datasets"].append("mine")
    params = params_module.parse(raw)
    data = generate_stage.build(params, "mine")
    assert data.meta["kind"] == "csv" and data.meta["features"] == ["value"]
    assert sum(data.meta["sizes"].values()) == CSV_LENGTH - 10


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_continuations_are_the_true_values_after_each_window(in_project, kind):
    """The free-running objective's examples: each training/validation window (exactly the split's windows, in
    the split's own part of the data) and the values that truly follow it."""
    data = generate(kind)
    for split in ("train", "val"):
        longest = data.longest_continuation(split)
        if not data.has_rollout:
            assert longest == 0 and len(data.continuations(split, 1)[0]) == 0
            continue
        assert longest >= 1
        context, after = data.continuations(split, 1)
        windows = {w.tobytes(): t.tobytes() for w, t in zip(getattr(data, f"x_{split}"), getattr(data, f"y_{split}"))}
        assert len(context) >= 1
        for c, a in zip(context, after):
            assert windows.get(c.tobytes()) == a[0].tobytes(), "a context must be a window of the split"
        context, after = data.continuations(split, longest)
        assert len(context) >= 1 and after.shape[1] == longest
        assert len(data.continuations(split, longest + 1)[0]) == 0


@pytest.mark.parametrize("kind", ["sincos", "ramp", "trajectory"])
def test_all_windows_cover_what_the_rollout_visits(kind):
    """`windows: all` trains on every window of each training sequence: the seed's first windows are among
    them, every position a rollout predicts is a training target somewhere, and the held-out splits' test
    examples and rollout are untouched."""
    first, every = generate(kind, windows="first"), generate(kind, windows="all")
    length, steps = first.meta["window"], first.meta["rollout_steps"]
    n_train = len(first.x_train)
    assert len(every.x_train) == n_train * steps and len(every.x_val) == len(first.x_val) * steps
    assert rows(first.x_train) <= rows(every.x_train)
    for name in ("x_test", "y_test", "rollout_context", "rollout_target"):
        assert np.array_equal(getattr(first, name), getattr(every, name)), name
    # each training sequence's windows end at every position after the first window, once
    positions = every.starts_train[:, 1] + length
    assert sorted(set(positions.tolist())) == list(range(length, length + steps))
    if kind == "trajectory":  # x is the position itself: the rollout's positions are all training targets
        assert set(np.unique(every.rollout_target[..., 0])) <= set(np.unique(every.y_train[:, 0]))
        assert not set(np.unique(first.rollout_target[..., 0])) <= set(np.unique(first.y_train[:, 0]))


def test_unknown_windows_setting_is_refused():
    with pytest.raises(SchemaError, match="windows must be one of: first, all; got 'some'"):
        make_spec("ramp", windows="some")
