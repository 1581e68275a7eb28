"""The team workflows around the pipeline, driven through the real `dvc` CLI on a tiny copy of the project:
sharing results through a DVC remote, a queued parameter sweep, and the one-line params.yaml diff of
`dvc exp run -S`.

The tiny repository keeps the REAL params.yaml, comments and layout included, and shrinks it by substituting
values in its text (one dataset, three models, 2 epochs), so the `-S` check holds for the file we ship.
"""

import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from test_pipeline import copy_project, ran

pytestmark = pytest.mark.slow

STAGES = {"generate@sine", "evaluate@sine", "compare@sine", "report"} | {
    f"train@sine-{model}" for model in ("persistence", "mean", "linear", "gru", "rnn_fr")}  # rnn_fr: a not-run record

# Cached outputs (DVC storage, not git) that a clone must get from the remote instead of recomputing them.
CACHED_OUTPUTS = ["data/datasets/sine.npz", "data/models/sine/persistence.npz", "data/models/sine/linear.npz",
                  "data/models/sine/gru.npz", "plots/train/sine/gru.csv", "plots/rollout/sine/gru.csv",
                  "plots/leaderboard.md"]

# (pattern, replacement, expected number of matches) applied to the real params.yaml, line by line.
SHRINK = [
    (r"^device: auto(\s)", r"device: cpu \1", 1),            # same width: the comment column stays put
    (r"^- (sincos|ramp|trajectory|memory_short|memory_long|mackey_glass|lorenz|adding)\n", "", 8),
    (r"^  (elman|concat|rnn): \{\}\n", "", 3),
    (r"^  lstm:\n    forget_bias: [^\n]*\n", "", 1),
    (r"^      epochs: 200$", "      epochs: 2", 1),                # data.sine.train
    (r"^    train_until: 75\.0$", "    train_until: 20.0", 1),
    (r"^    extrapolate_until: 175\.0$", "    extrapolate_until: 30.0", 1),
    (r"^  hidden: 16$", "  hidden: 4", 1),
    (r"^  epochs: 100$", "  epochs: 2", 1),
    (r"^  batch_size: 64$", "  batch_size: 16", 1),
    (r"^  patience: 10( +)#", r"  patience: 2 \1#", 1),
]


def tiny_real_params() -> str:
    """The real params.yaml, byte for byte, except for the values that make it tiny (see SHRINK)."""
    text = (ROOT / "params.yaml").read_text()
    for pattern, replacement, count in SHRINK:
        text, made = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert made == count, f"params.yaml changed shape: {pattern!r} matched {made} times, expected {count}"
    return text


def sh(cwd: Path, *args: str, timeout: float = 300, check: bool = True, stdout_only: bool = False) -> str:
    """Run a command with the venv first on PATH (stages call `python -m pipeline`); return stdout + stderr."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    try:
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(args)} did not finish in {timeout} s:\n{exc.stdout}\n{exc.stderr}")
    if check:
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout if stdout_only else done.stdout + done.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC repository with a local-directory DVC remote (committed first), reproduced and committed."""
    repo = tmp_path_factory.mktemp("repo")
    storage = tmp_path_factory.mktemp("storage")
    copy_project(repo)
    (repo / "params.yaml").write_text(tiny_real_params())
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "dvc", "init", "-q", "--force")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")  # `dvc init --force` rewrote it
    sh(repo, "dvc", "remote", "add", "-d", "local", str(storage))
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "project and DVC remote")  # before any experiment (DVC-FACTS 2h)
    assert ran(sh(repo, "dvc", "repro")) == STAGES
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "results")
    assert sh(repo, "git", "status", "--porcelain") == ""
    return repo


def test_a_clone_pulls_the_results_instead_of_recomputing_them(repo, tmp_path):
    pushed = sh(repo, "dvc", "push")
    assert re.search(r"\b[1-9]\d* files? pushed", pushed), pushed

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))  # non-bare source: HEAD is main, no -b needed
    assert (clone / "dvc.lock").is_file() and (clone / "metrics" / "summary.json").is_file()  # from git
    assert not any((clone / path).exists() for path in CACHED_OUTPUTS)  # cached outputs are not in git

    before = sh(clone, "dvc", "status")
    assert "not in cache" in before and "data/models/sine/gru.npz" in before, before
    assert "up to date" not in before

    pulled = sh(clone, "dvc", "pull")
    assert re.search(r"\b[1-9]\d* files? fetched", pulled), pulled
    for path in CACHED_OUTPUTS:
        assert (clone / path).read_bytes() == (repo / path).read_bytes(), path

    assert "Data and pipelines are up to date." in sh(clone, "dvc", "status")
    again = sh(clone, "dvc", "repro")
    assert "Running stage" not in again, again
    assert ran(again) == set() and "Data and pipelines are up to date." in again
    assert sh(clone, "git", "status", "--porcelain") == ""  # dvc.lock and the metrics were not rewritten


def experiments(repo: Path, names: list[str]) -> dict[str, dict]:
    """`dvc exp show --json` for the named experiments of HEAD: name -> {state, hidden, metrics}."""
    head = sh(repo, "git", "rev-parse", "HEAD").strip()
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json", stdout_only=True))
    baseline = next(entry for entry in shown if entry["rev"] == head)
    found = {}
    for exp in baseline.get("experiments") or []:
        if exp["name"] not in names:
            continue
        (rev,) = exp["revs"]
        data = rev["data"]
        found[exp["name"]] = {
            "state": (exp.get("executor") or {}).get("state"),
            "hidden": data["params"]["params.yaml"]["data"]["model"]["hidden"],
            "metrics": {path: value["data"] for path, value in data["metrics"].items()},
        }
    return found


def test_a_queued_sweep_runs_every_experiment(repo):
    # hidden 5 and 6, not the tiny profile's 4: both experiments then really train (4 would be a no-op).
    queued = sh(repo, "dvc", "exp", "run", "--queue", "-S", "model.hidden=5,6")
    names = re.findall(r"Queued experiment '([^']+)'", queued)
    assert len(names) == 2, queued
    status = sh(repo, "dvc", "queue", "status")
    assert all(re.search(rf"{name}\s.*\bQueued\b", status) for name in names), status

    try:
        # Synchronous: starts 2 workers, follows the logs and returns when both are collected. Its exit code is 0
        # even when an experiment fails, so the states are checked below.
        output = sh(repo, "dvc", "exp", "run", "--run-all", "-j", "2", timeout=300)
    finally:
        sh(repo, "dvc", "queue", "stop", "--kill", check=False, timeout=60)
    assert "Failed to reproduce" not in output, output
    assert "Running stage 'train@sine-gru'" in output  # the sweep trained, not only restored from the run-cache

    status = sh(repo, "dvc", "queue", "status")
    assert all(re.search(rf"{name}\s.*\bSuccess\b", status) for name in names), status

    found = experiments(repo, names)
    assert set(found) == set(names)
    assert all(exp["state"] == "success" for exp in found.values()), found
    by_hidden = {exp["hidden"]: exp["metrics"] for exp in found.values()}
    assert sorted(by_hidden) == [5, 6]
    gru = "metrics/eval/sine/gru.json"
    assert by_hidden[5][gru] != by_hidden[6][gru]
    assert by_hidden[5]["metrics/train/sine/gru.json"]["parameters"] != \
        by_hidden[6]["metrics/train/sine/gru.json"]["parameters"]
    # the baselines ignore model.hidden: the same numbers in both experiments
    for model in ("persistence", "linear"):
        assert by_hidden[5][f"metrics/eval/sine/{model}.json"] == by_hidden[6][f"metrics/eval/sine/{model}.json"]
    assert sh(repo, "git", "status", "--porcelain") == ""  # queued runs leave the workspace alone


def test_exp_run_set_param_changes_only_that_line_of_params_yaml(repo):
    before = (repo / "params.yaml").read_text()
    assert before == tiny_real_params()
    try:
        sh(repo, "dvc", "exp", "run", "-S", "model.hidden=6")
        after = (repo / "params.yaml").read_text()
        changed = [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
                   if line[:1] in "+-" and not line.startswith(("+++", "---"))]
        assert changed == ["-  hidden: 4", "+  hidden: 6"], "\n".join(changed)
        assert sh(repo, "git", "diff", "--numstat", "--", "params.yaml").split() == ["1", "1", "params.yaml"]
    finally:
        sh(repo, "git", "checkout", "--", ".")
        sh(repo, "dvc", "checkout", "--force")


@pytest.mark.parametrize("override, old, new", [
    ("model.hidden=17", ["  hidden: 16"], ["  hidden: 17"]),
    ("train.lr=1e-3", ["  lr: 0.01"], ["  lr: 0.001"]),
    ("train.patience=3", ["  patience: 10       # early stopping: epochs without a better validation loss"],
     ["  patience: 3        # early stopping: epochs without a better validation loss"]),
    ("device=cpu", ["device: auto         # auto | cpu | cuda | cuda:N | mps   (auto: cuda, then mps, then cpu)"],
     ["device: cpu          # auto | cpu | cuda | cuda:N | mps   (auto: cuda, then mps, then cpu)"]),
    ("datasets=[sine,ramp]", ["- sincos", "- trajectory", "- memory_short", "- memory_long", "- mackey_glass", "- lorenz", "- adding"], []),
])
def test_the_real_params_yaml_is_in_the_form_that_set_param_writes(tmp_path, override, old, new):
    """The whole real file (not the shrunk copy) through DVC's own `-S` writer: only the overridden lines change."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    before = path.read_text()
    apply_overrides(path, [override])
    diff = list(difflib.ndiff(before.splitlines(), path.read_text().splitlines()))
    assert [line[2:] for line in diff if line.startswith("- ")] == old
    assert [line[2:] for line in diff if line.startswith("+ ")] == new
