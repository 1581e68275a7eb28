"""`python -m pipeline repro --workers N`: the waves of a stage graph, the checks before anything starts, and (slow)
the tiny pipeline's stages on a Dask LocalCluster of 2 worker processes, with a bare git repository as the remote and
a local folder as the DVC remote: once with the gru training killed, then again, then compared with a plain
`dvc repro` of the same commit.

Every `python -m pipeline <stage>` started anywhere appends its stage and working directory to one shared log
through a sitecustomize.py put on PYTHONPATH by the test only; the same hook SIGKILLs the gru training while a
marker file exists.
"""

import os
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks import cluster_bench
from conftest import tiny_params
from pipeline.cluster import repro as cluster_repro
from pipeline.errors import SweepError
from test_pipeline import run
from test_sweep import KILLED, PIPELINE_ARGS, make_repo, sh


# ---------------------------------------------------------------- fast: waves

def test_a_stage_runs_one_wave_after_its_deepest_upstream_stage():
    graph = {"gen@a": set(), "gen@b": set(), "train@a-x": {"gen@a"}, "train@b-x": {"gen@b"},
             "eval@a": {"gen@a", "train@a-x"}, "report": {"train@a-x", "eval@a", "train@b-x"},
             "lonely": set(), "uses_data": {"data.dvc"}}  # an upstream that is no runnable stage counts for nothing
    assert cluster_repro.waves(graph) == [["gen@a", "gen@b", "lonely", "uses_data"], ["train@a-x", "train@b-x"],
                                          ["eval@a"], ["report"]]
    assert cluster_repro.waves({}) == []


def test_a_cycle_is_one_line():
    with pytest.raises(SweepError) as error:
        cluster_repro.waves({"a": {"c"}, "b": {"a"}, "c": {"b"}, "d": set()})
    assert error.value.message == "the stages depend on each other in a cycle: a -> c -> b -> a"


def matrix_params() -> dict:
    raw = tiny_params()
    raw["datasets"] = ["sine"]
    raw["models"] = {"persistence": {}, "gru": {}}
    return raw


WAVES = [["generate@sine"], ["train@sine-gru", "train@sine-persistence"], ["evaluate@sine"],
         ["compare@sine", "report"]]


def test_the_waves_of_the_project_come_from_dvcs_graph(tmp_path):
    repo = make_repo(tmp_path, matrix_params(), git_remote=False)
    assert cluster_repro.waves(cluster_repro.stage_graph(repo)) == WAVES


# ---------------------------------------------------------------- the checks, through the CLI (git + dvc, no run)

def repro_cli(repo: Path, *args: str, env: dict | None = None):
    from conftest import ROOT
    pythonpath = os.pathsep.join(filter(None, [(env or {}).get("PYTHONPATH"), str(ROOT)]))
    return sh(repo, sys.executable, "-m", "pipeline", "repro", *args,
              env={**(env or {}), "PYTHONPATH": pythonpath}, check=False)


def test_no_remotes_unpushed_head_and_dirty_tree_are_refused_and_nothing_starts(tmp_path):
    repo = make_repo(tmp_path, matrix_params(), git_remote=False, dvc_remote=False)
    (repo / "notes.txt").write_text("not committed")
    done = repro_cli(repo, "--workers", "2")
    assert done.returncode == 1 and "Traceback" not in done.stderr and done.stdout == "", done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "Error: the repro cannot start:" and len(lines) == 4, done.stderr
    assert "the working tree is not clean (1 changed or untracked path, e.g. notes.txt)" in lines[1]
    assert "no git remote 'origin'" in lines[2] and "no default DVC remote" in lines[3]

    (repo / "notes.txt").unlink()
    sh(tmp_path, "git", "init", "-q", "--bare", "origin.git")
    sh(repo, "git", "remote", "add", "origin", str(tmp_path / "origin.git"))
    (tmp_path / "storage").mkdir()
    sh(repo, "dvc", "remote", "add", "-d", "local", str(tmp_path / "storage"))
    sh(repo, "git", "commit", "-q", "-am", "remote")
    done = repro_cli(repo, "--workers", "2")
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 2, done.stderr
    assert "HEAD (" in done.stderr and "is not on git remote 'origin'" in done.stderr
    assert not (repo / cluster_repro.LOG_DIR).exists() and not (repo / "dvc.lock").exists()


def test_an_unreachable_scheduler_is_one_line_and_nothing_starts(tmp_path):
    repo = make_repo(tmp_path, matrix_params())
    done = repro_cli(repo, "--scheduler", "tcp://127.0.0.1:9")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("Error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert not (repo / cluster_repro.LOG_DIR).exists() and not (repo / "dvc.lock").exists()
    assert not list((tmp_path / "storage").iterdir())  # nothing pushed


def test_a_worker_that_dies_is_reported_as_lost_and_the_later_waves_wait(tmp_path, monkeypatch):
    """A worker process that dies (out of memory, killed by a batch system) fails its stage, not the command.
    The job is a function built here, so Dask ships it by value and the worker runs it instead of run_stage;
    allowed-failures 0 stops Dask from retrying it on a restarted worker."""
    import dask
    import distributed  # noqa: F401  (its defaults must be in dask's config before the set below, which
    # would otherwise remove them on exit)

    repo = make_repo(tmp_path, matrix_params())

    def dies_on_generate(git_url, base, stage, threads, workdir=None):
        if stage.startswith("generate"):
            os._exit(9)
        return {"stage": stage, "ok": True, "ran": [stage], "log": "", "error": None}

    monkeypatch.setattr(cluster_repro, "run_stage", dies_on_generate)
    lines = []
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        failed = cluster_repro.run(2, None, None, "origin", echo=lines.append, root=repo)
    out = "\n".join(lines)
    assert failed == 1, out
    assert "generate@sine: FAILED, the worker was lost" in out
    assert "1 of 6 stages failed (generate@sine); 5 later stages not started" in out
    assert "wave 1" not in out and "coordinator" not in out and not (repo / "dvc.lock").exists()
    assert "KilledWorker" in (repo / cluster_repro.LOG_DIR / "generate@sine.log").read_text()


# ---------------------------------------------------------------- slow: the tiny pipeline on 2 local workers

HOOK = PIPELINE_ARGS + r'''
def _record():
    stage = _pipeline_args()
    if stage is None or stage.startswith("repro"):
        return
    with open(os.environ["REPRO_STAGE_LOG"], "a") as log:
        log.write(f"{os.getcwd()}\t{stage}\n")
    if stage == "train sine gru" and os.path.exists(os.environ["REPRO_KILL_FILE"]):
        os.kill(os.getpid(), 9)
_record()
'''
STAGES = ["generate sine", "train sine persistence", "train sine gru", "evaluate sine", "compare sine", "report"]


def started(log: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("\t")) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """The cluster repro run twice (first with the gru training killed, then again), and a plain `dvc repro` of the
    same commit in a clone of its own."""
    tmp = tmp_path_factory.mktemp("matrix")
    repo = make_repo(tmp, matrix_params())
    (tmp / "hook").mkdir()
    (tmp / "hook" / "sitecustomize.py").write_text(HOOK)
    (tmp / "kill").write_text("")
    log = tmp / "stages.log"
    env = {"PYTHONPATH": str(tmp / "hook"), "REPRO_STAGE_LOG": str(log), "REPRO_KILL_FILE": str(tmp / "kill")}
    first = repro_cli(repo, "--workers", "2", env=env)
    first_stages = started(log)
    first.lock_written = (repo / "dvc.lock").exists()
    (tmp / "kill").unlink()
    second = repro_cli(repo, "--workers", "2", env=env)
    stages = started(log)
    sh(tmp, "git", "clone", "-q", str(tmp / "origin.git"), "plain")
    plain = run(tmp / "plain", "dvc", "repro")
    return repo, tmp, first, second, first_stages, stages, plain


@pytest.mark.slow
def test_a_killed_stage_is_reported_and_the_later_waves_wait(matrix):
    repo, tmp, first, _, first_stages, _, _ = matrix
    out = first.stdout
    assert first.returncode == 1, out + first.stderr
    assert "Traceback" not in first.stderr
    assert "6 stages in 4 waves on 2 local workers, 1 thread each" in out
    assert "generate@sine: ran" in out and "train@sine-persistence: ran" in out
    assert "train@sine-gru: FAILED, dvc repro failed" in out
    assert KILLED.search(out.split("train@sine-gru: FAILED")[1])  # the tail of its log
    assert "1 of 6 stages failed (train@sine-gru); 3 later stages not started" in out
    assert "wave 2" not in out and "coordinator" not in out
    assert (repo / cluster_repro.LOG_DIR / "train@sine-gru.log").is_file()
    assert sorted(stage for _, stage in first_stages) == ["generate sine", "train sine gru", "train sine persistence"]
    assert not first.lock_written


@pytest.mark.slow
def test_every_stage_ran_once_on_a_worker_and_the_coordinator_ran_none(matrix):
    repo, tmp, _, second, first_stages, stages, _ = matrix
    out = second.stdout
    assert second.returncode == 0, out + second.stderr
    for stage in ("generate@sine", "train@sine-persistence"):
        assert f"{stage}: restored from the run-cache" in out
    for stage in ("train@sine-gru", "evaluate@sine", "compare@sine", "report"):
        assert f"{stage}: ran (log" in out  # no upstream stage ran again in its job
    assert "upstream stages that ran again" not in out
    assert "coordinator: ran no stage; dvc.lock written" in out
    figures = cluster_bench.matrix_figures(99.0, list(enumerate(out.splitlines())))  # what the benchmark times
    assert (figures["stages"], figures["waves"], figures["threads"]) == (6, 4, 1)
    worker_stages = [stage for cwd, stage in stages]
    assert sorted(worker_stages) == sorted(STAGES + ["train sine gru"])  # the killed one, then its rerun
    assert all(cwd != str(repo) for cwd, _ in stages)  # nothing ran in the coordinator's workspace
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(s for wave in WAVES for s in wave)
    status = run(repo, "dvc", "status")
    assert "up to date" in status, status


@pytest.mark.slow
def test_the_outputs_equal_a_plain_dvc_repro_byte_for_byte(matrix):
    repo, tmp, *_ = matrix
    plain = tmp / "plain"
    assert yaml.safe_load((repo / "dvc.lock").read_text()) == yaml.safe_load((plain / "dvc.lock").read_text())

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for folder in ("data", "metrics", "plots")
                for p in sorted((root / folder).rglob("*")) if p.is_file()}

    ours, theirs = files(repo), files(plain)
    assert "metrics/summary.json" in ours and "metrics/eval/sine/gru.json" in ours
    assert "plots/compare/loss/sine.csv" in ours  # `cache: false` outputs came back too
    assert sorted(ours) == sorted(theirs)
    assert [name for name in ours if ours[name] != theirs[name]] == []


@pytest.mark.parametrize("workers, scheduler, threads, expected", [
    (2, "tcp://127.0.0.1:9", None,
     "give --workers (a cluster on this machine) or --scheduler (an existing one), not both"),
    (0, None, None, "--workers must be at least 1, got 0"),
    (2, None, 0, "--threads must be at least 1, got 0"),
])
def test_bad_options_are_one_line(tmp_path, workers, scheduler, threads, expected):
    with pytest.raises(SweepError) as error:
        cluster_repro.run(workers, scheduler, threads, "origin", root=tmp_path)
    assert error.value.message == expected
    assert not (tmp_path / ".dvc").exists()
