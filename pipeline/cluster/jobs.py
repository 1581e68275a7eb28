"""What the Dask tools share: the checks a cluster run starts with, how a job runs its commands, the cluster
client, DVC's stage graph, and the job that runs one stage in a fresh clone (`run_stage`, used by
`pipeline repro --workers` for every stage and by `pipeline sweep` for its wave 0).

Subprocesses run this interpreter's venv first on PATH, so the stages they start run this project's `pipeline`.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from pipeline.cluster.stage_job import FAILED_STEP
from pipeline.errors import ClusterReproError, SweepError

TAIL_LINES = 15


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This interpreter's bin first on PATH: stages run `python -m pipeline`, which must be this venv's python."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def _run(args: list[str], cwd: str | Path, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env or tool_env(), capture_output=True, text=True, **kwargs)


def git(cwd: str | Path, *args: str) -> subprocess.CompletedProcess:
    return _run(["git", *args], cwd)


def dvc(cwd: str | Path, *args: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def remote_exp_refs(git_url: str, cwd: str | Path = ".") -> set[str]:
    """The experiment refs on the git remote, `refs/exps/ab/cdef.../NAME`."""
    done = git(cwd, "ls-remote", git_url, "refs/exps/*")
    return {line.split("\t", 1)[1] for line in done.stdout.splitlines() if "\t" in line}


def exp_ref(base: str, name: str) -> str:
    return f"refs/exps/{base[:2]}/{base[2:]}/{name}"


def project_dvc_remote(root: Path) -> tuple[str, str]:
    """(name, URL as written) of the default remote in .dvc/config, the file workers get: config.local and the
    user's global config stay on this machine. `dvc remote list` would show a relative path made absolute."""
    from configobj import ConfigObj

    path = root / ".dvc" / "config"
    if not path.is_file():
        return "", ""
    config = ConfigObj(str(path))
    name = config.get("core", {}).get("remote", "")
    return name, config.get(f'remote "{name}"', {}).get("url", "") if name else ""


def check_workspace(root: Path, git_remote: str) -> tuple[list[str], str, str, str]:
    """(problems, git remote URL, base commit, DVC remote URL); a problem is one line saying what to do."""
    problems: list[str] = []
    inside = git(root, "rev-parse", "--show-toplevel")
    if inside.returncode != 0:
        return [f"{root} is not a git repository: workers clone the project from its git remote"], "", "", ""
    head = git(root, "rev-parse", "HEAD").stdout.strip()
    if not head:
        return ["the repository has no commit yet: commit the project and push it"], "", "", ""
    dirty = git(root, "status", "--porcelain", "--untracked-files=normal").stdout.splitlines()
    if dirty:
        problems.append(f"the working tree is not clean ({len(dirty)} changed or untracked path"
                        f"{'s' if len(dirty) != 1 else ''}, e.g. {dirty[0][3:]}): workers run the committed "
                        f"project, so commit or stash first")
    url = git(root, "remote", "get-url", git_remote).stdout.strip()
    if not url:
        problems.append(f"no git remote '{git_remote}': add one all workers can reach "
                        f"(git remote add {git_remote} URL) and push HEAD to it")
    else:
        listed = git(root, "ls-remote", url)
        if listed.returncode != 0:
            problems.append(f"git remote '{git_remote}' ({url}) cannot be read: "
                            f"{(listed.stderr.strip().splitlines() or ['no answer'])[-1]}")
        else:
            shas = {line.split("\t", 1)[0] for line in listed.stdout.splitlines() if "\t" in line}
            pushed = head in shas or any(
                git(root, "merge-base", "--is-ancestor", head, sha).returncode == 0 for sha in shas)
            if not pushed:
                problems.append(f"HEAD ({head[:7]}) is not on git remote '{git_remote}': push it first "
                                f"(experiments hang off that commit and workers clone it)")
    default, dvc_url = project_dvc_remote(root)
    if not default:
        problems.append("no default DVC remote in the committed config: `dvc remote add -d NAME URL` (a path all "
                        "workers share, or s3://, gs://, ssh://), then commit .dvc/config")
    elif "://" not in dvc_url:
        path = Path(dvc_url)
        if not path.is_absolute():
            problems.append(f"DVC remote '{default}' is a relative path ({dvc_url}): a worker's clone would "
                            f"resolve it inside itself; use an absolute path every worker sees")
        elif not path.is_dir():
            problems.append(f"DVC remote '{default}' ({dvc_url}) is not an existing folder: create it or "
                            f"point the remote at a shared path")
    return problems, url, head, dvc_url


def logged_runner(log: list[str], env: dict[str, str], cores: set[int] | None
                  ) -> Callable[..., subprocess.CompletedProcess]:
    """A job's way of running a command: pinned to its cores, with the command, its output and a failing exit
    status appended to `log` (the log a failed job is reported with)."""
    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        log.append(f"$ {' '.join(args)}")
        done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True,
                              preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
        log.append((done.stdout + done.stderr).rstrip())
        if done.returncode != 0:
            log.append(f"(exit status {done.returncode})")
        return done

    return run


def cores_for(share: int) -> set[int] | None:
    """The cores this job may use: a worker-specific slice of `share` of this process's cores (a LocalCluster's
    workers are named 0, 1, ...), so that the forked training jobs of one stage stay inside it."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None
    if share <= 0 or share >= len(cores):
        return None
    try:
        from distributed import get_worker
        index = int(get_worker().name)
    except Exception:
        return None
    start = (index * share) % len(cores)
    return {cores[(start + i) % len(cores)] for i in range(share)}


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines()[-lines:])


def client_for(workers: int | None, scheduler: str | None, threads: int):
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="5s")
        except Exception as exc:
            raise SweepError(f"cannot reach the Dask scheduler at {scheduler}: {str(exc).splitlines()[0]}") from None
    # The scheduler serves HTTP even without a dashboard, on 8787 unless told otherwise: port 0 (any free one)
    # keeps a second sweep, or a dashboard already running, from printing "Port 8787 is already in use".
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    return Client(cluster)


def outcome(future, **identity) -> dict:
    """A finished job's result; when its worker process died (killed, out of memory, its machine gone) the job never
    returned one, and this is a failed result saying so, with `identity` (its name or stage) filled in."""
    try:
        return future.result()
    except Exception as exc:
        return {**identity, "ok": False, "log": repr(exc), "error": f"the worker was lost: {exc}"}


def close_client(client, scheduler: str | None) -> None:
    """The client, and the LocalCluster with its worker processes if this sweep started one."""
    client.close()
    if scheduler is None and client.cluster is not None:
        client.cluster.close()


def stage_graph(root: Path) -> dict[str, set[str]]:
    """{stage: its upstream stages} for the stages with a command, from DVC's graph of the workspace (edges point
    from a stage to the stages whose outputs it depends on)."""
    from dvc.repo import Repo

    def address(stage) -> str:  # as `dvc repro` takes it from the project root: NAME, or sub/dvc.yaml:NAME
        path = os.path.relpath(stage.path, root.resolve())
        return stage.name if path == "dvc.yaml" else f"{path}:{stage.name}"

    from dvc.exceptions import DvcException

    try:
        with Repo(str(root)) as repo:
            graph = repo.index.graph
            runnable = {stage for stage in graph.nodes if getattr(stage, "cmd", None) and getattr(stage, "name", None)}
            return {address(stage): {address(up) for up in graph.successors(stage) if up in runnable}
                    for stage in runnable}
    except DvcException as exc:  # a dvc.yaml DVC cannot read: say so before any job starts
        raise ClusterReproError(f"DVC cannot read the stages: {str(exc).strip().splitlines()[0]}") from None


def run_stage(git_url: str, base: str, stage: str, threads: int, workdir: str | None = None) -> dict:
    """One stage on this worker: a fresh clone at `base`, then `python -m pipeline.cluster.stage_job STAGE` in it (`dvc repro
    --pull STAGE`, upstream stages restored from the run-cache; its run-cache and outputs pushed; one process).
    Returns {stage, ok, ran, log, error}; never raises."""
    folder = Path(tempfile.mkdtemp(prefix="repro-", dir=workdir))
    log: list[str] = []
    env = tool_env({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    cores = cores_for(threads)

    step = logged_runner(log, env, cores)

    result = {"stage": stage, "ok": False, "ran": [], "log": "", "error": None}
    try:
        clone = folder / "clone"
        if (step("git", "clone", "-q", "--no-checkout", git_url, str(clone), cwd=folder).returncode != 0
                or step("git", "checkout", "-q", "--detach", base, cwd=clone).returncode != 0):
            result["error"] = "could not clone the project"
            return result
        job = step(sys.executable, "-m", "pipeline.cluster.stage_job", stage, cwd=clone)
        result["ran"] = re.findall(r"Running stage '([^']+)'", job.stdout + job.stderr)
        if job.returncode != 0:
            result["error"] = FAILED_STEP.get(job.returncode, f"the stage job exited with {job.returncode}")
            return result
        result["ok"] = True
        return result
    except Exception as exc:  # git missing, a remote that refuses the objects
        log.append(repr(exc))
        result["error"] = str(exc).splitlines()[0] if str(exc) else repr(exc)
        return result
    finally:
        result["log"] = "\n".join(log)
        shutil.rmtree(folder, ignore_errors=True)
