"""The report and compare stages: leaderboard aggregation and ranking on hand-made metrics files, and the
comparison CSVs and figure on a real tiny run."""

import csv
import json

import numpy as np
import pytest

import pipeline.evaluation
import pipeline.generate
import pipeline.params
import pipeline.training
from pipeline import datasets, report
from pipeline.artifacts import Paths, write_json

from conftest import tiny_params, write_params

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODELS = ("persistence", "linear", "gru")


def load_params(project, models=MODELS, datasets_=("sine", "memory_short")):
    raw = tiny_params()
    raw["datasets"] = list(datasets_)
    raw["models"] = {m: {} for m in models}
    write_params(project, raw)
    return pipeline.params.load("params.yaml")


def eval_metrics(test_mse: float, rollout_mse: float | None = None, valid: int = 0, finite: bool = True) -> dict:
    out = {"test": {"mse": test_mse, "rmse": float(np.sqrt(test_mse)), "mae": float(np.sqrt(test_mse))}}
    if rollout_mse is not None:
        out["rollout"] = {"steps": 100, "mse": rollout_mse if finite else None,
                          "rmse": float(np.sqrt(rollout_mse)) if finite else None,
                          "rmse_at": {"1": 0.01}, "valid_horizon": valid}
    return out


def train_metrics(diverged: bool = False) -> dict:
    return {"best_val_loss": 0.1, "best_epoch": 1, "final_train_loss": 0.1, "final_val_loss": 0.1,
            "epochs_run": 2, "diverged": diverged, "parameters": 10, "device": "cpu"}


def write_pair(paths: Paths, ds: str, model: str, ev: dict, diverged: bool = False) -> None:
    write_json(paths.eval_metrics(ds, model), ev)
    write_json(paths.train_metrics(ds, model), train_metrics(diverged))


@pytest.fixture
def hand_made(project):
    """Metrics files whose ranking differs by rollout RMSE and by test RMSE on the sine, plus leftovers of a
    model that params.yaml no longer lists."""
    params = load_params(project)
    paths = Paths()
    # sine: by rollout RMSE linear (0.5) < gru (0.8) < persistence (1.0); by test RMSE gru < persistence < linear
    write_pair(paths, "sine", "persistence", eval_metrics(0.04, 1.0, valid=1))
    write_pair(paths, "sine", "linear", eval_metrics(0.09, 0.25, valid=20))
    write_pair(paths, "sine", "gru", eval_metrics(0.01, 0.64, valid=5), diverged=True)
    # memory_short (no rollout): by test RMSE gru (0.7) < linear (1.0) < persistence (1.5)
    write_pair(paths, "memory_short", "persistence", eval_metrics(2.25))
    write_pair(paths, "memory_short", "linear", eval_metrics(1.0))
    write_pair(paths, "memory_short", "gru", eval_metrics(0.49))
    # leftovers of a removed model that would win everything if it were read
    write_pair(paths, "sine", "old", eval_metrics(1e-6, 1e-6, valid=100))
    write_pair(paths, "memory_short", "old", eval_metrics(1e-6))
    return params, paths


def test_summarize_ranks_and_skills(hand_made):
    params, paths = hand_made
    summary = report.summarize(params)
    assert list(summary) == ["sine", "memory_short"]

    sine = summary["sine"]
    assert list(sine) == ["linear", "gru", "persistence"]  # ordered by rank, by rollout RMSE
    assert {m: r["rank"] for m, r in sine.items()} == {"linear": 1, "gru": 2, "persistence": 3}
    assert sine["linear"]["rollout_rmse"] == pytest.approx(0.5)
    assert sine["linear"]["valid_horizon"] == 20
    assert sine["persistence"]["test_skill"] == 0 and sine["persistence"]["rollout_skill"] == 0
    assert sine["linear"]["test_skill"] == pytest.approx(1 - 0.09 / 0.04, rel=1e-5)
    assert sine["linear"]["rollout_skill"] == pytest.approx(1 - 0.25 / 1.0, rel=1e-5)
    assert sine["gru"]["test_skill"] == pytest.approx(1 - 0.01 / 0.04, rel=1e-5)
    assert sine["gru"]["rollout_skill"] == pytest.approx(1 - 0.64 / 1.0, rel=1e-5)
    assert {m: r["diverged"] for m, r in sine.items()} == {"linear": False, "gru": True, "persistence": False}
    assert {m: r["kind"] for m, r in sine.items()} == {m: m for m in MODELS}

    memory = summary["memory_short"]
    assert list(memory) == ["gru", "linear", "persistence"]  # no rollout: by test RMSE
    assert {m: r["rank"] for m, r in memory.items()} == {"gru": 1, "linear": 2, "persistence": 3}
    assert memory["persistence"]["test_skill"] == 0
    assert memory["linear"]["test_skill"] == pytest.approx(1 - 1.0 / 2.25, rel=1e-5)
    assert memory["gru"]["test_skill"] == pytest.approx(1 - 0.49 / 2.25, rel=1e-5)
    assert all("rollout_rmse" not in r and "rollout_skill" not in r for r in memory.values())
    assert not any(r["diverged"] for r in memory.values())

    assert "old" not in sine and "old" not in memory  # not listed in params.yaml: ignored
    assert json.loads(paths.summary().read_text()) == summary


def test_summarize_writes_leaderboards(hand_made):
    params, paths = hand_made
    summary = report.summarize(params)

    with open(paths.leaderboard_csv(), newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    assert header == ["dataset", "rank", "model", "kind", "test_rmse", "test_skill", "rollout_rmse",
                      "rollout_skill", "valid_horizon", "diverged"]
    assert [(r["dataset"], r["rank"], r["model"]) for r in rows] == [
        ("sine", "1", "linear"), ("sine", "2", "gru"), ("sine", "3", "persistence"),
        ("memory_short", "1", "gru"), ("memory_short", "2", "linear"), ("memory_short", "3", "persistence")]
    by_key = {(r["dataset"], r["model"]): r for r in rows}
    assert float(by_key["sine", "linear"]["rollout_rmse"]) == pytest.approx(0.5)
    assert float(by_key["sine", "gru"]["test_skill"]) == pytest.approx(0.75)
    assert by_key["sine", "gru"]["diverged"] == "True"
    assert by_key["memory_short", "gru"]["rollout_rmse"] == ""  # no rollout: an empty cell, not "None"

    text = paths.leaderboard_md().read_text()
    sections = {part.splitlines()[0].strip(): part for part in text.split("\n## ")[1:]}
    assert list(sections) == ["sine", "memory_short"]
    for ds, table in summary.items():
        for m, row in table.items():
            assert f"| {row['rank']} | {m} | {m} |" in sections[ds]
    assert "old" not in text and "None" not in text
    assert text.rstrip().splitlines()[-1].startswith("**Diverged** (the loss exploded; the weights from before "
                                                     "it were evaluated): sine/gru. Lower `train.lr`.")


def test_leaderboard_has_no_divergence_note_when_nothing_diverged(project):
    params = load_params(project)
    paths = Paths()
    for ds in ("sine", "memory_short"):
        for m in MODELS:
            write_pair(paths, ds, m, eval_metrics(0.04, 1.0, valid=1) if ds == "sine" else eval_metrics(1.0))
    report.summarize(params)
    assert "Diverged" not in paths.leaderboard_md().read_text()


def test_summarize_ranks_a_non_finite_rollout_last(project):
    params = load_params(project)
    paths = Paths()
    write_pair(paths, "sine", "persistence", eval_metrics(0.04, 1.0))
    write_pair(paths, "sine", "linear", eval_metrics(0.09, 0.25))
    write_pair(paths, "sine", "gru", eval_metrics(0.0001, 0.5, finite=False), diverged=True)  # rollout blew up
    for m in MODELS:
        write_pair(paths, "memory_short", m, eval_metrics(1.0))
    sine = report.summarize(params)["sine"]
    assert list(sine) == ["linear", "persistence", "gru"]
    assert sine["gru"]["rank"] == 3 and sine["gru"]["rollout_rmse"] is None
    assert sine["gru"]["rollout_skill"] is None and sine["gru"]["diverged"] is True


# --- compare on a real tiny run -----------------------------------------------------------------------------

def read_csv(path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_compare_on_a_real_tiny_run(project):
    models = ("persistence", "linear")
    params = load_params(project, models=models)
    paths = Paths()
    for ds in params.datasets:
        pipeline.generate.run(params, ds)
        for m in models:
            pipeline.training.run(params, ds, m)
            pipeline.evaluation.run(params, ds, m)
    # files of a model that params.yaml no longer lists must not enter the comparison
    for path_of in (paths.train_curve, paths.horizon_curve, paths.rollout_curve, paths.eval_metrics):
        for ds in params.datasets:
            path_of(ds, "old").write_bytes(path_of(ds, "persistence").read_bytes())
    for ds in params.datasets:
        report.compare(params, ds)

    for ds in params.datasets:
        header, rows = read_csv(paths.compare_curve("loss", ds))
        assert header == ["epoch", "model", "train_loss", "val_loss"]
        assert {r["model"] for r in rows} == set(models)
        for m in models:
            _, own = read_csv(paths.train_curve(ds, m))
            assert [r["train_loss"] for r in rows if r["model"] == m] == [r["train_loss"] for r in own]
        figure = paths.compare_figure(ds).read_bytes()
        assert len(figure) > 1000 and figure.startswith(PNG_MAGIC)
        for m in models:  # each pair's own figure is drawn here too, from the evaluate stage's files
            figure = paths.pair_figure(ds, m).read_bytes()
            assert len(figure) > 1000 and figure.startswith(PNG_MAGIC)
        assert not paths.pair_figure(ds, "old").exists()

    data = datasets.load(paths.dataset("sine"))
    window, steps = data.meta["window"], data.rollout_target.shape[1]
    header, rows = read_csv(paths.compare_curve("horizon", "sine"))
    assert header == ["step", "model", "rmse"]
    assert {r["model"] for r in rows} == set(models)
    assert all(sum(r["model"] == m for r in rows) == steps for m in models)

    header, rows = read_csv(paths.compare_curve("rollout", "sine"))
    assert header == ["step", "model", "value"]
    assert {r["model"] for r in rows} == set(models) | {"truth", "context"}
    series = {name: [r for r in rows if r["model"] == name] for name in set(models) | {"truth", "context"}}
    assert [int(r["step"]) for r in series["context"]] == list(range(-window + 1, 1))
    assert [int(r["step"]) for r in series["truth"]] == list(range(1, steps + 1))
    np.testing.assert_allclose([float(r["value"]) for r in series["context"]], data.rollout_context[0, :, 0],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([float(r["value"]) for r in series["truth"]], data.rollout_target[0, :, 0],
                               rtol=1e-6, atol=1e-7)
    for m in models:
        _, own = read_csv(paths.rollout_curve("sine", m))
        expected = [(r["step"], r["prediction"]) for r in own if r["sequence"] == "0" and int(r["step"]) >= 1]
        assert [(r["step"], r["value"]) for r in series[m]] == expected
        assert len(expected) == steps
    persistence = np.array([float(r["value"]) for r in series["persistence"]])
    np.testing.assert_allclose(persistence, data.rollout_context[0, -1, 0], rtol=1e-5, atol=1e-6)

    # memory_short has no rollout: only headers for the horizon and rollout curves
    for what in ("horizon", "rollout"):
        assert paths.compare_curve(what, "memory_short").read_text().splitlines() == [
            ",".join(report.COMPARE_HEADERS[what])]
