"""A user's own CSV data: many series in long format, several columns, a time column, gaps, per-series scaling,
and the rolling-origin backtest with its scale-free errors (MASE, sMAPE)."""

import json
from pathlib import Path

import numpy as np
import pytest

import pipeline.stages.generate
import pipeline.params
import pipeline.stages.train
from pipeline.stages import evaluate as evaluation
from pipeline.data import user_data
from pipeline.models.baselines import LinearAR
from pipeline.errors import DataError
from pipeline.files.artifacts import Paths
from pipeline.files.checkpoints import Shape
from pipeline.data.generators import KINDS
from pipeline.schema import SchemaError, build
from pipeline.analysis import scoring

from conftest import tiny_params, write_params

PATH = "data/raw/shops.csv"
# Three series of different lengths and scales: a trend plus a wave, every value distinct within its series.
SERIES = {"a": (60, 1.0, 0.0), "b": (90, 100.0, 5000.0), "c": (45, 0.01, -3.0)}


def series_values(length: int, scale: float, offset: float) -> np.ndarray:
    k = np.arange(length)
    return offset + scale * (0.05 * k + np.sin(0.6 * k))


def long_format(project: Path, series=SERIES, shuffle: bool = False, extra_column: bool = False) -> dict:
    """Write the long-format file (id, time, value[, other]) and return each series' values in time order."""
    rows, truth = [], {}
    for name, spec in series.items():
        values = series_values(*spec)
        truth[name] = values
        for t, v in enumerate(values):
            other = f",{-2 * float(v)!r}" if extra_column else ""
            rows.append(f"{name},{t},{float(v)!r}{other}")
    if shuffle:
        rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    header = "shop,day,sales" + (",returns" if extra_column else "")
    (project / PATH).write_text(header + "\n" + "\n".join(rows) + "\n")
    return truth


def spec(**overrides):
    raw = {"path": PATH, "columns": ["sales"], "id_column": "shop", "time_column": "day", "window": 8,
           "val_fraction": 0.2, "test_fraction": 0.25}
    raw.update(overrides)
    return build(KINDS.get("csv").spec, {k: v for k, v in raw.items() if v is not None}, "data.shops")


def generate(**overrides):
    return KINDS.get("csv").generate(spec(**overrides), "shops", np.random.default_rng(0))


def error(**overrides) -> str:
    with pytest.raises((DataError, SchemaError)) as exc:
        generate(**overrides)
    message = str(exc.value)
    assert "\n" not in message
    return message


# --- many series, in long format -------------------------------------------------------------------------------

def test_each_series_is_split_in_time_order_and_no_window_crosses_two(project):
    truth = long_format(project)
    data = generate()
    assert data.meta["series"] == ["a", "b", "c"]
    for split in ("train", "val", "test"):
        rows = data.series_train if split == "train" else getattr(data, f"series_{split}")
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        assert len(rows) == len(x) and set(rows) == {0, 1, 2}  # windows from every series
        for i, name in enumerate(truth):
            values = truth[name].astype(np.float32)
            n = len(values)
            n_test, n_val = int(n * 0.25), int(n * 0.2)
            first_target = {"train": 8, "val": n - n_test - n_val, "test": n - n_test}[split]
            last_target = {"train": n - n_test - n_val, "val": n - n_test, "test": n}[split]
            mine = np.flatnonzero(rows == i)
            assert len(mine) == last_target - first_target
            for k, target in zip(mine, range(first_target, last_target)):  # a contiguous slice of this series
                np.testing.assert_array_equal(x[k, :, 0], values[target - 8:target])
                assert y[k, 0] == values[target]


def test_rows_in_any_order_are_sorted_by_the_time_column(project):
    long_format(project)
    ordered = generate()
    long_format(project, shuffle=True)
    shuffled = generate()
    for name in ("x_train", "y_train", "x_test", "rollout_context", "rollout_target", "series_train"):
        np.testing.assert_array_equal(getattr(shuffled, name), getattr(ordered, name))


def test_two_columns_are_two_features(project):
    long_format(project, extra_column=True)
    data = generate(columns=["sales", "returns"])
    assert data.meta["features"] == ["sales", "returns"] and data.meta["n_features"] == 2
    assert data.x_train.shape[2] == 2 and data.y_train.shape[1] == 2 and data.rollout_target.shape[2] == 2
    np.testing.assert_allclose(data.x_train[..., 1], -2 * data.x_train[..., 0], rtol=1e-6)


def test_one_column_without_an_id_is_one_series_as_before(project):
    (project / PATH).write_text("value\n" + "".join(f"{float(v)!r}\n" for v in series_values(50, 1.0, 0.0)))
    data = generate(columns=None, column="value", id_column=None, time_column=None)
    assert data.meta["series"] == [""] and len(data.rollout_context) == 1
    assert data.meta["rollout_steps"] == int(50 * 0.25)  # one origin, the whole test part


# --- the time column -----------------------------------------------------------------------------------------

def test_a_repeated_time_names_the_series_and_both_lines(project):
    (project / PATH).write_text("shop,day,sales\n" + "".join(f"a,{t},{t}\n" for t in range(30))
                                + "b,1,1\nb,2,2\nb,2,3\n")
    assert error() == ("data/raw/shops.csv: time '2' in series 'b' appears twice (lines 33 and 34); each time "
                       "must appear once per series")


def test_a_time_that_is_not_a_time_is_an_error(project):
    (project / PATH).write_text("shop,day,sales\na,2020-01-01,1\na,soon,2\n")
    assert error() == "data/raw/shops.csv: time 'soon' on line 3 in series 'a' is neither a number nor a date"


def test_dates_sort_and_uneven_steps_are_reported(project):
    days = [f"2020-01-{d:02d}" for d in range(1, 29)] + [f"2020-02-{d:02d}" for d in range(1, 29)]
    del days[10]  # one missing day: a gap of two days
    rows = "".join(f"a,{d},{i}\n" for i, d in reversed(list(enumerate(days))))  # newest first
    (project / PATH).write_text("shop,day,sales\n" + rows)
    data = generate()
    assert data.x_train[0, :, 0].tolist() == list(range(8))  # oldest first after sorting
    assert data.meta["notes"] == ["series 'a': 2 of 54 time steps differ from the usual one (gaps or uneven "
                                  "sampling); the models see one row per step"]


# --- gaps -------------------------------------------------------------------------------------------------------

GAPPY = "shop,day,sales\n" + "".join(f"a,{t},{'' if t in (10, 11, 30) else 2.0 * t}\n" for t in range(40))


def test_missing_cells_are_an_error_by_default(project):
    (project / PATH).write_text(GAPPY)
    assert error() == ("data/raw/shops.csv: column 'sales' has 3 missing cell(s), first on line 12 in series "
                       "'a'; fill those cells, or set data.shops.missing to interpolate, ffill or drop")


@pytest.mark.parametrize("missing, expected", [
    ("interpolate", [2.0 * t for t in range(40)]),  # a straight line is filled exactly
    ("ffill", [2.0 * {10: 9, 11: 9, 30: 29}.get(t, t) for t in range(40)]),
    ("drop", [2.0 * t for t in range(40) if t not in (10, 11, 30)]),
])
def test_each_missing_option(project, missing, expected):
    (project / PATH).write_text(GAPPY)
    table = user_data.read(Path(PATH), spec(missing=missing).layout("shops"))
    np.testing.assert_array_equal(table.series[0].values[:, 0], expected)
    assert (table.filled, table.dropped) == ((0, 3) if missing == "drop" else (3, 0))


DAYS = [f"2020-01-{d:02d}" for d in range(1, 29) if d != 11] + [f"2020-02-{d:02d}" for d in range(1, 29)]
UNEVEN = "shop,day,sales\n" + "".join(f"a,{d},{i}\n" for i, d in enumerate(DAYS))  # 2020-01-11 is missing


@pytest.mark.parametrize("missing, text, printed", [
    ("interpolate", GAPPY, "generate shops: filled 3 missing cell(s) (data.shops.missing: interpolate)"),
    ("drop", GAPPY, "generate shops: dropped 3 row(s) with missing cells (data.shops.missing: drop)"),
    ("error", UNEVEN, "generate shops: series 'a': 2 of 54 time steps differ from the usual one (gaps or uneven "
                      "sampling); the models see one row per step"),
])
def test_the_generate_stage_prints_what_the_file_needed(project, capsys, missing, text, printed):
    raw = tiny_params()
    raw["datasets"] = ["shops"]
    raw["data"]["shops"] = {"kind": "csv", "path": PATH, "column": "sales", "id_column": "shop",
                            "time_column": "day", "window": 8, "missing": missing}
    write_params(project, raw)
    (project / PATH).write_text(text)
    pipeline.stages.generate.run(pipeline.params.load("params.yaml"), "shops")
    assert printed in capsys.readouterr().out.splitlines()


def test_leading_gaps_take_the_first_value_and_an_empty_column_is_an_error(project):
    (project / PATH).write_text("shop,day,sales\n" + "".join(f"a,{t},{'' if t < 2 else t}\n" for t in range(40)))
    for missing in ("interpolate", "ffill"):
        values = user_data.read(Path(PATH), spec(missing=missing).layout("shops")).series[0].values[:, 0]
        assert values[:3].tolist() == [2.0, 2.0, 2.0]
    (project / PATH).write_text("shop,day,sales\n" + "".join(f"a,{t},\n" for t in range(40)))
    assert error(missing="ffill") == ("data/raw/shops.csv: column 'sales' has no value at all in series 'a'; "
                                      "ffill needs at least one")


# --- errors that name what to fix -------------------------------------------------------------------------------

def test_an_absent_id_column_lists_the_columns(project):
    long_format(project)
    assert error(id_column="store") == ("data/raw/shops.csv has no column 'store' (data.shops.id_column); "
                                        "columns are: shop, day, sales")


def test_a_series_too_short_is_named_with_its_length(project):
    long_format(project, {**SERIES, "tiny": (12, 1.0, 0.0)})
    assert error() == ("data/raw/shops.csv: series 'tiny' has 12 values, too few for window 8 with these "
                       "fractions (train part 7 needs >= 10, val 2 and test 3 need >= 1); use a longer series or a "
                       "smaller data.shops.window")


@pytest.mark.parametrize("overrides, message", [
    ({"column": "sales"}, "data.shops.column or columns (a list, modelled jointly) must be given, not both"),
    ({"columns": None}, "data.shops.column is missing: name the value column (or list several under columns)"),
    ({"columns": ["sales", "sales"]}, "data.shops.columns must list distinct column names, got ['sales', 'sales']"),
    ({"id_column": "sales"}, "data.shops.id_column 'sales' is also a value column; name another column"),
    ({"stride": 2}, "data.shops.rollout_steps must be > 0 with stride 2: it is each origin's horizon"),
    ({"missing": "guess"}, "data.shops.missing must be one of: error, interpolate, ffill, drop; got 'guess'"),
])
def test_bad_settings_are_one_line(project, overrides, message):
    long_format(project)
    assert error(**overrides) == message


def test_a_horizon_longer_than_a_test_part_names_the_series(project):
    long_format(project)
    assert error(rollout_steps=12, stride=1) == ("data.shops.rollout_steps is 12 but the test part of series 'c' "
                                                 "has only 11 values")


# --- the rolling-origin backtest --------------------------------------------------------------------------------

def test_origins_follow_the_stride_and_see_nothing_from_their_target_on(project):
    truth = long_format(project)
    data = generate(rollout_steps=5, stride=3)
    assert data.meta["rollout_steps"] == 5
    for i, name in enumerate(truth):
        n = len(truth[name])
        start = n - int(n * 0.25)
        origins = data.rollout_origin[data.series_rollout == i]
        assert origins.tolist() == list(range(start, n - 5 + 1, 3))
        values = truth[name].astype(np.float32)
        for r in np.flatnonzero(data.series_rollout == i):
            o = data.rollout_origin[r]
            np.testing.assert_array_equal(data.rollout_context[r, :, 0], values[o - 8:o])  # strictly before
            np.testing.assert_array_equal(data.rollout_target[r, :, 0], values[o:o + 5])


def test_a_forecast_does_not_change_when_values_from_its_origin_on_do(project):
    """No leakage: each origin's forecast depends only on the values before it."""
    truth = long_format(project)
    data = generate(rollout_steps=4, stride=2)
    model = LinearAR(Shape(1, 1, 8, 4, 1))
    model.fit(*data.scaled_split("train"))
    before = scoring.rollout(model, data.scaled(data.rollout_context), 4)
    shifted = {name: values.copy() for name, values in truth.items()}
    r = 5
    o = int(data.rollout_origin[r])
    shifted[data.meta["series"][data.series_rollout[r]]][o:] += 1000.0
    rows = [f"{name},{t},{float(v)!r}" for name, values in shifted.items() for t, v in enumerate(values)]
    (project / PATH).write_text("shop,day,sales\n" + "\n".join(rows) + "\n")
    after_data = generate(rollout_steps=4, stride=2)
    np.testing.assert_array_equal(after_data.rollout_context[r], data.rollout_context[r])
    after = scoring.rollout(model, data.scaled(after_data.rollout_context), 4)
    np.testing.assert_array_equal(after[r], before[r])


def test_the_exact_linear_model_of_a_sine_scores_mase_zero_at_every_origin(project):
    """x[t+1] = 2cos(w) x[t] - x[t-1] holds exactly for a sine: the least-squares fit finds it, and its
    forecasts from every origin are the truth up to round-off, so MASE ~ 0 at each origin."""
    t = np.arange(300)
    (project / PATH).write_text("value\n" + "".join(f"{float(v)!r}\n" for v in np.sin(0.3 * t)))
    data = generate(columns=None, column="value", id_column=None, time_column=None, rollout_steps=20, stride=5)
    assert len(data.rollout_origin) == len(range(300 - 75, 300 - 20 + 1, 5))
    model = LinearAR(Shape(1, 1, 8, 4, 1))
    model.fit(*data.scaled_split("train"))
    pred = data.unscaled(scoring.rollout(model, data.scaled(data.rollout_context), 20))
    scale = np.asarray(data.meta["naive_mae"])[data.series_rollout]
    per_origin = [scoring.mase(pred[r:r + 1], data.rollout_target[r:r + 1], scale[r:r + 1])
                  for r in range(len(pred))]
    assert max(per_origin) < 1e-4
    persistence = np.repeat(data.rollout_context[:, -1:], 20, axis=1)  # a real forecast is far from 0
    assert scoring.mase(persistence, data.rollout_target, scale) > 1


def test_mase_and_smape_by_hand():
    truth = np.array([[[1.0], [2.0]], [[10.0], [10.0]]])  # 2 origins, 2 steps
    pred = np.array([[[2.0], [2.0]], [[10.0], [12.0]]])
    scale = np.array([[0.5], [4.0]])
    assert scoring.mase(pred, truth, scale) == pytest.approx(((0.5 / 0.5) + (1.0 / 4.0)) / 2)
    assert scoring.smape(pred, truth) == pytest.approx((200 / 3 + 0 + 0 + 400 / 22) / 4)
    assert scoring.smape(np.zeros((1, 1, 1)), np.zeros((1, 1, 1))) == 0.0


# --- per-series scaling ----------------------------------------------------------------------------------------

def test_per_series_scaling_scales_each_series_by_its_own_training_part(project):
    long_format(project)
    data = generate(scaling="per_series")
    x, _ = data.scaled_split("train")
    for i in range(3):
        mine = x[data.series_train == i]
        assert abs(float(mine.mean())) < 0.3 and 0.5 < float(mine.std()) < 1.5  # each near unit scale
    global_scaling = generate()
    assert float(global_scaling.scaled_split("train")[0][global_scaling.series_train == 2].std()) < 1e-3


def test_per_series_scaling_keeps_metrics_in_original_units(project):
    """Persistence predicts the last value whatever the scaling, so its metrics, in original units, must be
    the same under both; a learned model trains and is scored end to end."""
    long_format(project)
    raw = tiny_params()
    raw["datasets"] = ["shops"]
    raw["models"] = {"persistence": {}, "gru": {}}
    entry = {"kind": "csv", "path": PATH, "columns": ["sales"], "id_column": "shop", "time_column": "day",
             "window": 8, "rollout_steps": 5, "stride": 2}
    metrics = {}
    for scaling in ("global", "per_series"):
        raw["data"]["shops"] = {**entry, "scaling": scaling}
        write_params(project, raw)
        params = pipeline.params.load("params.yaml")
        pipeline.stages.generate.run(params, "shops")
        for model in ("persistence", "gru"):
            pipeline.stages.train.run(params, "shops", model)
        metrics[scaling] = evaluation.run_dataset(params, "shops")
    assert metrics["per_series"]["persistence"]["test"] == metrics["global"]["persistence"]["test"]
    rollouts = [metrics[s]["persistence"]["rollout"] for s in ("per_series", "global")]
    for key in ("rmse", "mase", "smape"):  # the same up to float32 round-off of scaling there and back
        assert rollouts[0][key] == pytest.approx(rollouts[1][key], rel=1e-3)
    rollout = metrics["per_series"]["gru"]["rollout"]
    assert {"mase", "smape"} <= set(rollout) and rollout["mase"] > 0
    saved = json.loads(Paths().eval_metrics("shops", "gru").read_text())
    assert set(saved["per_replica"]["0"]) >= {"rollout_mase", "rollout_smape"}
