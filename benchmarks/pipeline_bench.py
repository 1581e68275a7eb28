"""Pipeline-level timings: what a user waits for when the project runs through DVC.

Every measurement that runs DVC does so in a fresh `git clone` of a repository's HEAD, never in the working tree,
so the numbers belong to a commit and nothing the clone does can touch the user's results or DVC cache:

- `full_repro`: a from-scratch `dvc repro` (the clone's own, empty DVC cache, so nothing is restored), its wall
  time per (dataset, model) pair and where that time goes, stage group by stage group;
- `noop_repro`: `dvc repro` when everything is up to date, the price of asking;
- `startup`: the Python start-up of each stage command against a bare `import torch`, and whether the command
  drags in torch or matplotlib before it computes anything;
- `sweep`: a queued `dvc exp run` sweep drained by `dvc queue start -j N` workers, in experiments per minute.

Each returns a plain dict that `benchmarks/run.py` writes to results.json.
"""

import copy
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from benchmarks.timing import alternating, median_time, timed

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: DVC runs `python -m pipeline ...` through the shell

# What each stage command imports before it starts computing: `python -m pipeline <command>` loads the CLI, and the
# CLI then loads the modules of that command (a learned model and a baseline take different paths).
STARTUP_IMPORTS = {
    "generate": ["pipeline.cli", "pipeline.stages.generate"],
    "train (learned)": ["pipeline.cli", "pipeline.stages.train", "pipeline.learning.fitting", "pipeline.learning.models"],
    "train (baseline)": ["pipeline.cli", "pipeline.stages.train", "pipeline.models.baselines"],
    "evaluate (learned)": ["pipeline.cli", "pipeline.stages.evaluate", "pipeline.models.inference"],
    "evaluate (baseline)": ["pipeline.cli", "pipeline.stages.evaluate", "pipeline.models.baselines"],
    "report": ["pipeline.cli", "pipeline.stages.report"],
}
# Issue 7: these commands never need torch, so they must not pay its ~1.5 s import.
TORCH_FREE = ("generate", "train (baseline)", "evaluate (learned)", "evaluate (baseline)", "report")
# ... and only commands that draw figures may load matplotlib: generate draws a preview, compare every figure of a
# dataset (evaluate writes the predictions it draws from).
PLOTTING = ("generate",)

STAGE_GROUPS = ("generate", "train", "evaluate", "compare", "report")
RUNNING_STAGE = re.compile(r"Running stage '([^']+)'")
UP_TO_DATE = "Data and pipelines are up to date"
QUEUED = re.compile(r"Queued experiment '([^']+)'")
QUEUE_STATES = ("Queued", "Running", "Success", "Failed")  # what `dvc queue status` prints per task

SWEEP_METHOD = ("dvc queue start -j N, then waiting for every queued experiment's git ref (polled with git every "
                "0.5 s, which costs no CPU worth measuring) while `dvc queue status` checks for failures in the "
                "background every 15 s; all experiments must end in Success")


# --- running commands ---------------------------------------------------------------------------------------------

def environment() -> dict[str, str]:
    """The environment for git, dvc and the stages: this interpreter's bin first on PATH (DVC runs each stage's
    `python -m pipeline ...` through the shell, and it must be the venv's python), no analytics, unbuffered
    output (so stage lines stream as they happen) and a git identity for the sweep's baseline commit, which a CI
    machine may lack."""
    return {"GIT_AUTHOR_NAME": "benchmark", "GIT_AUTHOR_EMAIL": "benchmark@localhost",
            "GIT_COMMITTER_NAME": "benchmark", "GIT_COMMITTER_EMAIL": "benchmark@localhost",
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
            "PYTHONUNBUFFERED": "1"}


def _failure(args: Iterable[str], cwd: Path, code: int, output: str) -> RuntimeError:
    tail = "\n".join(output.strip().splitlines()[-30:])
    return RuntimeError(f"`{' '.join(args)}` failed in {cwd} with exit code {code}:\n{tail}")


def run(cwd: Path, *args: str, timeout: float | None = 900) -> str:
    """Run a command to completion; its stdout and stderr together. A non-zero exit raises with the output's
    tail, because a benchmark of a failed run would be a fast-looking lie."""
    done = subprocess.run(args, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise _failure(args, cwd, done.returncode, done.stdout + done.stderr)
    return done.stdout + done.stderr


def timed_lines(cwd: Path, *args: str) -> tuple[float, list[tuple[float, str]]]:
    """Run a command and timestamp every output line as it arrives (seconds since the start), so the time
    between DVC's "Running stage" lines tells where a repro spends its time. Returns the wall time and the
    (time, line) pairs; a non-zero exit raises."""
    started = time.perf_counter()
    lines = []
    with subprocess.Popen(args, cwd=cwd, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as process:
        for line in process.stdout:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))
        code = process.wait()
    wall = time.perf_counter() - started
    if code:
        raise _failure(args, cwd, code, "\n".join(line for _, line in lines))
    return wall, lines


# --- clones and profiles ------------------------------------------------------------------------------------------

def head_params(repo: Path) -> dict:
    """params.yaml as committed at repo's HEAD: what a clone starts from, so profiles are built on it (the
    working tree may hold keys the committed code does not know yet)."""
    return yaml.safe_load(run(Path(repo), "git", "show", "HEAD:params.yaml"))


def profile(base: Mapping, datasets: Iterable[str], models: Iterable[str], epochs: int,
            sizes: Mapping[str, Mapping] | None = None) -> dict:
    """A small copy of params `base`: only these datasets and model variants (each keeping its own settings),
    `epochs` epochs (a dataset's own `train.epochs` too, which would take precedence), on the CPU, with `sizes`
    merged into the named data entries. The stages still see a valid params.yaml of the project's own schema, so
    the run is the real pipeline, only shorter."""
    raw = copy.deepcopy(dict(base))
    raw["datasets"] = list(datasets)
    raw["models"] = {name: raw["models"].get(name, {}) for name in models}
    raw["train"]["epochs"] = epochs
    for entry in raw["data"].values():
        if "epochs" in entry.get("train", {}):
            entry["train"]["epochs"] = epochs
    raw["device"] = "cpu"
    for name, values in (sizes or {}).items():
        raw["data"][name].update(values)
    return raw


def write_params(repo: Path, raw: Mapping) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(dict(raw), sort_keys=False))


def clone(source_repo: Path, target: Path) -> Path:
    """A fresh clone of source_repo's HEAD at target with its own, empty DVC cache. The cache is set explicitly
    in the clone's local config because a global `cache.dir` (a shared cache) would otherwise make a "from
    scratch" run restore its outputs instead of computing them."""
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    run(target.parent, "git", "clone", "--quiet", str(Path(source_repo).resolve()), str(target))
    run(target, "dvc", "cache", "dir", "--local", str(target / ".dvc" / "cache"))
    return target


def pairs(raw: Mapping) -> int:
    """(dataset, model) train stages the params make: every listed dataset with every model (a variant whose own
    `datasets:` leaves a dataset out writes a not-run record there; evaluation is one stage per dataset)."""
    return len(raw["datasets"]) * len(raw["models"])


# --- full and no-op repro -----------------------------------------------------------------------------------------

def stage_seconds(lines: list[tuple[float, str]], wall: float) -> dict[str, float]:
    """Stage name -> seconds from its "Running stage" line to the next one (the last runs until the end). Each
    figure therefore includes DVC's own bookkeeping after the stage (hashing outputs, rewriting dvc.lock)."""
    starts = [(at, match.group(1)) for at, line in lines if (match := RUNNING_STAGE.search(line))]
    ends = [at for at, _ in starts[1:]] + [wall]
    return {name: end - at for (at, name), end in zip(starts, ends)}


def by_group(per_stage: Mapping[str, float]) -> dict[str, dict]:
    """Sum the per-stage seconds by stage group (`train@sine-gru` -> train), in
    pipeline order."""
    groups = {group: {"stages": 0, "seconds": 0.0} for group in STAGE_GROUPS}
    for name, seconds in per_stage.items():
        group = groups.setdefault(name.split("@")[0].removesuffix("_fr"), {"stages": 0, "seconds": 0.0})
        group["stages"] += 1
        group["seconds"] += seconds
    return groups


def full_repro(source_repo: Path, workdir: Path, profile: Mapping | None = None) -> dict:
    """`dvc repro` from scratch in a fresh clone of source_repo's HEAD at workdir, with params `profile` instead
    of the committed params.yaml if given (quick mode and tests).

    Returns repo (the clone, reproduced, for `noop_repro`), commit, seconds (wall), stages (how many ran),
    pairs, seconds_per_pair, before_first_stage (DVC's start-up and pipeline collection), groups (stage group ->
    stages and seconds) and stage_seconds (stage -> seconds)."""
    repo = clone(source_repo, workdir)
    if profile is not None:
        write_params(repo, profile)
    used = yaml.safe_load((repo / "params.yaml").read_text())
    wall, lines = timed_lines(repo, "dvc", "repro")
    restored = [line for _, line in lines if "is cached" in line or "didn't change" in line]
    if restored:  # a from-scratch run computes everything; anything else measures a cache, not the pipeline
        raise RuntimeError(f"the repro in {repo} was not from scratch: {restored[0]!r}")
    per_stage = stage_seconds(lines, wall)
    n_pairs = pairs(used)
    return {"repo": str(repo), "commit": run(repo, "git", "rev-parse", "HEAD").strip(),
            "profile": profile is not None, "seconds": wall, "stages": len(per_stage), "pairs": n_pairs,
            "seconds_per_pair": wall / n_pairs,
            "before_first_stage": min((at for at, line in lines if RUNNING_STAGE.search(line)), default=wall),
            "groups": by_group(per_stage), "stage_seconds": per_stage}


def require_noop(output: str) -> None:
    """Raise unless `dvc repro` output says it ran nothing: a no-op timing that ran a stage is not a no-op."""
    ran = RUNNING_STAGE.findall(output)
    if ran or UP_TO_DATE not in output:
        raise RuntimeError(f"`dvc repro` was not a no-op (ran {ran or 'nothing, but did not say up to date'}):\n"
                           f"{output[-2000:]}")


def noop_repro(repo: Path, repeats: int) -> dict:
    """Median wall time of `dvc repro` in an already reproduced repo (every run must do nothing)."""
    seconds, runs, _ = median_time(lambda: require_noop(run(Path(repo), "dvc", "repro")), repeats)
    return {"seconds": seconds, "runs": runs}


# --- start-up -----------------------------------------------------------------------------------------------------

def _probe(modules: Iterable[str]) -> str:
    """Python source that imports `modules` and then prints whether torch and matplotlib got loaded."""
    return (f"import {', '.join(modules)}\n"
            "import sys\n"
            "print('torch' in sys.modules, 'matplotlib' in sys.modules)\n")


def startup(repeats: int, imports: Mapping[str, list[str]] = STARTUP_IMPORTS, cwd: Path = ROOT) -> dict:
    """Median wall time of a fresh `python -c` for each command's imports against a bare `import torch`,
    run in cwd as a stage runs in its project (`python -c` puts cwd first on sys.path: cwd's pipeline package).

    The commands run in turns, one repeat of each before the next, so a busy spell of the machine hits them all
    alike; one untimed round first fills the OS file cache. A module that fails to import raises.

    Returns repeats, bare_torch_seconds and commands: name -> modules, seconds, ratio (to the bare import),
    torch and matplotlib (whether they ended up in sys.modules)."""
    commands = {"import torch": ["torch"], **{name: list(modules) for name, modules in imports.items()}}

    def probe(modules: list[str]) -> tuple[float, tuple[bool, bool]]:
        args = [sys.executable, "-c", _probe(modules)]
        elapsed, done = timed(lambda: subprocess.run(args, cwd=cwd, env=environment(), capture_output=True,
                                                     text=True, timeout=300))
        if done.returncode:
            raise _failure(args, Path(cwd), done.returncode, done.stdout + done.stderr)
        # stdout only: a warning on stderr must not be read as the answer
        torch_loaded, matplotlib_loaded = (word == "True" for word in done.stdout.split()[-2:])
        return elapsed, (torch_loaded, matplotlib_loaded)  # the interpreter's start-up timed, not the check

    medians, times, loaded = alternating({name: (lambda m=modules: probe(m)) for name, modules in commands.items()},
                                         repeats, warm_up_rounds=1, clock=lambda side: side())
    bare = medians["import torch"]
    result = {name: {"modules": commands[name], "seconds": medians[name], "ratio": medians[name] / bare,
                     "torch": loaded[name][0], "matplotlib": loaded[name][1], "runs": times[name]}
              for name in imports}
    return {"repeats": repeats, "bare_torch_seconds": bare, "bare_torch_runs": times["import torch"],
            "commands": result}


# --- queued sweeps ------------------------------------------------------------------------------------------------

def parse_queue_status(text: str) -> dict[str, str]:
    """Experiment name -> state from `dvc queue status`, whose task lines read
    `837bc4f  vogie-abac  07:27 AM   Success` under a `Task Name Created Status` header."""
    states = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] != "Task" and words[-1] in QUEUE_STATES:
            states[words[1]] = words[-1]
    return states


def unfinished(states: Mapping[str, str], names: Iterable[str]) -> dict[str, str | None]:
    """The named experiments that did not end in Success, with their state (None: not listed at all)."""
    return {name: states.get(name) for name in names if states.get(name) != "Success"}


def _experiment_refs(repo: Path) -> set[str]:
    """Names of the experiments whose results are back in the repo (git refs refs/exps/<baseline>/<name>)."""
    refs = run(repo, "git", "for-each-ref", "--format=%(refname)", "refs/exps", timeout=60)
    return {ref.rsplit("/", 1)[-1] for ref in refs.split()}


def wait_for_experiments(repo: Path, names: list[str], started: float, timeout: float,
                         status_every: float = 15.0) -> float:
    """Seconds from `started` until every named experiment's ref exists. A failed experiment never gets a ref,
    so `dvc queue status` runs in the background every status_every seconds (it takes a few seconds itself and
    must not delay the clock), and a Failed state raises at once; so does the timeout."""
    checker, last_check, last_status = None, time.perf_counter(), ""
    try:
        while True:
            now = time.perf_counter()
            if set(names) <= _experiment_refs(repo):
                return now - started
            if now - started > timeout:
                raise RuntimeError(f"the sweep in {repo} did not finish in {timeout:.0f} s:\n{last_status}")
            if checker is None and now - last_check >= status_every:
                checker = subprocess.Popen(["dvc", "queue", "status"], cwd=repo, env=environment(), text=True,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if checker is not None and checker.poll() is not None:
                last_status = checker.communicate()[0]
                checker, last_check = None, time.perf_counter()
                failed = sorted(name for name, state in parse_queue_status(last_status).items()
                                if name in names and state == "Failed")
                if failed:
                    raise RuntimeError(f"queued experiments failed in {repo}: {failed}; see "
                                       f"`dvc queue logs <name>` there:\n{last_status}")
            time.sleep(0.5)
    finally:
        if checker is not None:
            checker.communicate()


def _start_workers(repo: Path, jobs: int) -> None:
    """`dvc queue start -j jobs`. It forks the workers, and they inherit its stdout and stderr: read through a
    pipe, the call would only return when the last worker exits (after the whole sweep), so its output goes to a
    file instead. Every worker must be new: a leftover worker would change what is measured."""
    log = repo / ".dvc" / "tmp" / "queue-start.log"
    with log.open("w") as out:
        code = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=repo, env=environment(), stdout=out,
                              stderr=subprocess.STDOUT, timeout=300).returncode
    output = log.read_text()
    if code:
        raise _failure(["dvc", "queue", "start", "-j", str(jobs)], repo, code, output)
    started = re.search(r"Started '(\d+)' new", output)
    if not started or int(started.group(1)) != jobs:
        raise RuntimeError(f"`dvc queue start -j {jobs}` in {repo} did not start {jobs} new workers:\n{output}")


def _stop_workers(repo: Path) -> None:
    """Stop this clone's queue workers and wait until they are gone: idle workers linger otherwise, and the next
    measurement must not share the CPU with them."""
    subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=repo, env=environment(), capture_output=True,
                   timeout=120)
    deadline = time.perf_counter() + 60
    for pid_file in (repo / ".dvc" / "tmp" / "exps" / "celery").glob("*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        while time.perf_counter() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.5)


def sweep(source_repo: Path, workdir: Path, jobs: int, n: int = 4, profile: Mapping | None = None,
          timeout: float = 1800) -> dict:
    """A queued sweep of n experiments in a fresh clone of source_repo's HEAD at workdir, run by `jobs` workers.

    The clone gets params `profile` (keep it small: the sweep's time should be the queue's and the training's,
    not a full pipeline), is reproduced and committed as the experiments' baseline; then n experiments are
    queued with distinct model.hidden values above the baseline's, so each really retrains (a value seen before
    would come back from the run-cache), and `dvc queue start -j jobs` drains the queue. Only that part is timed.

    Returns jobs, experiments, names, hidden, seconds, experiments_per_minute and method. Raises if any
    experiment does not end in Success: a failed run must not count as fast."""
    repo = clone(source_repo, workdir)
    if profile is not None:
        write_params(repo, profile)
    run(repo, "dvc", "repro", timeout=None)
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "--quiet", "-m", "sweep baseline")
    hidden = int(yaml.safe_load((repo / "params.yaml").read_text())["model"]["hidden"])
    values = [hidden + i for i in range(1, n + 1)]
    queued = run(repo, "dvc", "exp", "run", "--queue", "-S", "model.hidden=" + ",".join(map(str, values)))
    names = QUEUED.findall(queued)
    if len(names) != n:
        raise RuntimeError(f"expected {n} queued experiments in {repo}, got {names}:\n{queued}")
    started = time.perf_counter()
    try:
        _start_workers(repo, jobs)
        seconds = wait_for_experiments(repo, names, started, timeout)
    finally:
        _stop_workers(repo)
    status = run(repo, "dvc", "queue", "status")
    bad = unfinished(parse_queue_status(status), names)
    if bad:
        raise RuntimeError(f"queued experiments in {repo} did not all succeed: {bad}\n{status}")
    return {"jobs": jobs, "experiments": n, "names": names, "hidden": values, "seconds": seconds,
            "experiments_per_minute": 60 * n / seconds, "repo": str(repo), "method": SWEEP_METHOD}
