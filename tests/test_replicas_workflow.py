"""Issue 13's acceptance runs on a small real project: `dvc exp run` then `python -m pipeline diff`.

Another training seed (same settings) must read as seed noise, and a training budget cut to one epoch as a real
loss. The profile is small but not tiny: 20 epochs, so that one epoch is a real change, and 5 replicas, the
fewest for which the exact rank test can reach p < 0.05 (2/252) at all.
"""

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT, source_env
from test_pipeline import copy_project, run, set_params, tiny_pipeline_params

pytestmark = pytest.mark.slow

LEARNED = ("gru", "rnn")


def profile() -> dict:
    raw = tiny_pipeline_params()
    raw["models"] = {"persistence": {}, "linear": {}, "gru": {}, "rnn": {}}
    raw["model"] = {"hidden": 8, "layers": 1}
    raw["train"].update(epochs=20, patience=20, replicas=5, lr=0.01)
    return raw


@pytest.fixture(scope="module")
def experiments(tmp_path_factory) -> tuple[Path, dict[str, list[dict]]]:
    """A committed, reproduced project and two named experiments on it; experiment -> diff rows (JSON)."""
    repo = tmp_path_factory.mktemp("replicas")
    copy_project(repo)
    set_params(repo, profile())
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "dvc", "init", "-q", "--force")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    run(repo, "dvc", "repro")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "baseline")
    run(repo, "dvc", "exp", "run", "-n", "other-seeds", "-S", "seed=1000")
    run(repo, "dvc", "exp", "run", "-n", "one-epoch", "-S", "seed=0", "-S", "train.epochs=1")
    diffs = {}
    for name in ("other-seeds", "one-epoch"):
        text = run_diff(repo, "HEAD", name, "--json")
        diffs[name] = json.loads(text)
        print(run_diff(repo, "HEAD", name))  # shown with -s: the table as a user sees it
    return repo, diffs


def run_diff(repo: Path, *args: str) -> str:
    import subprocess
    done = subprocess.run([sys.executable, "-m", "pipeline", "diff", *args], cwd=repo, capture_output=True,
                          text=True, env=source_env())
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_other_training_seeds_read_as_seed_noise(experiments):
    _, diffs = experiments
    rows = diffs["other-seeds"]
    verdicts = Counter(row["verdict"] for row in rows)
    assert len(rows) == 2 * 4 + 2 * 4  # sine: 3 headline metrics, memory_short: 1, for 4 models each
    assert verdicts["better"] + verdicts["worse"] == 0, verdicts  # false discoveries controlled over the diff
    assert all(row["q"] >= row["p"] for row in rows if row["q"] is not None)
    for row in rows:
        if row["model"] in LEARNED:  # every replica trained again from other seeds: the values all moved
            assert row["replicas_a"] == row["replicas_b"] == 5
            assert row["values_a"] != row["values_b"] or row["metric"] == "rollout.valid_horizon"
        else:  # the data did not change (data_seed), so the deterministic baselines did not either
            assert row["verdict"] == "unchanged" and row["replicas_a"] == row["replicas_b"] == 1


def test_one_epoch_reads_as_worse(experiments):
    _, diffs = experiments
    test_rmse = [row for row in diffs["one-epoch"] if row["metric"] == "test.rmse" and row["model"] in LEARNED]
    assert len(test_rmse) == 4
    worse = [row for row in test_rmse if row["verdict"] == "worse"]
    assert len(worse) > len(test_rmse) / 2, test_rmse
    for row in worse:  # worse after the false discovery control, by a factor whose interval excludes 1
        assert row["median_b"] > row["median_a"] and row["q"] <= 0.05 and row["p"] <= row["q"]
        assert row["effect_scale"] == "log ratio" and 0 < row["effect_ci"][0] <= row["effect"] <= row["effect_ci"][1]
    baselines = [row for row in diffs["one-epoch"] if row["model"] not in LEARNED]
    assert {row["verdict"] for row in baselines} == {"unchanged"}  # a closed form has no epochs


def test_metrics_diff_and_exp_show_still_read_the_medians(experiments):
    repo, diffs = experiments
    shown = run(repo, "dvc", "metrics", "diff", "HEAD", "one-epoch", "--targets", "metrics/eval/sine/gru.json",
                "--json")
    changed = json.loads(shown[shown.index("{"):])["metrics/eval/sine/gru.json"]
    row = next(r for r in diffs["one-epoch"] if (r["dataset"], r["model"], r["metric"]) ==
               ("sine", "gru", "test.rmse"))
    assert changed["test.rmse"]["old"] == pytest.approx(row["median_a"], rel=1e-5)
    assert changed["test.rmse"]["new"] == pytest.approx(row["median_b"], rel=1e-5)
    assert "per_replica.0.test_rmse" in changed and "spread.test_rmse.max" in changed  # keyed, not lists
