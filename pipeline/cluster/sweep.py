"""`python -m pipeline sweep -S KEY=V1,V2 ...`: a parameter sweep whose experiments run on a Dask cluster.

DVC runs the experiments of its queue on the local machine only; here each experiment is one Dask job. Results
travel through the shared remotes only (DVC-FACTS 2h and 6): the git remote carries the base commit and the
experiment refs, the default DVC remote the outputs and the run-cache. So:

1. checks, before anything starts (one line each): a clean working tree, HEAD on the git remote, a default DVC
   remote in the committed config (a local one must be an absolute, existing folder), every -S value valid;
2. wave 0, on the cluster: the stages every experiment shares (the `generate` stages, unless the sweep changes
   `data*`/`datasets`), each a job of its own as in `pipeline repro --workers` (jobs.run_stage), are
   reproduced (or restored) in a clone and pushed with their run-cache. The coordinator computes nothing: on a
   cluster it is often a login node, and the shared stages spread over the workers;
3. one job per setting, on a worker (`run_job`, small and importable): a fresh clone at the base commit,
   `dvc exp run --pull -n NAME -S ...` with DVC_EXP_AUTO_PUSH, torch threads and cores limited to the job's share;
   the experiment ref must be on the git remote afterwards. A failed job returns its log; the others go on.
   Experiments whose ref is already on the remote (same base, same name) are skipped, so a rerun redoes only
   what failed;
4. the coordinator fetches the experiment refs and prints `dvc exp show` and, per experiment, the noise-aware diff
   against the base commit as a one-line summary, while `dvc exp pull origin NAMES` brings their outputs.

Workers never commit and never touch the coordinator's workspace; the coordinator's workspace is not modified
either, apart from the experiment refs it pulls and the job logs under .dvc/tmp/sweep/.
This module changes no number, so it is no stage's dependency.
"""

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.cluster.jobs import (check_workspace, client_for, close_client, cores_for, exp_ref, git, logged_runner,
                                   outcome, remote_exp_refs, run_stage, stage_graph, tail, tool_env)
from pipeline.errors import PipelineError, SweepError

LOG_DIR = Path(".dvc/tmp/sweep")
SHARED_STAGES = "generate"                 # what wave 0 reproduces: the dataset files every experiment reads
DATA_KEYS = ("data", "data_seed", "datasets")  # a sweep that changes these changes the datasets: no wave 0


@dataclass(frozen=True)
class Job:
    name: str
    overrides: tuple[str, ...]


# ---------------------------------------------------------------- the -S grammar and names (coordinator)

def expand(specs: list[str]) -> list[tuple[str, ...]]:
    """The cartesian product of the -S comma lists, parsed by DVC's own (Hydra) grammar, as `dvc exp run` does."""
    from dvc.utils.hydra import get_hydra_sweeps

    if not specs:
        raise SweepError("nothing to sweep: give at least one -S KEY=V1,V2,...")
    for spec in specs:
        if "=" not in spec or not spec.split("=", 1)[0].strip():
            raise SweepError(f"-S '{spec}' is not KEY=VALUE[,VALUE...]")
    try:
        sweeps = get_hydra_sweeps({"params.yaml": list(specs)})
    except Exception as exc:  # hydra's parser raises several kinds, all about the text given
        for spec in specs:      # name the -S at fault
            try:
                get_hydra_sweeps({"params.yaml": [spec]})
            except Exception as own:
                exc = own
                break
        else:
            spec = " -S ".join(specs)
        raise SweepError(f"-S {spec}: {str(exc).strip().splitlines()[0]}") from None
    return [tuple(sweep["params.yaml"]) for sweep in sweeps]


def _token(text: str) -> str:
    """Characters that are safe in a git ref and an experiment name."""
    text = re.sub(r"[^A-Za-z0-9.+_]+", "_", text).strip("._")
    return re.sub(r"\.{2,}", ".", text)


def name_of(overrides: tuple[str, ...], prefix: str = "sweep") -> str:
    """`sweep-hidden8-lr0.01` for ('model.hidden=8', 'train.lr=0.01'): each key's last part and its value."""
    parts = [prefix]
    for override in overrides:
        key, value = override.split("=", 1)
        parts.append(_token(key.lstrip("+~").rsplit(".", 1)[-1]) + _token(value))
    return "-".join(part for part in parts if part)


def plan(specs: list[str], prefix: str = "sweep") -> list[Job]:
    """Every setting with its unique name; a second setting that would get the same name gets a numbered one."""
    jobs, seen = [], set()
    for overrides in expand(specs):
        name = base = name_of(overrides, prefix)
        number = 2
        while name in seen:
            name, number = f"{base}-{number}", number + 1
        seen.add(name)
        jobs.append(Job(name, overrides))
    return jobs


def validate(jobs: list[Job], params_path: Path = Path("params.yaml")) -> list[str]:
    """One line per value that params.yaml does not accept (an unknown key, a bad value), found by applying the
    overrides with DVC's own writer to a copy and loading it as every stage would: each value alone first (one
    line per bad value, not per setting), then every whole setting."""
    from dvc.utils.hydra import apply_overrides

    from pipeline import params as params_module

    def problem(overrides: tuple[str, ...], folder: str) -> str | None:
        copy = Path(folder) / "params.yaml"
        shutil.copy(params_path, copy)
        try:
            apply_overrides(copy, list(overrides))
            params_module.load(copy)
        except PipelineError as exc:
            return f"-S {' '.join(overrides)}: {exc.message.replace(str(copy), 'params.yaml')}"
        except Exception as exc:
            cause = exc.__cause__ or exc.__context__ or exc
            return f"-S {' '.join(overrides)}: {str(cause).strip().splitlines()[0]}"
        return None

    with tempfile.TemporaryDirectory() as folder:
        singles = dict.fromkeys(o for job in jobs for o in job.overrides)
        problems = [p for p in (problem((o,), folder) for o in singles) if p]
        if not problems:
            problems = [p for p in (problem(job.overrides, folder) for job in jobs) if p]
    return problems


def changes_data(jobs: list[Job]) -> bool:
    keys = {o.split("=", 1)[0].lstrip("+~") for job in jobs for o in job.overrides}
    return any(key == k or key.startswith(k + ".") for key in keys for k in DATA_KEYS)


# ---------------------------------------------------------------- subprocesses


# ---------------------------------------------------------------- checks (coordinator)


# ---------------------------------------------------------------- the jobs (worker side, small on purpose)


def run_job(git_url: str, base: str, name: str, overrides: tuple[str, ...], threads: int,
            workdir: str | None = None) -> dict:
    """One experiment on this worker: a fresh clone at `base`, `dvc exp run --pull` with auto-push, then check that
    its ref reached the git remote. Returns {name, ok, log, error}; never raises, so one failure stops nothing."""
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
    log: list[str] = []
    limits = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "DVC_EXP_AUTO_PUSH": "true",
              "DVC_EXP_GIT_REMOTE": "origin"}
    env = tool_env(limits)
    cores = cores_for(threads)

    run = logged_runner(log, env, cores)

    def step(*args: str, cwd: Path = folder) -> bool:
        return run(*args, cwd=cwd).returncode == 0

    try:
        clone = folder / "clone"
        ok = (step("git", "clone", "-q", "--no-checkout", git_url, str(clone))
              and step("git", "checkout", "-q", "--detach", base, cwd=clone)
              and step(sys.executable, "-m", "dvc", "exp", "run", "--pull", "-n", name,
                       *[arg for o in overrides for arg in ("-S", o)], cwd=clone))
        error = None if ok else "dvc exp run failed" if len(log) > 4 else "could not clone the project"
        if ok and exp_ref(base, name) not in remote_exp_refs(git_url, clone):
            ok, error = False, f"the experiment ran but its ref {exp_ref(base, name)} is not on the git remote"
            log.append(error)
        return {"name": name, "ok": ok, "log": "\n".join(log), "error": error}
    except Exception as exc:  # e.g. git missing on the worker
        log.append(repr(exc))
        return {"name": name, "ok": False, "log": "\n".join(log), "error": str(exc)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def shared_stages(root: Path) -> list[str]:
    """The stages of wave 0 as `dvc repro` names them (`generate@sine`, ...): every stage of the SHARED_STAGES
    group, from DVC's own graph of the workspace, which is the base commit (the tree is clean)."""
    return sorted(stage for stage in stage_graph(root) if stage.split("@", 1)[0] == SHARED_STAGES)


def prepare_shared(client, git_url: str, base: str, stages: list[str], threads: int) -> dict:
    """Wave 0: each shared stage a job of its own on the cluster (jobs.run_stage: a clone, the stage
    reproduced or restored from the remote's run-cache, then pushed with its run-cache), so that the stages spread
    over the workers and no experiment computes them. Same return shape as run_job; the log holds every job's."""
    from distributed import as_completed

    futures = {client.submit(run_stage, git_url, base, stage, threads, key=f"wave0-{stage}", pure=False): stage
               for stage in stages}
    logs, errors = [], []
    for future in as_completed(futures):
        stage = futures[future]
        result = outcome(future)
        logs.append(f"# {stage}\n{result['log']}")
        if not result["ok"]:
            errors.append(f"{stage}: {result['error']}")
    return {"name": "wave 0", "ok": not errors, "log": "\n".join(logs), "error": "; ".join(errors) or None}


# ---------------------------------------------------------------- the coordinator


def run(specs: list[str], workers: int | None, scheduler: str | None, threads: int | None, git_remote: str,
        prefix: str, diff: bool, echo=print, root: Path = Path(".")) -> int:
    """The whole sweep; returns the number of failed jobs. Raises SweepError (nothing started) on bad input."""
    from pipeline.learning.processes import free_cores

    if workers is not None and scheduler:
        raise SweepError("give --workers (a cluster on this machine) or --scheduler (an existing one), not both")
    if workers is not None and workers < 1:
        raise SweepError(f"--workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise SweepError(f"--threads must be at least 1, got {threads}")
    problems: list[str] = []
    try:
        jobs = plan(specs, prefix)
    except SweepError as exc:
        jobs, problems = [], [exc.message]
    if not (root / "params.yaml").is_file():
        raise SweepError("params.yaml not found: run from the project root")
    problems += validate(jobs, root / "params.yaml")
    checks, git_url, base, _ = check_workspace(root, git_remote)
    problems += checks
    if problems:
        raise SweepError("the sweep cannot start:\n" + "\n".join(f"  - {p}" for p in problems))

    if scheduler is None:
        workers = workers or free_cores()
        threads = threads or max(1, free_cores() // workers)
    threads = threads or 1

    done_refs = remote_exp_refs(git_url, root)
    todo = [job for job in jobs if exp_ref(base, job.name) not in done_refs]
    for job in jobs:
        if job not in todo:
            echo(f"{job.name}: already on the remote, skipped")
    failed: list[str] = []
    if todo:
        failed = _fan_out(todo, git_url, base, workers, scheduler, threads, echo, root)
    finished = [job.name for job in jobs if job.name not in failed]
    if finished:
        _collect(finished, base, git_remote, diff, echo, root)
    if failed:
        echo(f"{len(failed)} of {len(jobs)} failed ({', '.join(failed)}); run the same sweep again to redo only "
             f"those")
    return len(failed)


def _fan_out(todo: list[Job], git_url: str, base: str, workers: int | None, scheduler: str | None, threads: int,
             echo, root: Path) -> list[str]:
    """Wave 0, then one Dask job per experiment; returns the names that failed. Both run on the cluster, which is
    reached (or started: 0.7 s for a LocalCluster of 2) while DVC's graph gives the shared stages (0.5 s), so an
    unreachable scheduler stops the sweep before anything starts."""
    from concurrent.futures import ThreadPoolExecutor

    from distributed import as_completed

    failed: list[str] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        starting = pool.submit(client_for, workers, scheduler, threads)
        try:
            shared = [] if changes_data(todo) else shared_stages(root)
        except BaseException:
            if starting.exception() is None:
                close_client(starting.result(), scheduler)
            raise
        client = starting.result()
    where = scheduler or f"{workers} local workers"
    (root / LOG_DIR).mkdir(parents=True, exist_ok=True)
    try:
        if shared:
            echo(f"wave 0: the shared stages ({', '.join(shared)}) on {where}, pushed with their run-cache")
            done = prepare_shared(client, git_url, base, shared, threads)
            (root / LOG_DIR / "wave0.log").write_text(done["log"] + "\n")
            if not done["ok"]:
                raise SweepError(f"wave 0 failed ({done['error']}); log: {LOG_DIR / 'wave0.log'}\n{tail(done['log'])}")
        echo(f"{len(todo)} experiment{'s' if len(todo) != 1 else ''} on {where}, "
             f"{threads} thread{'s' if threads != 1 else ''} each")
        futures = [client.submit(run_job, git_url, base, job.name, job.overrides, threads, key=f"sweep-{job.name}",
                                 pure=False) for job in todo]
        for future in as_completed(futures):
            result = outcome(future, name=future.key.removeprefix("sweep-"))
            log_path = LOG_DIR / f"{result['name']}.log"
            (root / log_path).write_text(result["log"] + "\n")
            if result["ok"]:
                echo(f"{result['name']}: done (log {log_path})")
            else:
                failed.append(result["name"])
                echo(f"{result['name']}: FAILED, {result['error']} (log {log_path}); its last lines:\n"
                     f"{tail(result['log'])}")
    finally:
        close_client(client, scheduler)
    return failed


def _collect(finished: list[str], base: str, git_remote: str, diff: bool, echo, root: Path) -> None:
    """Fetch the finished experiments' refs, then print `dvc exp show` and one diff summary per experiment while
    `dvc exp pull` brings their outputs into the cache (for `dvc exp apply`): the refs alone are what the table and
    the diffs read, so the three run side by side (two processes and this one) instead of one after the other."""
    refs = [f"+{exp_ref(base, name)}:{exp_ref(base, name)}" for name in finished]
    fetched = git(root, "fetch", "-q", git_remote, *refs)
    if fetched.returncode != 0:
        echo(f"git fetch of the experiment refs failed:\n{tail(fetched.stdout + fetched.stderr)}")
    started = {what: subprocess.Popen([sys.executable, "-m", "dvc", "exp", *args], cwd=root, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=tool_env())
               for what, args in (("pull", ["pull", git_remote, *finished]),
                                  ("show", ["show", "--only-changed", "--md"]))}
    summaries = _diff_summaries(finished, base, root) if diff else []
    out, err = started["show"].communicate()
    echo(out.rstrip() or err.rstrip())
    for line in summaries:
        echo(line)
    out, err = started["pull"].communicate()
    if started["pull"].returncode != 0:
        echo(f"dvc exp pull failed (the outputs of the experiments are not in the cache; run `dvc exp pull "
             f"{git_remote} NAME` again):\n{tail(out + err)}")


def _diff_summaries(finished: list[str], base: str, root: Path) -> list[str]:
    """Each experiment against the base commit in one line: better / worse / within seed noise."""
    from pipeline.experiments import diff as diff_module

    try:
        (_, base_pairs), *experiments = diff_module.read_many([base, *finished], root)
    except PipelineError as exc:
        return [f"{name}: no diff ({exc.message})" for name in finished]
    lines = []
    for name, (_, pairs) in zip(finished, experiments):
        problem = next((p for p in (base_pairs, pairs) if isinstance(p, PipelineError)), None)
        if problem is not None:
            lines.append(f"{name}: no diff ({problem.message})")
        else:
            lines.append(f"{name} vs {base[:7]}: {diff_module.summary(diff_module.compare(base_pairs, pairs))}")
    return lines
