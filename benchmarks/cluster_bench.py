"""Issue 16's figures: the same sweep on a Dask LocalCluster of 1 and of 2 workers, and the default pipeline
through `python -m pipeline repro --workers N` against a plain `dvc repro`.

Each run gets its own fresh clone of HEAD with its own bare git origin and local-folder DVC remote, as a user
would set them up, so nothing one run pushes (run-cache, experiment refs) can be restored by another: every
figure is of computed work. The commands are the user's, timed from outside; their output lines are timestamped
as they arrive, which splits a run into the part that fans out to the workers and the fixed part around it
(wave 0 and the final `dvc exp pull` of a sweep; the coordinator's `dvc repro --pull` of a matrix repro).
"""

import re
import statistics
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from benchmarks import pipeline_bench as pb

SWEEP_FANOUT = re.compile(r"^(\d+) experiments? on .*, (\d+) threads? each$")
SWEEP_DONE = re.compile(r"^(\S+): done \(log ")
MATRIX_PLAN = re.compile(r"^(\d+) stages? in (\d+) waves? on .*, (\d+) threads? each$")
MATRIX_COORDINATOR = "coordinator: dvc repro --pull"
MATRIX_NOTHING_RAN = "coordinator: ran no stage; dvc.lock written"


def prepare(source_repo: Path, workdir: Path, profile: Mapping | None = None) -> Path:
    """A clone of source_repo's HEAD at workdir/repo with params `profile` (if given), a bare git origin and a
    default DVC remote (both folders under workdir), committed and pushed: what `pipeline sweep` and
    `pipeline repro --workers` check for before they start."""
    workdir = Path(workdir).resolve()
    repo = pb.clone(source_repo, workdir / "repo")
    if profile is not None:
        pb.write_params(repo, profile)
    pb.run(workdir, "git", "init", "--quiet", "--bare", "origin.git")
    (workdir / "storage").mkdir()
    pb.run(repo, "git", "remote", "set-url", "origin", str(workdir / "origin.git"))
    pb.run(repo, "dvc", "remote", "add", "--default", "bench", str(workdir / "storage"))
    pb.run(repo, "git", "add", "-A")
    pb.run(repo, "git", "commit", "--quiet", "-m", "cluster benchmark: params and DVC remote")
    pb.run(repo, "git", "push", "--quiet", "origin", "HEAD:refs/heads/main")
    return repo


def sweep_figures(wall: float, lines: list[tuple[float, str]], names: Iterable[str]) -> dict:
    """From a sweep's timestamped output: seconds in all, seconds of the fan-out (from the line that starts it to
    the last job's "done"), threads per job, throughputs. Raises unless every one of `names` is done: a failed
    job must not count as fast."""
    names = list(names)
    start = next(((at, m) for at, line in lines if (m := SWEEP_FANOUT.match(line))), None)
    done = {m.group(1): at for at, line in lines if (m := SWEEP_DONE.match(line))}
    missing = [name for name in names if name not in done]
    if start is None or missing:
        text = "\n".join(line for _, line in lines[-30:])
        why = f"missing: {missing}" if missing else "it never fanned out"
        raise RuntimeError(f"the sweep did not finish every experiment ({why}):\n{text}")
    fanout = max(done.values()) - start[0]
    return {"experiments": len(names), "threads": int(start[1].group(2)), "seconds": wall,
            "fanout_seconds": fanout, "fixed_seconds": wall - fanout,
            "experiments_per_minute": 60 * len(names) / wall, "fanout_experiments_per_minute": 60 * len(names) / fanout}


def sweep(source_repo: Path, workdir: Path, workers: int, values: list[int], profile: Mapping | None,
          threads: int | None = None) -> dict:
    """`python -m pipeline sweep -S model.hidden=<values> --workers N [--threads T]` in a fresh prepared clone,
    timed. Without `threads` the sweep's default applies: the machine's cores shared among the workers."""
    repo = prepare(source_repo, workdir, profile)
    setting = "model.hidden=" + ",".join(map(str, values))
    wall, lines = pb.timed_lines(repo, sys.executable, "-m", "pipeline", "sweep", "-S", setting,
                                 "--workers", str(workers), *(["--threads", str(threads)] if threads else []))
    return {"workers": workers, "values": values, "repo": str(repo),
            **sweep_figures(wall, lines, [f"sweep-hidden{value}" for value in values])}


def median_sweep(runs: list[dict]) -> dict:
    """One side of the sweep comparison over its repeated runs: the median seconds, fan-out and fixed part (each
    its own median) and the throughput they give, with every run kept under "runs"."""
    first = runs[0]
    seconds = statistics.median(run["seconds"] for run in runs)
    return {"workers": first["workers"], "threads": first["threads"], "experiments": first["experiments"],
            "seconds": seconds, "fanout_seconds": statistics.median(run["fanout_seconds"] for run in runs),
            "fixed_seconds": statistics.median(run["fixed_seconds"] for run in runs),
            "experiments_per_minute": 60 * first["experiments"] / seconds, "runs": list(runs)}


def paired_ratio(slow: list[dict], fast: list[dict]) -> dict:
    """How many times faster `fast` ran than `slow`, from runs paired by round (the i-th of each ran minutes apart):
    the median of the per-round ratios of seconds, with those ratios. A shared machine drifts between rounds (one
    1-worker round took 221 s against 151 s the round before); a ratio within a round sees both sides in the same
    spell, where a ratio of the sides' medians can pair a slow round of one side with a quick round of the other."""
    if not slow or len(slow) != len(fast):
        raise ValueError(f"paired runs needed, got {len(slow)} and {len(fast)}")
    rounds = [a["seconds"] / b["seconds"] for a, b in zip(slow, fast)]
    return {"ratio": statistics.median(rounds), "rounds": rounds}


def matrix_figures(wall: float, lines: list[tuple[float, str]]) -> dict:
    """From a matrix repro's timestamped output: stages, waves, threads per job, seconds in all, seconds until
    the coordinator's final `dvc repro --pull` starts (the waves) and after. Raises if the coordinator had to
    run a stage: its repro must only restore."""
    plan = next((m for _, line in lines if (m := MATRIX_PLAN.match(line))), None)
    coordinator = next((at for at, line in lines if line.startswith(MATRIX_COORDINATOR)), None)
    if plan is None or coordinator is None or not any(line == MATRIX_NOTHING_RAN for _, line in lines):
        text = "\n".join(line for _, line in lines[-30:])
        raise RuntimeError(f"the matrix repro did not end with a coordinator that ran no stage:\n{text}")
    return {"stages": int(plan.group(1)), "waves": int(plan.group(2)), "threads": int(plan.group(3)),
            "seconds": wall, "waves_seconds": coordinator, "coordinator_seconds": wall - coordinator}


def matrix(source_repo: Path, workdir: Path, workers: int, profile: Mapping | None = None) -> dict:
    """`python -m pipeline repro --workers N` from scratch in a fresh prepared clone, timed."""
    repo = prepare(source_repo, workdir, profile)
    wall, lines = pb.timed_lines(repo, sys.executable, "-m", "pipeline", "repro", "--workers", str(workers))
    return {"workers": workers, "repo": str(repo), **matrix_figures(wall, lines)}
