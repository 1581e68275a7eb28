"""`python -m pipeline sweep`: the -S grammar, the names, the checks before anything starts, and (slow) a 2 x 2
sweep on a Dask LocalCluster of 2 worker processes, with a bare git repository as the remote and a local folder
as the DVC remote, one of its jobs killed and the sweep run again.

Every `python -m pipeline <stage>` started anywhere (wave 0, each worker's clone) appends a line to one shared
log through a sitecustomize.py put on PYTHONPATH by the test only; the same hook SIGKILLs the gru training of one
setting while a marker file exists.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks import cluster_bench
from conftest import ROOT, tiny_params
from pipeline.cluster import sweep
from pipeline.errors import SweepError
from test_pipeline import copy_project, ran, run, set_params

# DVC's line for a SIGKILLed stage command. DVC runs it through $SHELL, or /bin/sh when SHELL is unset (as on CI):
# bash execs the command and the status is -9; sh waits for it and exits 137 (128 + 9).
KILLED = re.compile(r"exited with (-9|137)\b")


# ---------------------------------------------------------------- fast: grammar, names

def test_the_product_of_the_comma_lists_in_dvc_grammar():
    assert sweep.expand(["model.hidden=8,16,32", "train.lr=0.01,0.003"]) == [
        (f"model.hidden={h}", f"train.lr={lr}") for h in (8, 16, 32) for lr in ("0.01", "0.003")]
    assert sweep.expand(["datasets=[sine,ramp]", "model.hidden=range(4,7,2)"]) == [
        ("datasets=[sine,ramp]", "model.hidden=4"), ("datasets=[sine,ramp]", "model.hidden=6")]


@pytest.mark.parametrize("specs, expected", [
    ([], "nothing to sweep"),
    (["model.hidden"], "-S 'model.hidden' is not KEY=VALUE"),
    (["model.hidden=8", "x=[a"], "-S x=[a: "),
])
def test_bad_grammar_is_one_line(specs, expected):
    with pytest.raises(SweepError) as error:
        sweep.expand(specs)
    assert expected in error.value.message and "\n" not in error.value.message


def test_names_come_from_the_settings_and_are_unique_and_ref_safe():
    jobs = sweep.plan(["model.hidden=8,16", "train.lr=0.01,1e-3"])
    assert [job.name for job in jobs] == ["sweep-hidden8-lr0.01", "sweep-hidden8-lr0.001",
                                          "sweep-hidden16-lr0.01", "sweep-hidden16-lr0.001"]  # as Hydra writes it
    odd = sweep.plan(["datasets=[sine,ramp],[sine]", "data.sine.noise=0.1"], prefix="try")
    assert [job.name for job in odd] == ["try-datasetssine_ramp-noise0.1", "try-datasetssine-noise0.1"]
    for job in odd + jobs:
        assert subprocess.run(["git", "check-ref-format", f"refs/exps/ab/cd/{job.name}"]).returncode == 0
    clash = sweep.plan(["a.x=1", "b.x=1,1.0"])  # a second setting with the same name gets a number
    assert [job.name for job in clash] == ["sweep-x1-x1", "sweep-x1-x1.0"]
    assert len({job.name for job in sweep.plan(["a.x=1,1"])}) == 2


def test_bad_values_are_one_line_each_from_the_real_validation(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    jobs = sweep.plan(["model.hidden=8,-1", "train.lr=abc", "model.hiden=3"])
    problems = sweep.validate(jobs, params)
    assert sorted(problems) == ["-S model.hidden=-1: params.yaml: model.hidden must be >= 1, got -1",
                                "-S model.hiden=3: Could not override 'model.hiden'.",
                                "-S train.lr=abc: params.yaml: train.lr must be a number, got 'abc'"]
    assert sweep.validate(sweep.plan(["model.hidden=8,16"]), params) == []


def test_only_data_settings_skip_wave_0():
    assert not sweep.changes_data(sweep.plan(["model.hidden=8", "train.lr=0.1"]))
    assert sweep.changes_data(sweep.plan(["data.sine.noise=0.1"]))
    assert sweep.changes_data(sweep.plan(["datasets=[sine]"]))
    assert not sweep.changes_data(sweep.plan(["dataset_x=1"]))


# ---------------------------------------------------------------- the checks, through the CLI (git + dvc, no run)

def sh(cwd: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    base = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                GIT_COMMITTER_EMAIL="t@t")
    done = subprocess.run(args, cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def make_repo(tmp: Path, raw: dict, git_remote: bool = True, dvc_remote: bool = True) -> Path:
    """The project with `raw` params, committed; with a bare git origin (HEAD pushed) and a local-folder DVC remote."""
    repo = tmp / "repo"
    repo.mkdir()
    copy_project(repo)
    set_params(repo, raw)
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "dvc", "init", "-q", "--force")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    if dvc_remote:
        (tmp / "storage").mkdir()
        sh(repo, "dvc", "remote", "add", "-d", "local", str(tmp / "storage"))
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "project and DVC remote")
    if git_remote:
        sh(tmp, "git", "init", "-q", "--bare", "origin.git")
        sh(tmp / "origin.git", "git", "symbolic-ref", "HEAD", "refs/heads/main")
        sh(repo, "git", "remote", "add", "origin", str(tmp / "origin.git"))
        sh(repo, "git", "push", "-q", "origin", "main")
    return repo


def sweep_cli(repo: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    pythonpath = os.pathsep.join(filter(None, [(env or {}).get("PYTHONPATH"), str(ROOT)]))
    return sh(repo, sys.executable, "-m", "pipeline", "sweep", *args, env={**(env or {}), "PYTHONPATH": pythonpath},
              check=False)


def assert_refused(done: subprocess.CompletedProcess, *lines: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    problems = done.stderr.splitlines()[1:]
    assert done.stderr.startswith("Error: the sweep cannot start:") and len(problems) == len(lines), done.stderr
    for problem, expected in zip(problems, lines):
        assert expected in problem, problem


def test_no_remotes_unpushed_head_dirty_tree_and_bad_values_are_refused(tmp_path):
    repo = make_repo(tmp_path, tiny_params(), git_remote=False, dvc_remote=False)
    assert_refused(sweep_cli(repo, "-S", "model.hidden=5,6"), "no git remote 'origin'", "no default DVC remote")

    sh(tmp_path, "git", "init", "-q", "--bare", "origin.git")
    sh(repo, "git", "remote", "add", "origin", str(tmp_path / "origin.git"))
    sh(repo, "dvc", "remote", "add", "-d", "rel", "../storage")
    sh(repo, "git", "commit", "-q", "-am", "relative remote")
    (repo / "notes.txt").write_text("not committed")
    assert_refused(sweep_cli(repo, "-S", "model.hidden=5,x"),
                   "-S model.hidden=x: params.yaml: model.hidden must be an integer",
                   "the working tree is not clean (1 changed or untracked path, e.g. notes.txt)",
                   "HEAD (", "DVC remote 'rel' is a relative path")
    assert not (repo / ".dvc" / "tmp" / "sweep").exists()  # nothing started


def test_an_unreachable_scheduler_is_one_line_and_nothing_starts(tmp_path):
    repo = make_repo(tmp_path, tiny_params())
    done = sweep_cli(repo, "-S", "model.hidden=5,6", "--scheduler", "tcp://127.0.0.1:9")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("Error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert not (repo / ".dvc" / "tmp" / "sweep").exists()
    assert sh(repo, "git", "ls-remote", "origin", "refs/exps/*").stdout == ""


def test_a_dvc_yaml_dvc_cannot_read_is_one_line_and_the_cluster_that_was_starting_is_closed(tmp_path):
    """The shared stages come from DVC's graph while the LocalCluster starts: a committed dvc.yaml that DVC refuses
    stops the sweep with DVC's reason, before any job, and leaves no worker process behind."""
    import multiprocessing

    repo = make_repo(tmp_path, tiny_params())
    text = (repo / "dvc.yaml").read_text()
    (repo / "dvc.yaml").write_text(text.replace("${item}", "${no_such_var}", 1))
    sh(repo, "git", "commit", "-qam", "a broken interpolation")
    sh(repo, "git", "push", "-q", "origin", "main")
    lines = []
    with pytest.raises(SweepError, match=r"^DVC cannot read the stages: .*no_such_var"):
        sweep.run(["model.hidden=5,6"], workers=2, scheduler=None, threads=1, git_remote="origin", prefix="sweep",
                  diff=False, echo=lines.append, root=repo)
    assert lines == [] and not (repo / ".dvc" / "tmp" / "sweep").exists()
    assert multiprocessing.active_children() == []


def test_a_failed_wave_0_stops_the_sweep_and_closes_its_cluster(tmp_path, monkeypatch):
    """Wave 0 runs on the cluster: when it fails, no experiment is submitted, the error names its log, and the
    cluster's worker processes are gone when the sweep returns."""
    import multiprocessing

    raw = tiny_params()
    repo = make_repo(tmp_path, raw)
    monkeypatch.setattr(sweep, "prepare_shared", lambda client, git_url, base, stages, threads: {
        "name": "wave 0", "ok": False, "log": "# generate@sine\n$ dvc repro --pull generate@sine\nERROR: failed",
        "error": "generate@sine: dvc repro failed"})
    lines = []
    with pytest.raises(SweepError, match=r"^wave 0 failed \(generate@sine: dvc repro failed\); log: "):
        sweep.run(["model.hidden=5,6"], workers=2, scheduler=None, threads=1, git_remote="origin", prefix="sweep",
                  diff=False, echo=lines.append, root=repo)
    shared = ", ".join(f"generate@{name}" for name in sorted(raw["datasets"]))  # every dataset's, one job each
    assert lines == [f"wave 0: the shared stages ({shared}) on 2 local workers, pushed with their run-cache"]
    assert (repo / ".dvc" / "tmp" / "sweep" / "wave0.log").read_text().endswith("ERROR: failed\n")
    assert multiprocessing.active_children() == []
    assert sh(repo, "git", "ls-remote", "origin", "refs/exps/*").stdout == ""


# ---------------------------------------------------------------- slow: a real 2 x 2 sweep on 2 local workers

# The start of both test hooks (sitecustomize.py, run by every Python process of a test): the arguments after
# `python -m pipeline` of this process, or None for any other process.
PIPELINE_ARGS = r'''
import os
import re
def _pipeline_args():
    try:
        args = [a.decode() for a in open("/proc/self/cmdline", "rb").read().split(b"\0") if a]
    except OSError:
        return None
    if "-m" not in args or args[args.index("-m") + 1:args.index("-m") + 2] != ["pipeline"]:
        return None
    return " ".join(args[args.index("-m") + 2:])
'''
HOOK = PIPELINE_ARGS + r'''
def _record():
    stage = _pipeline_args()
    if stage is None:
        return
    text = open("params.yaml").read()
    tag = "-".join(re.search(rf"^  {key}: (\S+)", text, re.M).group(1) for key in ("hidden", "lr"))
    with open(os.environ["SWEEP_STAGE_LOG"], "a") as log:
        log.write(f"{tag} {stage}\n")
    if stage == "train sine gru" and tag == os.environ["SWEEP_KILL_TAG"] and os.path.exists(os.environ["SWEEP_KILL_FILE"]):
        os.kill(os.getpid(), 9)
_record()
'''
SPECS = ["-S", "model.hidden=5,6", "-S", "train.lr=0.01,0.02"]
NAMES = ["sweep-hidden5-lr0.01", "sweep-hidden5-lr0.02", "sweep-hidden6-lr0.01", "sweep-hidden6-lr0.02"]


def test_a_worker_that_dies_is_reported_as_lost_and_the_others_go_on(tmp_path, monkeypatch):
    """A worker process that dies fails its experiment only. The jobs are functions built here, which Dask ships
    by value; allowed-failures 0 stops Dask from retrying the lost one on a restarted worker."""
    import dask
    import distributed  # noqa: F401  (its defaults must be in dask's config before the set below, which
    # would otherwise remove them on exit)

    repo = make_repo(tmp_path, sweep_params())

    def finishes_but_hidden_6_dies(git_url, base, name, overrides, threads, workdir=None):
        if "model.hidden=6" in overrides:
            os._exit(9)
        return {"name": name, "ok": True, "log": "ran", "error": None}

    monkeypatch.setattr(sweep, "prepare_shared",
                        lambda client, git_url, base, stages, threads: {"ok": True, "log": "wave 0", "error": None})
    monkeypatch.setattr(sweep, "run_job", finishes_but_hidden_6_dies)
    lines = []
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        failed = sweep.run(["model.hidden=5,6"], 2, None, None, "origin", "sweep", False, echo=lines.append,
                           root=repo)
    out = "\n".join(lines)
    assert failed == 1, out
    assert "sweep-hidden5: done" in out and "sweep-hidden6: FAILED, the worker was lost" in out
    assert "1 of 2 failed (sweep-hidden6); run the same sweep again" in out
    assert "KilledWorker" in (repo / ".dvc/tmp/sweep/sweep-hidden6.log").read_text()


def sweep_params() -> dict:
    raw = tiny_params()
    raw["datasets"] = ["sine"]
    raw["models"] = {"persistence": {}, "gru": {}}
    return raw


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The sweep run twice: first with the gru training of hidden 6 / lr 0.02 killed, then again."""
    tmp = tmp_path_factory.mktemp("sweep")
    repo = make_repo(tmp, sweep_params())
    (tmp / "hook").mkdir()
    (tmp / "hook" / "sitecustomize.py").write_text(HOOK)
    (tmp / "kill").write_text("")
    env = {"PYTHONPATH": str(tmp / "hook"), "SWEEP_STAGE_LOG": str(tmp / "stages.log"),
           "SWEEP_KILL_TAG": "6-0.02", "SWEEP_KILL_FILE": str(tmp / "kill")}
    first = sweep_cli(repo, *SPECS, "--workers", "2", "--no-diff", env=env)
    first_stages = (tmp / "stages.log").read_text().splitlines()
    (tmp / "kill").unlink()
    second = sweep_cli(repo, *SPECS, "--workers", "2", env=env)
    stages = (tmp / "stages.log").read_text().splitlines()
    return repo, tmp, first, second, first_stages, stages


@pytest.mark.slow
def test_a_killed_job_is_reported_and_the_others_go_on(swept):
    repo, tmp, first, _, first_stages, _ = swept
    out = first.stdout
    assert first.returncode == 1, out + first.stderr
    assert "Traceback" not in first.stderr
    assert "wave 0" in out and "4 experiments on 2 local workers, 1 thread each" in out
    for name in NAMES[:3]:
        assert f"{name}: done" in out
    assert "sweep-hidden6-lr0.02: FAILED, dvc exp run failed" in out
    assert KILLED.search(out.split("sweep-hidden6-lr0.02: FAILED")[1])  # the tail of its log
    assert "1 of 4 failed (sweep-hidden6-lr0.02); run the same sweep again" in out
    assert (repo / ".dvc/tmp/sweep/sweep-hidden5-lr0.01.log").is_file()
    # wave 0 generated the data once; no worker generated it
    assert [line for line in first_stages if "generate" in line] == ["4-0.01 generate sine"]


@pytest.mark.slow
def test_the_rerun_does_only_what_failed_and_every_experiment_ran_once(swept):
    repo, tmp, _, second, first_stages, stages = swept
    out = second.stdout
    assert second.returncode == 0, out + second.stderr
    for name in NAMES[:3]:
        assert f"{name}: already on the remote, skipped" in out
    assert "1 experiment on 2 local workers" in out and "sweep-hidden6-lr0.02: done" in out
    # the benchmark (benchmarks/cluster_bench.py) times sweeps by these lines
    assert cluster_bench.sweep_figures(9.0, list(enumerate(out.splitlines())), ["sweep-hidden6-lr0.02"])["threads"] == 1
    trained = [line.split()[0] for line in stages if line.endswith("train sine gru")]
    assert sorted(trained) == ["5-0.01", "5-0.02", "6-0.01", "6-0.02", "6-0.02"]  # the killed one, then its rerun
    assert sum("generate" in line for line in stages) == 1  # the rerun's wave 0 restored it from the run-cache
    assert len(stages) > len(first_stages)
    for name in NAMES:  # the noise-aware diff against the base commit, summarized
        assert re.search(rf"^{name} vs [0-9a-f]{{7}}: \d+ better, \d+ worse", out, re.M), out


@pytest.mark.slow
def test_the_experiments_are_on_the_remote_and_shown_by_the_coordinator(swept):
    repo, *_ = swept
    head = run(repo, "git", "rev-parse", "HEAD").strip()
    refs = run(repo, "git", "ls-remote", "origin", "refs/exps/*").split()[1::2]
    assert sorted(refs) == sorted(f"refs/exps/{head[:2]}/{head[2:]}/{name}" for name in NAMES)
    shown = json.loads(subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=repo,
                                      capture_output=True, text=True, check=True).stdout)
    baseline = next(entry for entry in shown if entry["rev"] == head)
    found = {exp["name"]: exp["revs"][0]["data"] for exp in baseline["experiments"] or []}
    assert set(found) == set(NAMES)
    rmse = {name: data["metrics"]["metrics/eval/sine/gru.json"]["data"]["test"]["rmse"] for name, data in found.items()}
    assert len(set(rmse.values())) == 4, rmse  # four different trainings
    assert {name: data["params"]["params.yaml"]["data"]["model"]["hidden"] for name, data in found.items()} == {
        NAMES[0]: 5, NAMES[1]: 5, NAMES[2]: 6, NAMES[3]: 6}
    assert run(repo, "git", "status", "--porcelain") == ""  # the coordinator's workspace is untouched


@pytest.mark.slow
def test_applying_an_experiment_leaves_nothing_to_run(swept):
    repo, *_ = swept
    run(repo, "dvc", "exp", "apply", NAMES[2])
    assert "hidden: 6" in (repo / "params.yaml").read_text()
    again = run(repo, "dvc", "repro")
    assert ran(again) == set(), again
