"""`python -m pipeline diff`: reading eval metrics files (replicas contract, and files from before replicas),
the verdicts and their order, the table and the JSON; then, driven through real git and DVC (slow), a tiny project
with two commits, the workspace, an experiment name and an unknown revision.

The tiny project's eval metrics are written by hand in the contract's format (metrics/eval/<ds>/<model>.json with
medians under the headline names and `per_replica` keyed "0".."R-1"); one stage (`rnn`) writes sine/rnn.json from
a param so that `dvc exp run -S shift=...` makes an experiment.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline.experiments import diff
from pipeline.analysis import stats
from pipeline.errors import PipelineError
from pipeline.cli import cli

from conftest import source_env

LEARNED = [0.10, 0.11, 0.12, 0.13, 0.14]


def eval_metrics(test_rmse, rollout_rmse=None, valid_horizon=None, deterministic=False) -> dict:
    """An eval metrics file in the replicas contract's format (the fields diff reads, plus the spread)."""
    replicas = len(test_rmse)
    columns = {"test_rmse": test_rmse, "rollout_rmse": rollout_rmse, "valid_horizon": valid_horizon}
    columns = {key: values for key, values in columns.items() if values is not None}
    data = {"replicas": replicas, "deterministic": deterministic,
            "test": {"mse": stats.median(test_rmse) ** 2, "rmse": stats.median(test_rmse), "mae": 0.0}}
    if rollout_rmse is not None:
        data["rollout"] = {"steps": 10, "mse": 0.0, "rmse": stats.median(rollout_rmse),
                           "rmse_at": {"1": 0.0}, "valid_horizon": stats.median(valid_horizon)}
    data["spread"] = {key: stats.spread(values) for key, values in columns.items()}
    data["per_replica"] = {str(r): {key: values[r] for key, values in columns.items()} for r in range(replicas)}
    data["median_replica"] = 0
    return data


def legacy_metrics(test_rmse, rollout_rmse, valid_horizon) -> dict:
    """A file from before replicas existed: headline values only."""
    return {"test": {"mse": test_rmse ** 2, "rmse": test_rmse, "mae": 0.0},
            "rollout": {"steps": 10, "mse": rollout_rmse ** 2, "rmse": rollout_rmse, "valid_horizon": valid_horizon}}


def shifted(values, by):
    return [round(value + by, 6) for value in values]


# ------------------------------------------------------------------------------------------------ without DVC


def test_replica_values_read_the_contract_and_files_from_before_replicas():
    data = eval_metrics(LEARNED, shifted(LEARNED, 1), [10, 11, 12, 13, 14])
    assert diff.replica_values(data) == {"test.rmse": LEARNED, "rollout.rmse": shifted(LEARNED, 1),
                                         "rollout.valid_horizon": [10, 11, 12, 13, 14]}
    assert diff.replica_values(eval_metrics([0.5])) == {"test.rmse": [0.5]}  # no rollout: no rollout metrics
    assert diff.replica_values(legacy_metrics(0.2, 0.7, 31)) == {
        "test.rmse": [0.2], "rollout.rmse": [0.7], "rollout.valid_horizon": [31.0]}


def test_replicas_are_read_in_index_order_and_nan_is_the_worst_value():
    data = {"test": {"rmse": 2.0}, "rollout": {"rmse": 1.0, "valid_horizon": 3},
            "per_replica": {str(r): {"test_rmse": float(r), "rollout_rmse": float("nan") if r == 2 else 1.0,
                                     "valid_horizon": float("nan") if r == 2 else 3}
                            for r in (10, 2, 0, 1, 9, 3, 4, 5, 6, 7, 8)}}
    found = diff.replica_values(data)
    assert found["test.rmse"] == [float(r) for r in range(11)]
    assert found["rollout.rmse"][2] == float("inf")              # lower is better: NaN is the worst
    assert found["rollout.valid_horizon"][2] == float("-inf")    # higher is better


def rows_for(a_pairs, b_pairs):
    return [(row.dataset, row.model, row.metric.name, row.verdict) for row in diff.compare(a_pairs, b_pairs)]


def test_real_changes_come_first_then_noise_then_unchanged_then_one_sided():
    a = {("sine", "gru"): {"test.rmse": LEARNED, "rollout.rmse": LEARNED},
         ("sine", "persistence"): {"test.rmse": [0.5]},
         ("ramp", "gru"): {"test.rmse": LEARNED},
         ("memory", "lstm"): {"test.rmse": LEARNED}}
    b = {("sine", "gru"): {"test.rmse": shifted(LEARNED, 0.005), "rollout.rmse": shifted(LEARNED, -1)},
         ("sine", "persistence"): {"test.rmse": [0.5]},
         ("ramp", "gru"): {"test.rmse": shifted(LEARNED, 1)},
         ("sine", "gru2"): {"test.rmse": LEARNED}}
    assert rows_for(a, b) == [
        ("ramp", "gru", "test.rmse", "worse"),
        ("sine", "gru", "rollout.rmse", "better"),
        ("sine", "gru", "test.rmse", "within seed noise"),
        ("sine", "persistence", "test.rmse", "unchanged"),
        ("sine", "gru2", "test.rmse", "added"),
        ("memory", "lstm", "test.rmse", "removed"),
    ]


def test_table_is_aligned_with_six_significant_digits_and_footnotes():
    a = {("sine", "gru"): {"test.rmse": [0.1234567891, 0.2, 0.3, 0.4, 0.5]},
         ("sine", "rnn"): {"test.rmse": [1.0, 2.0, 3.0]},
         ("sine", "linear"): {"test.rmse": [0.25]}}
    b = {("sine", "gru"): {"test.rmse": [1.1, 1.2, 1.3, 1.4, 1.5]},
         ("sine", "rnn"): {"test.rmse": [4.0, 5.0, 6.0]},
         ("sine", "linear"): {"test.rmse": [0.5]},
         ("sine", "gru2"): {"test.rmse": [0.5, 0.6]}}
    text = diff.render(diff.compare(a, b), diff.Side("HEAD", "0123456789abcdef"), diff.Side("workspace"))
    lines = text.splitlines()
    assert lines[0] == f"A: HEAD (0123456)  B: workspace  verdict of B against A: {diff.test_name()}"
    table = lines[2:6]
    assert table[0].split() == ["dataset", "model", "metric", "median", "A", "median", "B", "change", "replicas",
                                "p", "q", "effect", "of", "B", "[interval]", "verdict"]
    # 2 testable rows (gru 5/5, rnn 3/3): gru's q = 0.00794 x 2 / 1; its effect the median ratio of B to A
    assert table[1].split() == ["sine", "gru", "test.rmse", "0.3", "1.3", "+1", "5/5", "0.00794", "0.0159",
                                "4.3x", "higher", "[2.6x-11x]", "worse"]
    header = table[0]
    for line in table[1:]:
        assert line.index("test.rmse") == header.index("metric")                 # text columns: left-aligned
        assert line[header.index("verdict"):].rstrip() in {"worse", "within seed noise"}
        for title in ("median A", "median B", "change", " p ", " q "):          # numbers: right-aligned
            end = header.index(title) + len(title.rstrip())
            assert line[end - 1] != " " and line[end] == " ", (title, line)
    assert "linear" in table[2] and "1/1*" in table[2] and "sine" in table[3] and "3/3*" in table[3]
    assert "Added (only in B): sine/gru2" in lines
    assert any(line.startswith("* 1/1 replicas: one value on a side allows no test") for line in lines)
    assert any(line.startswith("* 3/3 replicas: the smallest possible p is 0.1 > 0.05") for line in lines)
    assert lines[-1] == ("0 better, 1 worse, 2 within seed noise, 0 unchanged; 1 change found among 2 tested rows "
                         "at false discovery rate 0.05: at most 0.05 of them expected to be false, 1 pair added")
    assert "2x higher " in table[2] and "[" not in table[2]  # one replica a side: a factor, no interval


def test_six_significant_digits():
    a = {("d", "m"): {"test.rmse": [0.123456789]}}
    b = {("d", "m"): {"test.rmse": [1234567.0]}}
    text = diff.render(diff.compare(a, b), diff.Side("a", "1" * 40), diff.Side("b", "2" * 40))
    assert "0.123457" in text and "1.23457e+06" in text and "+1.23457e+06" in text


# ------------------------------------------------------------------------------------------------ with git and DVC

HAND_WRITTEN = ["memory/gru", "memory/rnn", "memory/lstm", "ramp/gru", "sine/gru", "sine/gru2", "sine/lstm",
                "sine/persistence", "sine/old"]

WRITE_RNN = """\
import json, os, yaml
shift = yaml.safe_load(open("params.yaml"))["shift"]
values = [round(v + shift, 6) for v in [0.10, 0.11, 0.12, 0.13, 0.14]]
per_replica = {str(r): {"test_rmse": v, "rollout_rmse": v, "valid_horizon": 5} for r, v in enumerate(values)}
data = {"replicas": 5, "deterministic": False, "test": {"rmse": values[2]},
        "rollout": {"rmse": values[2], "valid_horizon": 5}, "per_replica": per_replica}
os.makedirs("metrics/eval/sine", exist_ok=True)
with open("metrics/eval/sine/rnn.json", "w") as f:
    json.dump(data, f)
"""

# Commit 1 (A) -> commit 2 (B), and the verdict each row should get.
FIRST = {
    "memory/gru": eval_metrics(LEARNED),
    "memory/rnn": eval_metrics([0.5, 0.6, 0.7]),
    "memory/lstm": eval_metrics(LEARNED),
    "ramp/gru": eval_metrics(LEARNED, LEARNED, [10, 11, 12, 13, 14]),
    "sine/gru": eval_metrics(LEARNED, LEARNED, [10, 11, 12, 13, 14]),
    "sine/lstm": eval_metrics(LEARNED, LEARNED, [1, 2, 3, 4, 5]),
    "sine/persistence": eval_metrics([0.7], [0.9], [0], deterministic=True),
    "sine/old": legacy_metrics(0.2, 0.7, 31),
}
SECOND = {
    "memory/gru": eval_metrics(shifted(LEARNED, 0.015)),                                   # overlapping: noise
    "memory/rnn": eval_metrics([0.1, 0.2, 0.3]),                                          # 3 vs 3: never significant
    "ramp/gru": eval_metrics(LEARNED, shifted(LEARNED, 0.02), [20, 21, 22, 23, 24]),      # horizon better
    "sine/gru": eval_metrics(shifted(LEARNED, -0.1), shifted(LEARNED, 1), [12, 10, 13, 11, 15]),
    "sine/gru2": eval_metrics(LEARNED, LEARNED, [1, 2, 3, 4, 5]),                          # added
    "sine/lstm": FIRST["sine/lstm"],
    "sine/persistence": FIRST["sine/persistence"],
    "sine/old": eval_metrics(LEARNED, LEARNED, [31, 32, 33, 34, 35]),                      # 1 replica -> 5
}
EXPECTED = [
    ("ramp", "gru", "rollout.valid_horizon", "better", "5/5"),
    ("sine", "gru", "test.rmse", "better", "5/5"),
    ("sine", "gru", "rollout.rmse", "worse", "5/5"),
    ("memory", "gru", "test.rmse", "within seed noise", "5/5"),
    ("memory", "rnn", "test.rmse", "within seed noise", "3/3*"),
    ("ramp", "gru", "rollout.rmse", "within seed noise", "5/5"),
    ("sine", "gru", "rollout.valid_horizon", "within seed noise", "5/5"),
    ("sine", "old", "test.rmse", "within seed noise", "1/5*"),
    ("sine", "old", "rollout.rmse", "within seed noise", "1/5*"),
    ("sine", "old", "rollout.valid_horizon", "within seed noise", "1/5*"),
    ("ramp", "gru", "test.rmse", "unchanged", "5/5"),
    ("sine", "lstm", "test.rmse", "unchanged", "5/5"),
    ("sine", "lstm", "rollout.rmse", "unchanged", "5/5"),
    ("sine", "lstm", "rollout.valid_horizon", "unchanged", "5/5"),
    ("sine", "persistence", "test.rmse", "unchanged", "1/1"),
    ("sine", "persistence", "rollout.rmse", "unchanged", "1/1"),
    ("sine", "persistence", "rollout.valid_horizon", "unchanged", "1/1"),
    ("sine", "rnn", "test.rmse", "unchanged", "5/5"),
    ("sine", "rnn", "rollout.rmse", "unchanged", "5/5"),
    ("sine", "rnn", "rollout.valid_horizon", "unchanged", "5/5"),
]


def sh(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """A command with the venv first on PATH (the stage runs `python`) and this checkout's `pipeline` importable."""
    env = dict(source_env(), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def write_metrics(repo: Path, files: dict) -> None:
    for name in HAND_WRITTEN:
        path = repo / "metrics" / "eval" / f"{name}.json"
        if name in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(files[name], indent=2) + "\n")
        elif path.exists():
            path.unlink()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """Two commits (FIRST, then SECOND) and an experiment `myexp` with shift=1 (sine/rnn 1.0 worse)."""
    repo = tmp_path_factory.mktemp("diffrepo")
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "config", "core.analytics", "false")
    dvc_yaml = {"stages": {
        "hand_written": {"cmd": "echo metrics are written by hand",
                         "metrics": [{f"metrics/eval/{name}.json": {"cache": False}} for name in HAND_WRITTEN]},
        "rnn": {"cmd": "python write_rnn.py", "deps": ["write_rnn.py"], "params": ["shift"],
                "metrics": [{"metrics/eval/sine/rnn.json": {"cache": False}}]},
    }}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    (repo / "params.yaml").write_text("shift: 0.0\n")
    (repo / "write_rnn.py").write_text(WRITE_RNN)
    sh(repo, "dvc", "repro", "rnn")
    write_metrics(repo, FIRST)
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "first")
    write_metrics(repo, SECOND)
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "second")
    sh(repo, "dvc", "exp", "run", "-q", "-n", "myexp", "-S", "shift=1.0", "rnn")
    sh(repo, "git", "checkout", "-q", "--", ".")   # the experiment was applied to the workspace: back to HEAD
    assert sh(repo, "git", "status", "--porcelain").stdout == ""
    return repo


def table_rows(output: str) -> list[tuple[str, ...]]:
    """(dataset, model, metric, verdict, replicas) for each table row of the diff's output."""
    found = []
    for line in output.splitlines():
        match = re.match(r"^(\S+)\s+(\S+)\s+(\S+)\s+\S+\s+\S+\s+\S+\s+(\S+)\s+.*?"
                         r"(better|worse|within seed noise|unchanged)\s*$", line)
        if match and match.group(1) != "dataset" and "." in match.group(3):
            found.append((*match.group(1, 2, 3), match.group(5), match.group(4)))
    return found


@pytest.mark.slow
def test_diff_across_two_commits_orders_verdicts(repo):
    done = sh(repo, sys.executable, "-m", "pipeline", "diff", "HEAD~1", "HEAD")
    assert done.stderr == "" and "Traceback" not in done.stdout
    lines = done.stdout.splitlines()
    first, second = (sh(repo, "git", "rev-parse", rev).stdout.strip() for rev in ("HEAD~1", "HEAD"))
    assert lines[0] == f"A: HEAD~1 ({first[:7]})  B: HEAD ({second[:7]})  verdict of B against A: " \
                       "exact two-sided rank test over replicas, false discovery rate 0.05 over the diff " \
                       "(Benjamini-Hochberg)"
    assert table_rows(done.stdout) == EXPECTED
    assert "Added (only in B): sine/gru2" in lines and "Removed (only in A): memory/lstm" in lines
    assert any(line.startswith("* 3/3 replicas: the smallest possible p is 0.1 > 0.05") for line in lines)
    assert any(line.startswith("* 1/5 replicas: one value on a side allows no test") for line in lines)
    assert lines[-1] == ("2 better, 1 worse, 7 within seed noise, 10 unchanged; 3 changes found among 7 tested rows "
                         "at false discovery rate 0.05: at most 0.15 of them expected to be false, 1 pair added, "
                         "1 pair removed")
    gru_test = next(line for line in lines if line.startswith("sine") and " gru " in line and "test.rmse" in line)
    assert gru_test.split()[3:8] == ["0.12", "0.02", "-0.1", "5/5", "0.00794"]


@pytest.mark.slow
def test_json_lists_every_row(repo):
    done = sh(repo, sys.executable, "-m", "pipeline", "diff", "HEAD~1", "HEAD", "--json")
    rows = json.loads(done.stdout)
    assert [(r["dataset"], r["model"], r["metric"], r["verdict"]) for r in rows][:len(EXPECTED)] == \
           [row[:4] for row in EXPECTED]
    better = rows[1]
    assert better["values_a"] == LEARNED and better["values_b"] == shifted(LEARNED, -0.1)
    assert better["median_a"] == 0.12 and better["median_b"] == 0.02 and better["change"] == -0.1
    assert better["p_value"] == pytest.approx(2 / 252) and better["replicas_a"] == better["replicas_b"] == 5
    assert {(r["dataset"], r["model"], r["verdict"]) for r in rows[len(EXPECTED):]} == {
        ("sine", "gru2", "added"), ("memory", "lstm", "removed")}


@pytest.mark.slow
def test_default_is_head_against_the_workspace(repo, monkeypatch):
    monkeypatch.chdir(repo)
    assert diff.run().splitlines()[-1] == ("0 better, 0 worse, 0 within seed noise, 23 unchanged; 0 changes found "
                                           "among 0 tested rows at false discovery rate 0.05: at most 0 of them "
                                           "expected to be false")
    path = repo / "metrics" / "eval" / "sine" / "lstm.json"
    saved = path.read_text()
    try:
        path.write_text(json.dumps(eval_metrics(shifted(LEARNED, 0.5), LEARNED, [1, 2, 3, 4, 5])))
        result = CliRunner().invoke(cli, ["diff"])
    finally:
        path.write_text(saved)
    assert result.exit_code == 0, result.output
    head = sh(repo, "git", "rev-parse", "--short=7", "HEAD").stdout.strip()
    assert result.output.splitlines()[0].startswith(f"A: HEAD ({head})  B: workspace  ")
    assert table_rows(result.output)[0] == ("sine", "lstm", "test.rmse", "worse", "5/5")
    assert result.output.splitlines()[-1] == ("0 better, 1 worse, 0 within seed noise, 22 unchanged; 1 change found "
                                              "among 1 tested rows at false discovery rate 0.05: at most 0.05 of "
                                              "them expected to be false")


@pytest.mark.slow
def test_an_experiment_name_is_a_revision(repo):
    done = sh(repo, sys.executable, "-m", "pipeline", "diff", "HEAD", "myexp")
    commit = sh(repo, "dvc", "exp", "list", "--sha-only").stdout.split()
    assert done.stdout.splitlines()[0].startswith(f"A: HEAD (") and f"B: myexp ({commit[-1][:7]})" in done.stdout
    assert table_rows(done.stdout)[:2] == [("sine", "rnn", "test.rmse", "worse", "5/5"),
                                           ("sine", "rnn", "rollout.rmse", "worse", "5/5")]
    assert done.stdout.splitlines()[-1].startswith("0 better, 2 worse, 0 within seed noise, 21 unchanged; 2 changes")


@pytest.mark.slow
def test_an_unknown_revision_is_one_error_line(repo):
    done = sh(repo, sys.executable, "-m", "pipeline", "diff", "HEAD", "no-such-exp", check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "Error: unknown revision 'no-such-exp': neither a git revision nor an experiment name DVC knows "
        "(see `git log` and `dvc exp list -A`)"]


@pytest.mark.slow
def test_outside_a_dvc_project_is_one_error_line(tmp_path):
    done = sh(tmp_path, sys.executable, "-m", "pipeline", "diff", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "Error: not inside a DVC project: run `python -m pipeline diff` in the project's folder"]


@pytest.mark.slow
def test_a_rollout_only_one_file_has_keeps_its_pair(tmp_path):
    """dvc.api.metrics_show would return this file's `rollout` as a bare `rollout` key (the only file with one);
    diff reads per file, so sine/gru keeps its rollout rows."""
    sh(tmp_path, "git", "init", "-q", "-b", "main")
    sh(tmp_path, "dvc", "init", "-q")
    files = {"memory/gru": eval_metrics(LEARNED), "sine/gru": eval_metrics(LEARNED, LEARNED, [1, 2, 3, 4, 5])}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"w": {"cmd": "true", "metrics": [
        {f"metrics/eval/{name}.json": {"cache": False}} for name in files]}}}))
    for name, data in files.items():
        (tmp_path / "metrics" / "eval" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "metrics" / "eval" / f"{name}.json").write_text(json.dumps(data))
    sh(tmp_path, "git", "add", "-A")
    sh(tmp_path, "git", "commit", "-q", "-m", "one")
    rows = json.loads(diff.run("HEAD", "workspace", as_json=True, root=tmp_path))
    assert [(r["dataset"], r["model"], r["metric"], r["verdict"]) for r in rows] == [
        ("memory", "gru", "test.rmse", "unchanged"), ("sine", "gru", "test.rmse", "unchanged"),
        ("sine", "gru", "rollout.rmse", "unchanged"), ("sine", "gru", "rollout.valid_horizon", "unchanged")]


@pytest.mark.slow
def test_a_corrupt_eval_file_is_one_error_line(repo, monkeypatch):
    monkeypatch.chdir(repo)
    path = repo / "metrics" / "eval" / "sine" / "lstm.json"
    saved = path.read_text()
    try:
        path.write_text("{not json")
        result = CliRunner().invoke(cli, ["diff"])
    finally:
        path.write_text(saved)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.strip().splitlines() == [
        "Error: metrics/eval/sine/lstm.json at workspace cannot be read (JSON file structure is corrupted)"]


@pytest.mark.slow
def test_two_names_of_one_commit(repo):
    done = sh(repo, sys.executable, "-m", "pipeline", "diff", "main", "HEAD")
    assert done.stdout.splitlines()[-1].startswith("0 better, 0 worse, 0 within seed noise, 23 unchanged; 0 changes")


@pytest.mark.slow
def test_read_many_keeps_each_sides_error_to_itself(repo):
    """A sweep reads its base and every experiment at once: one unreadable side must not hide the others."""
    path = repo / "metrics" / "eval" / "sine" / "lstm.json"
    saved = path.read_text()
    try:
        path.write_text("{not json")
        found = diff.read_many(["HEAD", "workspace", "myexp"], repo)
    finally:
        path.write_text(saved)
    (head, head_pairs), (workspace, broken), (exp, exp_pairs) = found
    assert (head.name, workspace.name, exp.name) == ("HEAD", "workspace", "myexp")
    assert isinstance(broken, PipelineError) and "metrics/eval/sine/lstm.json at workspace" in broken.message
    assert head_pairs[("sine", "lstm")] == exp_pairs[("sine", "lstm")]
    assert diff.summary(diff.compare(head_pairs, exp_pairs), fdr=None) == \
        "0 better, 2 worse, 0 within seed noise, 21 unchanged"
