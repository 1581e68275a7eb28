"""Drive the real `dvc` CLI on a tiny copy of the project and check which stages actually run.

`dvc status` does not list downstream stages, and `dvc repro --dry` misreports cached stages, so every check
here reads the stages that `dvc repro` really ran from its output.
"""

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, tiny_params

pytestmark = pytest.mark.slow

COPIED = ["dvc.yaml", ".dvcignore", ".gitignore", "pipeline", "data/raw", ".dvc/config", ".dvc/plots"]


def tiny_pipeline_params() -> dict:
    raw = tiny_params()
    raw["datasets"] = ["sine", "memory_short"]
    raw["models"] = {"persistence": {}, "linear": {}, "gru": {},
                     "gru_fr": {"kind": "gru", "datasets": ["sine"], "train": {"rollout_steps": 3}}}
    return raw


def run(cwd: Path, *args: str) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def set_params(repo: Path, raw: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def copy_project(repo: Path) -> None:
    """The files a pipeline run needs (code, dvc.yaml, DVC config and plot templates), without any results."""
    for item in COPIED:
        source, target = ROOT / item, repo / item
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC repository holding the project with tiny params, fully reproduced once and committed."""
    repo = tmp_path_factory.mktemp("repo")
    copy_project(repo)
    set_params(repo, tiny_pipeline_params())
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "dvc", "init", "-q", "--force")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")  # `dvc init --force` rewrote it
    first = run(repo, "dvc", "repro")
    stages = {f"{s}@{d}" for s in ("generate", "evaluate", "compare") for d in ("sine", "memory_short")}
    stages |= {"report"} | {f"train@{d}-{m}" for d in ("sine", "memory_short")
                            for m in ("persistence", "linear", "gru", "gru_fr")}  # gru_fr: a not-run record on memory
    assert ran(first) == stages
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "baseline")
    return repo


def reproduce_with(repo: Path, change) -> set[str]:
    """Apply `change` to the params, run `dvc repro`, return what ran; then restore (from the run-cache)."""
    raw = tiny_pipeline_params()
    changed = copy.deepcopy(raw)
    change(changed)
    set_params(repo, changed)
    stages = ran(run(repo, "dvc", "repro"))
    set_params(repo, raw)
    restored = run(repo, "dvc", "repro")
    assert not {s for s in ran(restored) if s.startswith(("train", "generate"))}, "restore should use the run-cache"
    return stages


def test_second_repro_does_nothing(repo):
    output = run(repo, "dvc", "repro")
    assert ran(output) == set()
    assert "up to date" in output


def test_model_size_retrains_but_never_regenerates(repo):
    stages = reproduce_with(repo, lambda p: p["model"].update(hidden=6))
    assert not any(s.startswith("generate") for s in stages)
    assert {"train@sine-gru", "evaluate@sine", "train@memory_short-gru", "report"} <= stages


def test_evaluate_params_never_retrain(repo):
    stages = reproduce_with(repo, lambda p: p["evaluate"].update(tolerance=0.2))
    assert stages and all(s.startswith(("evaluate", "compare", "report")) for s in stages)


def test_one_dataset_params_touch_only_that_dataset(repo):
    stages = reproduce_with(repo, lambda p: p["data"]["sine"].update(noise=0.01))
    assert "generate@sine" in stages and "train@sine-gru" in stages
    assert not any("memory_short" in s for s in stages)


def test_one_variant_params_retrain_only_that_variant(repo):
    stages = reproduce_with(repo, lambda p: p["models"]["gru"].update(layers=2))
    assert {s for s in stages if s.startswith("train")} == {"train@sine-gru", "train@memory_short-gru"}


def test_experiment_changes_metrics_and_going_back_uses_the_run_cache(repo):
    output = run(repo, "dvc", "exp", "run", "-S", "model.hidden=6")
    assert not any(s.startswith("generate") for s in ran(output))
    diff = run(repo, "dvc", "metrics", "diff")
    assert "metrics/eval/sine/gru.json" in diff and "test.rmse" in diff
    assert "model.hidden" in run(repo, "dvc", "params", "diff")
    back = run(repo, "dvc", "exp", "run", "-S", "model.hidden=4")
    assert not any(s.startswith("train") for s in ran(back)), "old params must be restored, not retrained"
    assert "is cached" in back
    run(repo, "git", "checkout", "--", ".")


def test_training_params_never_regenerate_data(repo):
    stages = reproduce_with(repo, lambda p: p["train"].update(lr=0.02))
    assert {"train@sine-gru", "train@memory_short-gru"} <= stages
    assert not any(s.startswith("generate") for s in stages)


def edit_code_and_reproduce(repo: Path, module: str) -> set[str]:
    """Append a comment to a pipeline module (its hash changes, its behaviour does not), run `dvc repro`,
    then restore the file and the workspace."""
    path = repo / "pipeline" / module
    original = path.read_text()
    path.write_text(original + "\n# an edit\n")
    try:
        return ran(run(repo, "dvc", "repro"))
    finally:
        path.write_text(original)
        run(repo, "dvc", "repro")


def test_model_code_change_retrains_from_train_onward(repo):
    stages = edit_code_and_reproduce(repo, "learning/models.py")
    assert {f"train@{d}-{m}" for d in ("sine", "memory_short") for m in ("persistence", "linear", "gru")} <= stages
    assert not any(s.startswith("generate") for s in stages)


def test_plotting_code_change_only_redraws(repo):
    stages = edit_code_and_reproduce(repo, "figures/plotting.py")
    assert {"generate@sine", "compare@sine", "compare@memory_short"} <= stages  # the stages that draw
    assert not any(s.startswith(("train", "evaluate")) for s in stages)


def test_adding_a_model_trains_only_the_new_pairs(repo):
    def add_rnn(p):
        p["models"]["rnn"] = {}

    stages = reproduce_with(repo, add_rnn)
    assert {s for s in stages if s.startswith("train")} == {"train@sine-rnn", "train@memory_short-rnn"}
    assert not any(s.startswith("generate") for s in stages)


def test_a_dataset_train_override_retrains_only_that_dataset(repo):
    """`data.<name>.train:` changes how that dataset's pairs train: its train stages rerun and nothing of any
    other dataset. Its generate stage reruns too (DVC watches the whole `data.<name>` entry for it) but writes
    the same bytes, so the baselines, which come out the same, are not re-evaluated (nor, in this 2-epoch
    profile, a gru whose best weights may stay its initial ones)."""
    data_file = repo / "data" / "datasets" / "memory_short.npz"
    before = data_file.read_bytes()
    stages = reproduce_with(repo, lambda p: p["data"]["memory_short"].update(train={"lr": 0.02}))
    assert "train@memory_short-gru" in stages
    assert not any("@sine" in s for s in stages)
    assert data_file.read_bytes() == before


def test_a_variant_train_override_retrains_only_that_variant(repo):
    stages = reproduce_with(repo, lambda p: p["models"]["gru"].update(train={"schedule": "cosine"}))
    assert {s for s in stages if s.startswith("train")} == {"train@sine-gru", "train@memory_short-gru"}


def test_a_free_running_variant_retrains_only_itself(repo):
    """Its settings live under models.gru_fr: changing them retrains that variant and nothing else (its
    teacher-forced twin gru included); its not-run record on memory_short is rewritten too (the same bytes, a
    fraction of a second: DVC sees the variant's settings change). The evaluate stages, which list a dataset's
    models, score their models again (seconds; DVC cannot watch the names of a section alone)."""
    stages = reproduce_with(repo, lambda p: p["models"]["gru_fr"]["train"].update(rollout_steps=2))
    assert {s for s in stages if s.startswith("train")} == {"train@sine-gru_fr", "train@memory_short-gru_fr"}
    assert "evaluate@sine" in stages and not any(s.startswith("generate") for s in stages)



def test_exp_run_narrowing_datasets_just_works(repo):
    """`dvc exp run -S 'datasets=[sine]'` (issue 30): the variants with `datasets:` run on those of theirs that
    are still listed, nothing is retrained (every pair of sine is unchanged), and the report covers sine alone."""
    try:
        output = run(repo, "dvc", "exp", "run", "-S", "datasets=[sine]")
        stages = ran(output)
        assert "report" in stages and not any(s.startswith(("train", "generate")) for s in stages), output
        summary = yaml.safe_load((repo / "metrics" / "summary.json").read_text())
        assert list(summary) == ["sine"] and "gru_fr" in summary["sine"]
    finally:
        run(repo, "git", "checkout", "--", ".")
        run(repo, "dvc", "checkout", "--force")
    assert ran(run(repo, "dvc", "repro")) == set()


def test_exp_run_narrowing_to_datasets_a_variant_does_not_run_on(repo):
    """Narrowed to memory_short, gru_fr runs nowhere: its stage there keeps its not-run record, the check says
    so in a note, and the leaderboard has no gru_fr row."""
    try:
        run(repo, "dvc", "exp", "run", "-S", "datasets=[memory_short]")
        note = run(repo, sys.executable, "-m", "pipeline", "check")
        assert "note: models.gru_fr runs on none of the listed datasets (its datasets: sine)" in note
        summary = yaml.safe_load((repo / "metrics" / "summary.json").read_text())
        assert list(summary) == ["memory_short"] and "gru_fr" not in summary["memory_short"]
    finally:
        run(repo, "git", "checkout", "--", ".")
        run(repo, "dvc", "checkout", "--force")
