"""A user's long-format CSV through the real `dvc repro`: three series of different lengths and scales, two
value columns, a rolling-origin backtest; editing the file reruns only that dataset's training."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from pipeline.files import checkpoints
from test_pipeline import copy_project, ran, run, set_params, tiny_pipeline_params
from test_user_data import SERIES, series_values

pytestmark = pytest.mark.slow


def write_shops(repo: Path, bump: float = 0.0) -> None:
    """id, date, two columns; `bump` changes one value in the training part of series b."""
    lines = ["shop,date,sales,returns"]
    for name, spec in SERIES.items():
        values = series_values(*spec)
        if name == "b":
            values[3] += bump
        days = np.datetime64("2024-01-01") + np.arange(len(values))
        lines += [f"{name},{d},{float(v)!r},{0.1 * float(v) + 1!r}" for d, v in zip(days, values)]
    (repo / "data" / "raw" / "shops.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    copy_project(repo)
    raw = tiny_pipeline_params()
    raw["datasets"] = ["sine", "shops"]
    raw["models"].pop("gru_fr")
    raw["data"]["shops"] = {"kind": "csv", "path": "data/raw/shops.csv", "columns": ["sales", "returns"],
                            "id_column": "shop", "time_column": "date", "scaling": "per_series", "window": 8,
                            "rollout_steps": 5, "stride": 2}
    set_params(repo, raw)
    write_shops(repo)
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "dvc", "init", "-q", "--force")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    first = run(repo, "dvc", "repro")
    assert {"generate@shops", "train@shops-gru", "evaluate@shops", "compare@shops", "report"} <= ran(first)
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "baseline")
    return repo


def test_three_series_two_columns_run_end_to_end(repo):
    shape = checkpoints.load(repo / "data" / "models" / "shops" / "gru.npz").shape
    assert (shape.input_size, shape.output_size) == (2, 2)  # both columns, modelled jointly
    metrics = json.loads((repo / "metrics" / "eval" / "shops" / "gru.json").read_text())
    assert metrics["rollout"]["steps"] == 5 and {"mase", "smape"} <= set(metrics["rollout"])
    data = np.load(repo / "data" / "datasets" / "shops.npz")
    assert data["x_train"].shape[2] == 2 and sorted(set(data["series_rollout"].tolist())) == [0, 1, 2]
    board = (repo / "plots" / "leaderboard.md").read_text()
    shops = board[board.index("## shops"):]
    assert "| MASE | sMAPE % |" in shops.splitlines()[2]
    for model in ("persistence", "linear", "gru"):
        assert (repo / "plots" / "images" / "shops" / f"{model}-backtest.png").stat().st_size > 10_000
    assert not (repo / "plots" / "images" / "sine" / "gru-backtest.png").exists()


def test_editing_the_file_retrains_only_that_dataset(repo):
    write_shops(repo, bump=0.5)
    try:
        stages = ran(run(repo, "dvc", "repro"))
        assert {"train@shops-persistence", "train@shops-linear", "train@shops-gru", "evaluate@shops"} <= stages
        assert not {s for s in stages if s.startswith(("train@sine", "evaluate@sine", "compare@sine"))}
    finally:
        write_shops(repo)
        run(repo, "dvc", "repro")


def test_a_bad_file_is_one_line_and_writes_nothing(repo):
    """A repeated date: the generate stage's command (what `dvc repro` runs for generate@shops) stops with one
    line, exit status 1, and leaves the dataset file as it was. (Under `dvc repro`, DVC itself removes a stage's
    outputs before running it; `dvc checkout` brings the last good file back from the cache.)"""
    path = repo / "data" / "raw" / "shops.csv"
    good = path.read_text()
    dataset = (repo / "data" / "datasets" / "shops.npz").read_bytes()
    lines = good.splitlines()
    path.write_text("\n".join(lines + [lines[-1]]) + "\n")
    try:
        done = subprocess.run([sys.executable, "-m", "pipeline", "generate", "shops"], cwd=repo,
                              capture_output=True, text=True)
        assert done.returncode == 1
        assert done.stderr.strip().count("\n") == 0 and "appears twice" in done.stderr
        assert (repo / "data" / "datasets" / "shops.npz").read_bytes() == dataset
    finally:
        path.write_text(good)
