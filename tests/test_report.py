"""The report and compare stages with replicas (issue 13): leaderboard aggregation, ranking by the median, the
spread text, beats-persistence counts, the comparison CSVs with band columns and the figures, on hand-made files
in the formats of notes/REPLICAS-CONTRACT.md; then the vega-lite templates filled the way `dvc plots` fills
them; then compare on a real tiny run."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

import pipeline.stages.generate
import pipeline.params
from pipeline.stages import report
from pipeline.files import artifacts, datasets
from pipeline.files.artifacts import Paths, write_arrays, write_csv, write_json
from pipeline.errors import ArtifactError
from pipeline.stages import compare

from conftest import ROOT, tiny_params, use_datasets, write_params

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODELS = ("persistence", "linear", "gru")
BASELINES = ("persistence", "linear")


def load_params(project, models=MODELS, datasets_=("sine", "memory_short")):
    raw = tiny_params()
    use_datasets(raw, list(datasets_))
    raw["models"] = {m: {} for m in models}
    return pipeline.params.load(write_params(Path(project), raw))


# --- hand-made metrics in the contract's format -------------------------------------------------------------

def _g(value):
    return None if value is None or not math.isfinite(value) else float(f"{value:.6g}")


def _spread(values) -> dict:
    values = np.array([math.inf if v is None else v for v in values], dtype=float)
    with np.errstate(invalid="ignore"):  # percentile interpolates inf - inf = NaN (so min and max come apart)
        q1, q3 = np.percentile(values, [25, 75])
    return {k: _g(v) for k, v in zip(("min", "q1", "q3", "max"), (values.min(), q1, q3, values.max()))}


def eval_metrics(test_mse, rollout_mse=None, valid=None, deterministic: bool = False) -> dict:
    """An evaluate stage's metrics from per-replica values: lists (one per replica) or one number (R = 1).
    A rollout MSE of None is a rollout that blew up."""
    test_mse = list(np.atleast_1d(test_mse))
    r_count = len(test_mse)
    per = {str(r): {"test_mse": _g(m), "test_rmse": _g(math.sqrt(m)), "test_mae": _g(math.sqrt(m))}
           for r, m in enumerate(test_mse)}
    out = {"replicas": r_count, "deterministic": deterministic,
           "test": {"mse": _g(float(np.median(test_mse))), "rmse": _g(float(np.median(np.sqrt(test_mse)))),
                    "mae": _g(float(np.median(np.sqrt(test_mse))))},
           "spread": {"test_rmse": _spread([math.sqrt(m) for m in test_mse])}}
    key = [math.sqrt(m) for m in test_mse]
    if rollout_mse is not None:
        rollout_mse = rollout_mse if isinstance(rollout_mse, list) else [rollout_mse]
        valid = valid if isinstance(valid, list) else [valid or 0] * r_count
        rmse = [None if m is None else math.sqrt(m) for m in rollout_mse]
        for r in range(r_count):
            per[str(r)].update(rollout_mse=_g(rollout_mse[r]), rollout_rmse=_g(rmse[r]), valid_horizon=valid[r])
        as_inf = [math.inf if v is None else v for v in rmse]
        median_mse = float(np.median([math.inf if m is None else m for m in rollout_mse]))
        out["rollout"] = {"steps": 100, "mse": _g(median_mse),
                          "rmse": _g(float(np.median(as_inf))), "rmse_at": {"1": 0.01},
                          "valid_horizon": float(np.median(valid)) if r_count % 2 == 0 else int(np.median(valid))}
        out["spread"].update(rollout_rmse=_spread(rmse), valid_horizon=_spread(valid))
        key = as_inf
    out["per_replica"] = per
    out["median_replica"] = int(np.argsort(key, kind="stable")[(r_count - 1) // 2])
    return out


def train_metrics(replicas: int = 1, diverged: int = 0) -> dict:
    return {"replicas": replicas, "deterministic": replicas == 1, "best_val_loss": 0.1, "best_epoch": 1,
            "epochs_run": 2, "final_train_loss": 0.1, "final_val_loss": 0.1, "diverged": diverged > 0,
            "diverged_replicas": diverged, "parameters": 10, "device": "cpu",
            "per_replica": {str(r): {"seed": r, "best_val_loss": 0.1, "best_epoch": 1, "epochs_run": 2,
                                     "diverged": r < diverged} for r in range(replicas)}}


def write_pair(paths: Paths, ds: str, model: str, ev: dict, diverged: int = 0) -> None:
    write_json(paths.eval_metrics(ds, model), ev)
    write_json(paths.train_metrics(ds, model), train_metrics(ev["replicas"], diverged))


@pytest.fixture
def hand_made(project):
    """Metrics files whose ranking by median differs by rollout RMSE and by test RMSE on the sine, plus
    leftovers of a model that params.yaml no longer lists. gru has 3 replicas, the baselines one."""
    params = load_params(project)
    paths = Paths()
    # sine: by median rollout RMSE linear (0.5) < gru (0.8) < persistence (1.0); by test RMSE gru < persistence <
    # linear. gru's replicas: rollout MSE 0.36, 0.64, 1.44: beats persistence's 1.0 in 2 of 3.
    write_pair(paths, "sine", "persistence", eval_metrics(0.04, 1.0, valid=1, deterministic=True))
    write_pair(paths, "sine", "linear", eval_metrics(0.09, 0.25, valid=20, deterministic=True))
    write_pair(paths, "sine", "gru", eval_metrics([0.01, 0.0025, 0.04], [0.64, 0.36, 1.44], valid=[5, 9, 2]),
               diverged=1)
    # memory_short (no rollout): by median test RMSE gru (0.7) < linear (1.0) < persistence (1.5); gru's
    # replicas' test MSEs 0.49, 0.25, 4.0 against persistence's 2.25: 2 of 3
    write_pair(paths, "memory_short", "persistence", eval_metrics(2.25, deterministic=True))
    write_pair(paths, "memory_short", "linear", eval_metrics(1.0, deterministic=True))
    write_pair(paths, "memory_short", "gru", eval_metrics([0.49, 0.25, 4.0]))
    # leftovers of a removed model that would win everything if it were read
    write_pair(paths, "sine", "old", eval_metrics(1e-6, 1e-6, valid=100))
    write_pair(paths, "memory_short", "old", eval_metrics(1e-6))
    return params, paths


def test_summarize_ranks_medians_spreads_and_skills(hand_made):
    params, paths = hand_made
    summary = report.summarize(params)
    assert list(summary) == ["sine", "memory_short"]

    sine = summary["sine"]
    assert list(sine) == ["linear", "gru", "persistence"]  # ordered by rank, by median rollout RMSE
    assert {m: r["rank"] for m, r in sine.items()} == {"linear": 1, "gru": 2, "persistence": 3}
    assert {m: r["replicas"] for m, r in sine.items()} == {"linear": 1, "gru": 3, "persistence": 1}
    gru = sine["gru"]
    assert gru["rollout_rmse"] == pytest.approx(0.8)
    assert (gru["rollout_rmse_min"], gru["rollout_rmse_max"]) == pytest.approx((0.6, 1.2))
    assert gru["test_rmse"] == pytest.approx(0.1)
    assert (gru["test_rmse_min"], gru["test_rmse_max"]) == pytest.approx((0.05, 0.2))
    assert (gru["valid_horizon"], gru["valid_horizon_min"], gru["valid_horizon_max"]) == (5, 2, 9)
    assert gru["beats_persistence"] == 2
    assert gru["diverged"] is True and gru["diverged_replicas"] == 1
    # skills from the median MSEs
    assert gru["test_skill"] == pytest.approx(1 - 0.01 / 0.04, rel=1e-5)
    assert gru["rollout_skill"] == pytest.approx(1 - 0.64 / 1.0, rel=1e-5)
    linear = sine["linear"]
    assert linear["rollout_rmse"] == linear["rollout_rmse_min"] == linear["rollout_rmse_max"] == pytest.approx(0.5)
    assert linear["valid_horizon"] == 20 and linear["beats_persistence"] == 1
    assert linear["test_skill"] == pytest.approx(1 - 0.09 / 0.04, rel=1e-5)
    assert sine["persistence"]["test_skill"] == 0 and sine["persistence"]["rollout_skill"] == 0
    assert sine["persistence"]["beats_persistence"] is None  # the reference itself
    assert {m: r["diverged"] for m, r in sine.items()} == {"linear": False, "gru": True, "persistence": False}
    assert {m: r["kind"] for m, r in sine.items()} == {m: m for m in MODELS}

    memory = summary["memory_short"]
    assert list(memory) == ["gru", "linear", "persistence"]  # no rollout: by median test RMSE
    assert memory["gru"]["test_rmse"] == pytest.approx(0.7)
    assert memory["gru"]["beats_persistence"] == 2 and memory["linear"]["beats_persistence"] == 1
    assert memory["gru"]["test_skill"] == pytest.approx(1 - 0.49 / 2.25, rel=1e-5)
    assert all(not any(k.startswith(("rollout", "valid")) for k in r) for r in memory.values())
    assert not any(r["diverged"] for r in memory.values())

    assert "old" not in sine and "old" not in memory  # not listed in params.yaml: ignored
    assert json.loads(paths.summary().read_text()) == summary


def test_ranking_is_by_the_median_not_the_best_replica(project):
    params = load_params(project, datasets_=("memory_short",))
    paths = Paths()
    write_pair(paths, "memory_short", "persistence", eval_metrics(1.0, deterministic=True))
    write_pair(paths, "memory_short", "linear", eval_metrics(0.25, deterministic=True))  # RMSE 0.5
    # the best replica of all (RMSE 0.1), but a median of 0.9
    write_pair(paths, "memory_short", "gru", eval_metrics([0.01, 0.81, 0.9025]))
    table = report.summarize(params)["memory_short"]
    assert list(table) == ["linear", "gru", "persistence"]
    assert table["gru"]["test_rmse"] == pytest.approx(0.9) and table["gru"]["test_rmse_min"] == pytest.approx(0.1)


@pytest.mark.parametrize("args, text", [
    ((0.122369, 0.0261, 0.248, 5), "0.122 [0.0261-0.248]"),
    ((0.122, 0.026, 0.248, 5), "0.122 [0.026-0.248]"),
    ((251, 33, 1000, 5, None), "251 [33-1000]"),  # steps within tolerance: digits=None, a count as it is
    ((250.5, 0, 1000, 4, None), "250.5 [0-1000]"),
    ((2.14782e-08, 1.9e-08, 2.5e-08, 3), "2.15e-08 [1.9e-08 to 2.5e-08]"),  # no exponent minus beside a dash
    ((0.5, None, None, 3), "0.5 [n/a-n/a]"),
    ((None, 0.1, None, 3), "n/a [0.1-n/a]"),  # a replica whose rollout blew up
    ((0.855572, 0.855572, 0.855572, 1), "0.856"),  # one replica (a baseline): just the number
    ((1000, 1000, 1000, 1, None), "1000"),
    ((0, 0, 0, 1, None), "0"),
    ((2.0, 0.5, 2.0, 3), "2 [0.5-2]"),
])
def test_spread_text(args, text):
    assert artifacts.spread_text(*args) == text


def test_beats_persistence_counts_replicas_below_persistence(project):
    """Rollout MSE where the dataset has a rollout (the test MSE says the opposite here), else test MSE; equal is
    not below, and a rollout that blew up never beats it."""
    params = load_params(project)
    paths = Paths()
    write_pair(paths, "sine", "persistence", eval_metrics(0.04, 1.0, valid=1, deterministic=True))
    write_pair(paths, "sine", "linear", eval_metrics(0.09, 1.0, valid=1, deterministic=True))  # equal: 0/1
    write_pair(paths, "sine", "gru", eval_metrics([1.0] * 5, [0.5, 1.5, 0.99, None, 1.0], valid=[1] * 5))
    write_pair(paths, "memory_short", "persistence", eval_metrics(1.0, deterministic=True))
    write_pair(paths, "memory_short", "linear", eval_metrics(0.5, deterministic=True))
    write_pair(paths, "memory_short", "gru", eval_metrics([0.2, 0.999, 1.0, 3.0]))
    summary = report.summarize(params)
    assert {m: r["beats_persistence"] for m, r in summary["sine"].items()} == {
        "persistence": None, "linear": 0, "gru": 2}
    assert {m: r["beats_persistence"] for m, r in summary["memory_short"].items()} == {
        "persistence": None, "linear": 1, "gru": 2}
    text = paths.leaderboard_md().read_text()
    assert "| 2/5 |" in text and "| 0/1 |" in text and "| 2/4 |" in text and "| 1/1 |" in text
    assert text.count("(reference)") == 2


def markdown_rows(text: str) -> dict[str, dict[str, dict[str, str]]]:
    """dataset -> model -> column -> cell, from the leaderboard's tables."""
    tables = {}
    for part in text.split("\n## ")[1:]:
        lines = part.splitlines()
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("|")]
        header = rows[0]
        tables[lines[0].strip()] = {row[1]: dict(zip(header, row)) for row in rows[2:]}
    return tables


def test_summarize_writes_leaderboards(hand_made):
    params, paths = hand_made
    summary = report.summarize(params)

    with open(paths.leaderboard_csv(), newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    assert header == report.LEADERBOARD_COLUMNS
    assert [(r["dataset"], r["rank"], r["model"]) for r in rows] == [
        ("sine", "1", "linear"), ("sine", "2", "gru"), ("sine", "3", "persistence"),
        ("memory_short", "1", "gru"), ("memory_short", "2", "linear"), ("memory_short", "3", "persistence")]
    by_key = {(r["dataset"], r["model"]): r for r in rows}
    assert float(by_key["sine", "linear"]["rollout_rmse"]) == pytest.approx(0.5)
    assert float(by_key["sine", "gru"]["rollout_rmse_max"]) == pytest.approx(1.2)
    assert float(by_key["sine", "gru"]["test_skill"]) == pytest.approx(0.75)
    assert by_key["sine", "gru"]["diverged"] == "True" and by_key["sine", "gru"]["diverged_replicas"] == "1"
    assert by_key["sine", "gru"]["beats_persistence"] == "2" and by_key["sine", "gru"]["replicas"] == "3"
    assert by_key["sine", "persistence"]["beats_persistence"] == ""
    assert by_key["memory_short", "gru"]["rollout_rmse"] == ""  # no rollout: an empty cell, not "None"

    text = paths.leaderboard_md().read_text()
    assert text.startswith("# Leaderboard\n")
    intro = text.split("\n## ")[0]
    assert "median over the replicas" in intro and "[min-max] over the replicas" in intro
    assert "deterministic, one fit" in intro
    tables = markdown_rows(text)
    assert list(tables) == ["sine", "memory_short"]
    sine = tables["sine"]
    assert list(sine) == ["linear", "gru", "persistence"]
    assert list(sine["gru"]) == ["rank", "model", "kind", "test RMSE", "100-step rollout RMSE",
                                 "steps within tolerance", "beats persistence", "test skill vs persistence",
                                 "test skill vs mean", "rollout skill vs persistence", "diverged"]
    assert sine["gru"] == {"rank": "2 a", "model": "gru", "kind": "gru", "test RMSE": "0.1 [0.05-0.2]",
                           "100-step rollout RMSE": "0.8 [0.6-1.2]", "steps within tolerance": "5 [2-9]",
                           "beats persistence": "2/3", "test skill vs persistence": "0.75",
                           "test skill vs mean": "", "rollout skill vs persistence": "0.36", "diverged": "1/3"}
    # a deterministic baseline: numbers without brackets
    assert sine["linear"] == {"rank": "1", "model": "linear", "kind": "linear", "test RMSE": "0.3",
                              "100-step rollout RMSE": "0.5", "steps within tolerance": "20",
                              "beats persistence": "1/1", "test skill vs persistence": "-1.25",
                              "test skill vs mean": "", "rollout skill vs persistence": "0.75", "diverged": "no"}
    assert sine["persistence"]["beats persistence"] == "(reference)"
    memory = tables["memory_short"]  # no rollout: no rollout columns
    assert list(memory["gru"]) == ["rank", "model", "kind", "test RMSE", "beats persistence",
                                   "test skill vs persistence", "test skill vs mean", "diverged"]
    assert memory["gru"]["test RMSE"] == "0.7 [0.5-2]" and memory["linear"]["test RMSE"] == "1"
    for ds, table in summary.items():
        assert [int(tables[ds][m]["rank"].split()[0]) for m in table] == [row["rank"] for row in table.values()]
    assert "old" not in text and "None" not in text
    assert text.rstrip().splitlines()[-1].startswith(
        "**Diverged** (the loss exploded; the weights from before it were evaluated): sine/gru. Lower `train.lr`. "
        "The *diverged* column says in how many replicas.")


def test_leaderboard_has_no_divergence_note_when_nothing_diverged(project):
    params = load_params(project)
    paths = Paths()
    for ds in ("sine", "memory_short"):
        for m in MODELS:
            write_pair(paths, ds, m, eval_metrics(0.04, 1.0, valid=1) if ds == "sine" else eval_metrics(1.0))
    report.summarize(params)
    assert "Diverged" not in paths.leaderboard_md().read_text()


def test_summarize_ranks_a_non_finite_median_rollout_last(project):
    params = load_params(project)
    paths = Paths()
    write_pair(paths, "sine", "persistence", eval_metrics(0.04, 1.0, deterministic=True))
    write_pair(paths, "sine", "linear", eval_metrics(0.09, 0.25, deterministic=True))
    # two of three replicas' rollouts blew up: the median is non-finite (null)
    write_pair(paths, "sine", "gru", eval_metrics([1e-4] * 3, [0.25, None, None], valid=[3, 0, 0]), diverged=2)
    for m in MODELS:
        write_pair(paths, "memory_short", m, eval_metrics(1.0))
    sine = report.summarize(params)["sine"]
    assert list(sine) == ["linear", "persistence", "gru"]
    assert sine["gru"]["rank"] == 3 and sine["gru"]["rollout_rmse"] is None
    assert sine["gru"]["rollout_skill"] is None and sine["gru"]["diverged"] is True
    assert sine["gru"]["rollout_rmse_min"] == pytest.approx(0.5) and sine["gru"]["rollout_rmse_max"] is None
    row = markdown_rows(paths.leaderboard_md().read_text())["sine"]["gru"]
    assert row["100-step rollout RMSE"] == "n/a [0.5-n/a]" and row["diverged"] == "2/3"
    assert row["beats persistence"] == "1/3"


def test_summarize_stops_in_one_line_on_metrics_from_before_replicas(hand_made):
    params, paths = hand_made
    write_json(paths.eval_metrics("sine", "gru"), {"test": {"mse": 0.01, "rmse": 0.1, "mae": 0.1}})
    with pytest.raises(ArtifactError, match=r"gru.json has no 'replicas'.*run `dvc repro`"):
        report.summarize(params)


# --- compare: hand-made evaluate outputs (R = 3 for gru, 1 for the baselines) -------------------------------

def read_csv(path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def fake_evaluation(paths: Paths, params, data: datasets.Dataset, ds: str, model: str, offsets: list[float],
                    epochs: list[int]) -> None:
    """Write one pair's train curve and evaluate outputs as the contract has them: replica r predicts the truth
    plus a drift growing to offsets[r] over the horizon (persistence: the last context value), and trains for
    epochs[r] epochs."""
    r_count = len(offsets)
    assert len(epochs) == r_count
    if model == "persistence":
        test = np.repeat(data.x_test[None, :, -1, :], r_count, axis=0)
    else:
        wobble = np.sin(np.arange(len(data.y_test)))[:, None]  # errors that differ from point to point
        test = np.stack([data.y_test + 0.1 * c * (1 + wobble) for c in offsets])
    metrics = {"replicas": r_count, "deterministic": model in BASELINES}
    per = {str(r): {"test_mse": float(np.mean((test[r] - data.y_test) ** 2))} for r in range(r_count)}
    arrays = {"pred_test": test.astype(np.float32)}
    key = [per[str(r)]["test_mse"] for r in range(r_count)]
    if data.has_rollout:
        truth = data.rollout_target
        m, h, f = truth.shape
        if model == "persistence":
            pred = np.repeat(np.repeat(data.rollout_context[None, :, -1:, :], h, axis=2), r_count, axis=0)
        else:
            ramp = np.linspace(1.0 / h, 1.0, h)[None, :, None]
            pred = np.stack([truth + c * ramp for c in offsets])
        errors = np.sqrt(np.mean((pred - truth[None]) ** 2, axis=(1, 3)))
        key = [float(np.sqrt(np.mean((p - truth) ** 2))) for p in pred]
        for r in range(r_count):
            per[str(r)].update(rollout_mse=key[r] ** 2, rollout_rmse=key[r])
        arrays.update(pred_rollout=pred.astype(np.float32), horizon_errors=errors, threshold=np.array(0.07))
    median = int(np.argsort(key, kind="stable")[(r_count - 1) // 2])
    arrays["median_replica"] = np.array(median)
    test_rmse = [math.sqrt(v["test_mse"]) for v in per.values()]
    metrics.update(test={"mse": float(np.median([v["test_mse"] for v in per.values()])),
                         "rmse": float(np.median(test_rmse)), "mae": 0.0},
                   spread={"test_rmse": _spread(test_rmse)}, per_replica=per, median_replica=median)
    if data.has_rollout:
        valid = [int(np.argmax(e > 0.07)) if (e > 0.07).any() else h for e in errors]
        metrics["rollout"] = {"steps": h, "mse": float(np.median(key)) ** 2, "rmse": float(np.median(key)),
                              "rmse_at": {}, "valid_horizon": int(np.median(valid))}
        metrics["spread"].update(rollout_rmse=_spread(key), valid_horizon=_spread(valid))
        window = data.meta["window"]
        rows = []
        for s in range(min(params.evaluate.plot_sequences, m)):
            for fi, feature in enumerate(data.meta["features"]):
                rows += [[s, feature, i - window + 1, float(v), "", "", ""]
                         for i, v in enumerate(data.rollout_context[s, :, fi])]
                rows += [[s, feature, i + 1, float(truth[s, i, fi]), float(pred[median, s, i, fi]),
                          float(pred[:, s, i, fi].min()), float(pred[:, s, i, fi].max())] for i in range(h)]
        write_csv(paths.rollout_curve(ds, model), ["sequence", "feature", "step", "truth", "prediction",
                                                   "prediction_min", "prediction_max"], rows)
        write_csv(paths.horizon_curve(ds, model), ["step", "rmse", "rmse_min", "rmse_max"],
                  [[i + 1, float(errors[median, i]), float(errors[:, i].min()), float(errors[:, i].max())]
                   for i in range(h)])
    else:
        write_csv(paths.rollout_curve(ds, model), ["sequence", "feature", "step", "truth", "prediction",
                                                   "prediction_min", "prediction_max"], [])
        write_csv(paths.horizon_curve(ds, model), ["step", "rmse", "rmse_min", "rmse_max"], [])
    write_json(paths.eval_metrics(ds, model), metrics)
    write_json(paths.train_metrics(ds, model), train_metrics(r_count))
    write_arrays(paths.predictions(ds, model), arrays)
    curve = [[e, r, 0.5 / (e + 1) * (1 + 0.3 * r), 0.6 / (e + 1) * (1 + 0.4 * r)]
             for r in range(r_count) for e in range(epochs[r])]
    write_csv(paths.train_curve(ds, model), ["epoch", "replica", "train_loss", "val_loss"], curve)


GRU_OFFSETS = [0.3, -0.1, 0.6]  # rollout RMSE grows with |offset|: replica 0 is the median one
GRU_EPOCHS = [5, 3, 4]


def make_compare_fixture(project, replicas: int = 3, datasets_=("sine", "memory_short")):
    params = load_params(project, datasets_=datasets_)
    paths = Paths(Path(project))
    for ds in params.datasets:
        data = pipeline.stages.generate.build(params, ds)
        datasets.save(data, paths.dataset(ds))
        for m in params.models:
            if m in BASELINES:
                fake_evaluation(paths, params, data, ds, m, [0.0], [1])
            else:
                fake_evaluation(paths, params, data, ds, m, GRU_OFFSETS[:replicas], GRU_EPOCHS[:replicas])
    return params, paths


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """One hand-made sine project (gru with 3 replicas), compared once, for the tests that only read it."""
    params, paths = make_compare_fixture(tmp_path_factory.mktemp("compared"), datasets_=("sine",))
    compare.compare(params, "sine", paths)
    return params, paths


def test_compare_writes_medians_with_band_columns(compared):
    params, paths = compared
    data = datasets.load(paths.dataset("sine"))
    window, steps = data.meta["window"], data.rollout_target.shape[1]

    header, rows = read_csv(paths.compare_curve("loss", "sine"))
    assert header == ["epoch", "model", "train_loss", "val_loss", "val_loss_min", "val_loss_max"]
    gru = [r for r in rows if r["model"] == "gru"]
    # the median replica (0) ran 5 epochs, the others 3 and 4: the band covers those that ran each epoch
    assert [r["epoch"] for r in gru] == ["0", "1", "2", "3", "4"]
    _, own = read_csv(paths.train_curve("sine", "gru"))
    val = {(int(r["replica"]), int(r["epoch"])): r["val_loss"] for r in own}
    assert [r["val_loss"] for r in gru] == [val[0, e] for e in range(5)]
    assert [r["val_loss_min"] for r in gru] == [val[0, e] for e in range(5)]  # replica 0 has the lowest losses
    assert [r["val_loss_max"] for r in gru] == [val[2, 0], val[2, 1], val[2, 2], val[2, 3], val[0, 4]]
    persistence = [r for r in rows if r["model"] == "persistence"]
    assert len(persistence) == 1 and persistence[0]["val_loss"] == persistence[0]["val_loss_min"] \
        == persistence[0]["val_loss_max"]

    header, rows = read_csv(paths.compare_curve("horizon", "sine"))
    assert header == ["step", "model", "rmse", "rmse_min", "rmse_max"]
    assert all(sum(r["model"] == m for r in rows) == steps for m in MODELS)
    _, own = read_csv(paths.horizon_curve("sine", "gru"))
    assert [(r["rmse"], r["rmse_min"], r["rmse_max"]) for r in rows if r["model"] == "gru"] == [
        (r["rmse"], r["rmse_min"], r["rmse_max"]) for r in own]
    last = [r for r in rows if r["model"] == "gru"][-1]
    assert float(last["rmse_min"]) < float(last["rmse"]) < float(last["rmse_max"])
    assert all(r["rmse"] == r["rmse_min"] == r["rmse_max"] for r in rows if r["model"] in BASELINES)

    header, rows = read_csv(paths.compare_curve("rollout", "sine"))
    assert header == ["step", "model", "value", "value_min", "value_max"]
    assert {r["model"] for r in rows} == set(MODELS) | {"truth", "context"}
    series = {name: [r for r in rows if r["model"] == name] for name in set(MODELS) | {"truth", "context"}}
    assert [int(r["step"]) for r in series["context"]] == list(range(-window + 1, 1))
    assert [int(r["step"]) for r in series["truth"]] == list(range(1, steps + 1))
    np.testing.assert_allclose([float(r["value"]) for r in series["truth"]], data.rollout_target[0, :, 0],
                               rtol=1e-6, atol=1e-7)
    assert all(r["value"] == r["value_min"] == r["value_max"] for r in series["truth"] + series["context"])
    _, own = read_csv(paths.rollout_curve("sine", "gru"))
    assert [(r["step"], r["value"], r["value_min"], r["value_max"]) for r in series["gru"]] == [
        (r["step"], r["prediction"], r["prediction_min"], r["prediction_max"])
        for r in own if r["sequence"] == "0" and int(r["step"]) >= 1]
    truth = data.rollout_target[0, :, 0]  # replica 0 (the median) drifts +0.3, replica 1 -0.1, replica 2 +0.6
    np.testing.assert_allclose([float(r["value"]) for r in series["gru"]],
                               truth + 0.3 * np.linspace(1 / steps, 1, steps), atol=1e-5)
    np.testing.assert_allclose([float(r["value_min"]) for r in series["gru"]],
                               truth - 0.1 * np.linspace(1 / steps, 1, steps), atol=1e-5)
    np.testing.assert_allclose([float(r["value_max"]) for r in series["gru"]],
                               truth + 0.6 * np.linspace(1 / steps, 1, steps), atol=1e-5)


def test_compare_without_a_rollout_writes_only_headers(project):
    params, paths = make_compare_fixture(project, datasets_=("memory_short",))
    compare.compare(params, "memory_short")
    for what in ("horizon", "rollout"):
        assert paths.compare_curve(what, "memory_short").read_text().splitlines() == [
            ",".join(compare.COMPARE_HEADERS[what])]
    _, rows = read_csv(paths.compare_curve("loss", "memory_short"))
    assert {r["model"] for r in rows} == set(MODELS)


@pytest.mark.parametrize("replicas, datasets_", [
    (3, ("sine", "trajectory", "memory_short")),  # bands; a rollout, two features, no rollout
    (1, ("sine", "memory_short")),  # lines only
])
def test_compare_draws_every_figure(project, replicas, datasets_):
    """From hand-made files with 3 replicas and with 1; the sine's drawn again are byte-identical."""
    params, paths = make_compare_fixture(project, replicas, datasets_=datasets_)
    for ds in params.datasets:
        compare.compare(params, ds)
    figures = {ds: [paths.compare_figure(ds)] + [paths.pair_figure(ds, m) for m in MODELS] for ds in params.datasets}
    for ds in params.datasets:
        for path in figures[ds]:
            png = path.read_bytes()
            assert png.startswith(PNG_MAGIC) and len(png) > 1000
    first = [path.read_bytes() for path in figures["sine"]]
    compare.compare(params, "sine")
    assert [path.read_bytes() for path in figures["sine"]] == first


def test_compare_stops_in_one_line_on_files_from_before_replicas(project):
    params, paths = make_compare_fixture(project, datasets_=("sine",))
    write_csv(paths.horizon_curve("sine", "gru"), ["step", "rmse"], [[1, 0.1]])
    with pytest.raises(ArtifactError, match=r"gru.csv has no column 'rmse_min'.*run `dvc repro`"):
        compare.compare(params, "sine")
    arrays = dict(np.load(paths.predictions("sine", "linear")))
    write_arrays(paths.predictions("sine", "linear"), {"pred_test": arrays["pred_test"][0]})
    with pytest.raises(ArtifactError, match=r"linear.npz has no replica axis"):
        compare.compare(params, "sine")
    assert not paths.compare_figure("sine").exists()  # nothing written before every input was read


def test_band_clips_replicas_that_blew_up():
    from pipeline.figures import plotting

    stack = np.array([[0.0, 1.0, 2.0], [0.5, np.inf, np.nan], [-0.5, 1.5, 2.5]])
    low, high = plotting._band(stack, -10.0, 10.0)
    np.testing.assert_array_equal(low, [-0.5, 1.0, -10.0])
    np.testing.assert_array_equal(high, [0.5, 10.0, 10.0])


# --- the vega-lite templates, filled the way `dvc plots show` fills them -------------------------------------

TEMPLATES = ROOT / ".dvc" / "plots"


def filled_spec(template: str, csv_path: Path, x: str, y: str) -> dict:
    """The spec `dvc plots show` writes for one stage-level plot: rows of the CSV as DVC reads them (strings,
    plus rev/filename/field), filled into the template by dvc_render."""
    from dvc_render.vega import VegaRenderer

    _, rows = read_csv(csv_path)
    points = [{**r, "rev": "workspace", "filename": csv_path.name, "field": y} for r in rows]
    renderer = VegaRenderer(points, str(csv_path), template=template, template_dir=str(TEMPLATES), x=x, y=y,
                            title="test")
    return renderer.get_filled_template()


@pytest.mark.parametrize("what, template, x, y", [
    ("loss", "by_model_log", "epoch", "val_loss"),
    ("horizon", "by_model_log", "step", "rmse"),
    ("rollout", "by_model", "step", "value"),
])
def test_templates_draw_a_band_from_the_compare_csvs(compared, what, template, x, y):
    params, paths = compared
    spec = filled_spec(template, paths.compare_curve(what, "sine"), x, y)
    text = json.dumps(spec)
    assert "<DVC_METRIC" not in text
    fields = set()

    def collect(node):
        if isinstance(node, dict):
            fields.update(v for k, v in node.items() if k == "field" and isinstance(v, str))
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)
    collect(spec)
    assert {x, y, f"{y}_min", f"{y}_max", "model", "rev"} <= fields
    assert all(field in spec["data"]["values"][0] for field in (x, y, f"{y}_min", f"{y}_max"))
    vl_convert = pytest.importorskip("vl_convert")  # `make plots` installs it
    png = vl_convert.vegalite_to_png(spec, vl_version="5.8")
    assert png.startswith(PNG_MAGIC) and len(png) > 5000


# --- compare on a real tiny run (needs the replicas' train and evaluate stages) ------------------------------

def test_compare_on_a_real_tiny_run(project):
    import pipeline.stages.evaluate
    import pipeline.stages.train

    models = ("persistence", "linear")
    params = load_params(project, models=models)
    paths = Paths()
    for ds in params.datasets:
        pipeline.stages.generate.run(params, ds)
        for m in models:
            pipeline.stages.train.run(params, ds, m)
            pipeline.stages.evaluate.run(params, ds, m)
    # files of a model that params.yaml no longer lists must not enter the comparison
    for path_of in (paths.train_curve, paths.horizon_curve, paths.rollout_curve, paths.eval_metrics,
                    paths.predictions):
        for ds in params.datasets:
            path_of(ds, "old").write_bytes(path_of(ds, "persistence").read_bytes())
    for ds in params.datasets:
        compare.compare(params, ds)
    report.summarize(params)

    for ds in params.datasets:
        header, rows = read_csv(paths.compare_curve("loss", ds))
        assert header == compare.COMPARE_HEADERS["loss"]
        assert {r["model"] for r in rows} == set(models)
        for m in models:
            _, own = read_csv(paths.train_curve(ds, m))
            assert [r["train_loss"] for r in rows if r["model"] == m] == [r["train_loss"] for r in own]
        figure = paths.compare_figure(ds).read_bytes()
        assert len(figure) > 1000 and figure.startswith(PNG_MAGIC)
        for m in models:
            figure = paths.pair_figure(ds, m).read_bytes()
            assert len(figure) > 1000 and figure.startswith(PNG_MAGIC)
        assert not paths.pair_figure(ds, "old").exists()

    data = datasets.load(paths.dataset("sine"))
    steps = data.rollout_target.shape[1]
    header, rows = read_csv(paths.compare_curve("horizon", "sine"))
    assert header == compare.COMPARE_HEADERS["horizon"]
    assert all(sum(r["model"] == m for r in rows) == steps for m in models)
    header, rows = read_csv(paths.compare_curve("rollout", "sine"))
    persistence = np.array([float(r["value"]) for r in rows if r["model"] == "persistence"])
    np.testing.assert_allclose(persistence, data.rollout_context[0, -1, 0], rtol=1e-5, atol=1e-6)
    assert all(r["value"] == r["value_min"] == r["value_max"] for r in rows)  # baselines: one replica, no band
    table = json.loads(paths.summary().read_text())["sine"]
    assert {m: r["replicas"] for m, r in table.items()} == {"persistence": 1, "linear": 1}
    assert "[" not in paths.leaderboard_md().read_text().split("\n## ")[1]  # baselines: no brackets


TWIN_ROLLOUT_MSE = [1.0, 1.1, 1.2, 1.3, 1.4]


@pytest.mark.parametrize("free_running_mse, verdict, p", [
    ([0.01, 0.02, 0.03, 0.04, 0.05], "better", "0.0079"),        # every replica below every twin replica
    (TWIN_ROLLOUT_MSE, "unchanged", "1"),                        # the same values
    ([0.9, 1.15, 1.25, 1.35, 1.5], "within seed noise", "0.84"),  # interleaved with the twin's
])
def test_leaderboard_compares_a_free_running_variant_with_its_twin(project, free_running_mse, verdict, p):
    """The twin is the `models:` entry of the same kind and sizes without training settings of its own (gru,
    not the wider gru_big); the verdict is the rank test's over the two sets of replicas."""
    raw = tiny_params()
    use_datasets(raw, ["sine"])
    raw["models"] = {"persistence": {}, "gru_big": {"kind": "gru", "hidden": 8}, "gru": {},
                     "gru_fr": {"kind": "gru", "datasets": ["sine"], "train": {"rollout_steps": 5}}}
    params = pipeline.params.load(write_params(Path(project), raw))
    assert report.twin(params, "gru_fr") == "gru"
    paths = Paths()
    write_pair(paths, "sine", "persistence", eval_metrics(0.04, 2.0, valid=1, deterministic=True))
    write_pair(paths, "sine", "gru_big", eval_metrics([0.01] * 5, [0.5] * 5, valid=[5] * 5))
    write_pair(paths, "sine", "gru", eval_metrics([0.01] * 5, TWIN_ROLLOUT_MSE, valid=[5] * 5))
    write_pair(paths, "sine", "gru_fr", eval_metrics([0.01] * 5, free_running_mse, valid=[5] * 5))
    write_json(paths.train_metrics("sine", "gru_fr"), {**train_metrics(5), "free_running": {"steps": 5}})
    report.summarize(params)
    mine = " [" in (text := paths.leaderboard_md().read_text()) and text.split("*gru_fr* ")[1].split("\n")[0]
    shown = [artifacts.spread_text(math.sqrt(float(np.median(v))), math.sqrt(min(v)), math.sqrt(max(v)), 5)
             for v in (free_running_mse, TWIN_ROLLOUT_MSE)]
    assert mine == (f"(gru trained on 5 fed-back steps after its teacher-forced epochs) against its teacher-forced "
                    f"twin *gru*: rollout RMSE {shown[0]} against {shown[1]}; {verdict} (exact rank test over "
                    f"replicas, p = {p}).")
    assert text.count("teacher-forced twin") == 1  # gru_fr only: the others are no free-running variants


def test_model_colours_are_distinct_and_never_the_context_grey():
    from pipeline.figures import plotting

    colours = plotting.model_colors([f"m{i}" for i in range(18)])
    assert len(set(colours.values())) == 18
    assert "#7f7f7f" not in colours.values() and "#c7c7c7" not in colours.values()  # tab10's and tab20's greys


@pytest.mark.parametrize("gru_rollout_mse, normalise, warned", [
    ([1.5, 2.0, 0.5], None, "if its series trend, set `data.sine.normalise: window` (or `difference`)"),
    ([1.5, 2.0, 0.5], "window", "try another `data.sine.normalise` (it is window)"),
    ([1.5, 0.2, 0.5], None, None),  # 2 of 3 replicas beat persistence: most do, no warning
])
def test_a_dataset_where_no_learned_model_beats_persistence_in_most_replicas_is_flagged(
        project, gru_rollout_mse, normalise, warned):
    """One line under the dataset's table, naming the settings to try (issue 31); none when a learned model
    beats persistence (rollout MSE 1.0 here) in most of its replicas."""
    raw = use_datasets(tiny_params(), ["sine"])
    raw["models"] = {"persistence": {}, "gru": {}}
    if normalise:
        raw["data"]["sine"]["normalise"] = normalise
    params = pipeline.params.load(write_params(Path(project), raw))
    paths = Paths()
    write_pair(paths, "sine", "persistence", eval_metrics(0.04, 1.0, valid=1, deterministic=True))
    write_pair(paths, "sine", "gru", eval_metrics([0.05] * 3, gru_rollout_mse, valid=[1] * 3))
    report.summarize(params)
    lines = [line for line in paths.leaderboard_md().read_text().splitlines() if line.startswith("**Warning**")]
    if warned is None:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith(
            f"**Warning**: no learned model beats persistence in most of its replicas on sine; {warned}")
