"""Under `dvc repro` and `dvc exp run`: interrupted runs resume to the results of an uninterrupted one, divergence
is a flagged result rather than a failure, and two runs write byte-identical outputs.

Every run here starts from scratch in its own tiny repository, and results are compared through dvc.lock, which
holds the hash of every output (datasets, checkpoints, metrics, curves and figures).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, default_sigint, use_datasets
from test_pipeline import copy_project, ran, run, set_params, tiny_pipeline_params

pytestmark = pytest.mark.slow

EPOCHS = 400  # the gru trains for a few seconds: long enough to be stopped mid-training


def recovery_params() -> dict:
    raw = tiny_pipeline_params()
    use_datasets(raw, ["sine"])
    raw["models"].pop("gru_fr")
    raw["train"].update(epochs=EPOCHS, patience=EPOCHS)
    return raw


def new_repo(path: Path) -> Path:
    """A git + DVC repository holding the tiny project, nothing reproduced yet."""
    copy_project(path)
    set_params(path, recovery_params())
    run(path, "git", "init", "-q", "-b", "main")
    run(path, "dvc", "init", "-q", "--force")
    shutil.copy(ROOT / ".dvc" / "config", path / ".dvc" / "config")  # `dvc init --force` rewrote it
    return path


def outputs(repo: Path) -> dict[str, dict[str, str]]:
    """stage -> output path -> md5, as dvc.lock records them."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {stage: {out["path"]: out["md5"] for out in entry.get("outs", [])}
            for stage, entry in lock["stages"].items()}


def leftovers(repo: Path) -> list[str]:
    return [str(p.relative_to(repo)) for p in repo.rglob(".*.tmp") if ".dvc" not in p.parts and ".git" not in p.parts]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every other run must match, committed so that experiments can start from it."""
    repo = new_repo(tmp_path_factory.mktemp("reference"))
    run(repo, "dvc", "repro")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "reference")
    return repo


def test_two_runs_from_scratch_write_byte_identical_outputs(reference, tmp_path):
    again = new_repo(tmp_path / "again")
    run(again, "dvc", "repro")
    assert outputs(again) == outputs(reference)
    for metrics in sorted((reference / "metrics").rglob("*.json")):
        assert (again / metrics.relative_to(reference)).read_bytes() == metrics.read_bytes(), metrics


def env() -> dict[str, str]:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                DVC_NO_ANALYTICS="1")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_repro_stopped_mid_training_resumes_to_the_uninterrupted_results(reference, tmp_path, signum):
    """SIGINT to the whole process group is Ctrl-C in a terminal; SIGKILL to it is `kill -9`, or the OOM killer,
    for DVC and the stage together: neither gets to clean up."""
    repo = new_repo(tmp_path / "stopped")
    process = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env(), start_new_session=True, text=True,
                               preexec_fn=default_sigint,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = []
    for line in process.stdout:
        seen.append(line)
        if re.match(rf"train sine/gru (replicas [\d-]+ )?epoch +\d+/{EPOCHS}", line):
            os.killpg(process.pid, signum)
            break
    else:
        pytest.fail("the gru never reported training progress:\n" + "".join(seen))
    rest = process.stdout.read()
    assert process.wait(timeout=60) != 0
    assert "Traceback" not in rest
    if signum == signal.SIGINT:
        assert "Error: interrupted before the stage finished; nothing was written." in rest
    assert not (repo / "data" / "models" / "sine" / "gru.npz").exists()  # no partial checkpoint taken for a result
    recorded = outputs(repo)
    assert "generate@sine" in recorded and "train@sine-gru" not in recorded  # the lock is written per stage

    resumed = run(repo, "dvc", "repro")
    assert "train@sine-gru" in ran(resumed)
    assert not {s for s in ran(resumed) if s.startswith("generate")}, "finished stages must not run again"
    assert outputs(repo) == outputs(reference)
    assert leftovers(repo) == []
    assert "up to date" in run(repo, "dvc", "status")


def test_exp_run_with_a_huge_learning_rate_completes_and_flags_divergence(reference):
    output = run(reference, "dvc", "exp", "run", "-S", "train.lr=1000")
    try:
        assert {"train@sine-gru", "evaluate@sine", "report"} <= ran(output)
        train = yaml.safe_load((reference / "metrics" / "train" / "sine" / "gru.json").read_text())
        assert train["diverged"] is True and train["best_epoch"] == 0
        evaluation = yaml.safe_load((reference / "metrics" / "eval" / "sine" / "gru.json").read_text())
        assert evaluation["test"]["rmse"] > 0  # the kept checkpoint (the untrained weights) was evaluated
        summary = yaml.safe_load((reference / "metrics" / "summary.json").read_text())
        assert summary["sine"]["gru"]["diverged"] is True
        assert summary["sine"]["linear"]["diverged"] is False
        board = (reference / "plots" / "leaderboard.md").read_text()
        assert "**Diverged** (the loss exploded; the weights from before it were evaluated): sine/gru." in board
        assert "DIVERGED" in output
        assert "diverged" in run(reference, "dvc", "metrics", "diff")
    finally:
        run(reference, "git", "checkout", "--", ".")
        run(reference, "dvc", "checkout", "-q")
