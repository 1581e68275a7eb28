"""`python -m pipeline repro --workers N | --scheduler ADDRESS`: the stages of one pipeline as jobs on a Dask cluster.

`dvc repro` runs the stages one at a time on one machine. Here the stages of `dvc.yaml` (as DVC resolves them:
`train@sine-gru`, ...) run in dependency waves computed from DVC's own graph (a stage's wave is one more than its
deepest upstream stage's), each stage one Dask job:

1. checks, before anything starts (jobs.py's, one line each): a clean working tree, HEAD on the git remote, a
   default DVC remote in the committed config; the scheduler reachable;
2. per wave, one job per stage (`run_stage`): a fresh clone at HEAD, then `python -m pipeline.cluster.stage_job STAGE` in
   it: `dvc repro --pull STAGE`, which restores its upstream stages from the remote's run-cache (they ran in an
   earlier wave) and runs the stage itself, then `dvc push --run-cache STAGE` and the push of the stage's
   `cache: false` outputs (below), in one process. A wave starts when the
   previous one has finished; a failed job stops the waves after its own, and is reported with its log tail;
3. the coordinator's own `dvc repro --pull` restores every output from the run-cache (nothing runs) and writes
   `dvc.lock` once: only the coordinator writes it.

`cache: false` outputs (the metrics, the compare CSVs) are not pushed by `dvc push --run-cache` in DVC 3.67: the
run-cache entry names them and DVC commits them to the job's local cache, but `push` only sends the objects of the
workspace's cached outputs. Without them a run-cache entry cannot be restored anywhere else, so each downstream job
and the coordinator re-ran those stages (measured: README "Running on a cluster"). The fix here: the job pushes the
objects of every output its run-cache entry names (stage_job.push_entry_outputs), through DVC's own remote API, so a
restore brings the uncached files back like the cached ones.

A rerun after a failure submits every stage again: the finished ones are restored from the run-cache in seconds and
the failed one runs. This module changes no number, so it is no stage's dependency.
"""

import re
from pathlib import Path

from pipeline.cluster.jobs import (check_workspace, client_for, close_client, dvc, outcome, run_stage, stage_graph,
                                   tail)
from pipeline.errors import ClusterReproError, SweepError

LOG_DIR = Path(".dvc/tmp/cluster_repro")


# ---------------------------------------------------------------- waves (pure)

def waves(upstream: dict[str, set[str]]) -> list[list[str]]:
    """Stages grouped by depth: wave 0 has no upstream stage, a stage's wave is 1 + its deepest upstream's. Upstream
    names that are not keys (data sources, .dvc files) are ignored. Sorted names within a wave."""
    depth: dict[str, int] = {}

    def visit(stage: str, path: tuple[str, ...]) -> int:
        if stage in depth:
            return depth[stage]
        if stage in path:
            cycle = " -> ".join(path[path.index(stage):] + (stage,))
            raise ClusterReproError(f"the stages depend on each other in a cycle: {cycle}")
        ups = [u for u in upstream[stage] if u in upstream]
        depth[stage] = 1 + max((visit(u, path + (stage,)) for u in ups), default=-1)
        return depth[stage]

    for stage in upstream:
        visit(stage, ())
    grouped: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for stage, level in depth.items():
        grouped[level].append(stage)
    return [sorted(group) for group in grouped]


# ---------------------------------------------------------------- the job (worker side)


# ---------------------------------------------------------------- the coordinator

def _log_name(stage: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+@_-]+", "_", stage) + ".log"


def run(workers: int | None, scheduler: str | None, threads: int | None, git_remote: str, echo=print,
        root: Path = Path(".")) -> int:
    """The whole pipeline on the cluster; returns the number of failed jobs. Raises ClusterReproError (nothing
    started) on bad input."""
    from pipeline.learning.processes import free_cores

    if workers is not None and scheduler:
        raise ClusterReproError("give --workers (a cluster on this machine) or --scheduler (an existing one), "
                                "not both")
    if workers is not None and workers < 1:
        raise ClusterReproError(f"--workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise ClusterReproError(f"--threads must be at least 1, got {threads}")
    if not (root / "dvc.yaml").is_file():
        raise ClusterReproError("dvc.yaml not found: run from the project root")
    problems, git_url, base, _ = check_workspace(root, git_remote)
    if problems:
        raise ClusterReproError("the repro cannot start:\n" + "\n".join(f"  - {p}" for p in problems))
    plan = waves(stage_graph(root))

    if scheduler is None:
        workers = workers or free_cores()
        threads = threads or max(1, free_cores() // workers)
    threads = threads or 1
    try:
        client = client_for(workers, scheduler, threads)
    except SweepError as exc:
        raise ClusterReproError(exc.message) from None
    from distributed import as_completed

    (root / LOG_DIR).mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    count = sum(len(wave) for wave in plan)
    echo(f"{count} stage{'s' if count != 1 else ''} in {len(plan)} wave{'s' if len(plan) != 1 else ''} on "
         f"{scheduler or f'{workers} local workers'}, {threads} thread{'s' if threads != 1 else ''} each")
    try:
        for number, wave in enumerate(plan):
            echo(f"wave {number}: {', '.join(wave)}")
            futures = {client.submit(run_stage, git_url, base, stage, threads, key=f"repro-{stage}", pure=False):
                       stage for stage in wave}
            for future in as_completed(futures):
                stage = futures[future]
                result = outcome(future, stage=stage, ran=[])
                log_path = LOG_DIR / _log_name(stage)
                (root / log_path).write_text(result["log"] + "\n")
                if not result["ok"]:
                    failed.append(stage)
                    echo(f"{stage}: FAILED, {result['error']} (log {log_path}); its last lines:\n"
                         f"{tail(result['log'])}")
                    continue
                how = "ran" if stage in result["ran"] else "restored from the run-cache"
                again = [s for s in result["ran"] if s != stage]
                echo(f"{stage}: {how}" + (f"; upstream stages that ran again: {', '.join(again)}" if again else "")
                     + f" (log {log_path})")
            if failed:
                later = sum(len(w) for w in plan[number + 1:])
                echo(f"{len(failed)} of {count} stages failed ({', '.join(failed)}); {later} later stage"
                     f"{'s' if later != 1 else ''} not started. Run the same command again: finished stages are "
                     f"restored from the run-cache, the failed ones run")
                return len(failed)
    finally:
        close_client(client, scheduler)

    echo("coordinator: dvc repro --pull (restores every output from the run-cache, writes dvc.lock)")
    final = dvc(root, "repro", "--pull")
    output = final.stdout + final.stderr
    (root / LOG_DIR / "coordinator.log").write_text(output)
    if final.returncode != 0:
        echo(f"the coordinator's dvc repro --pull FAILED (log {LOG_DIR / 'coordinator.log'}):\n{tail(output)}")
        return 1
    ran = re.findall(r"Running stage '([^']+)'", output)
    echo(f"coordinator: {'ran ' + ', '.join(ran) if ran else 'ran no stage'}; dvc.lock written")
    return 0
