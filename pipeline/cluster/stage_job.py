"""`python -m pipeline.cluster.stage_job STAGE`: one stage of a cluster job, inside the job's clone, in one process.

A stage job (cluster_repro.run_stage: each stage of `pipeline repro --workers`, and each shared stage of a sweep's
wave 0) does three DVC steps. As three `python -m dvc` processes each paid DVC's start-up (0.8 s measured on the
2-core machine), which was a third of a small stage's job; here DVC is imported once and its own command-line
entry point runs the first two steps:

1. `dvc repro --pull STAGE`: its upstream stages are restored from the remote's run-cache, the stage runs (or is
   restored too);
2. `dvc push --run-cache STAGE`;
3. the objects of every output that the stage's run-cache entry names, `cache: false` ones included, pushed
   through DVC's remote API. DVC 3.67's `push --run-cache` sends the entry and the workspace's cached outputs
   only, so without this step another machine cannot restore the entry (README "Running on a cluster").

The exit status says which step failed (FAILED_STEP); their output goes to this process's stdout and stderr, the
job's log. This module changes no number, so it is no stage's dependency.
"""

import sys

# Exit statuses of their own: Python exits with 1 on an uncaught exception and 2 on a usage error, which must not
# read as a failed step.
REPRO_FAILED, PUSH_FAILED, OUTPUTS_FAILED, USAGE = 11, 12, 13, 2
FAILED_STEP = {REPRO_FAILED: "dvc repro failed", PUSH_FAILED: "dvc push --run-cache failed",
               OUTPUTS_FAILED: "pushing the outputs of its run-cache entry failed"}


def push_entry_outputs(stage_name: str) -> tuple[int, int]:
    """(objects pushed, objects that failed) for the outputs the stage's run-cache entry names."""
    from dvc.repo import Repo
    from dvc.stage.serialize import to_single_stage_lockfile

    with Repo() as repo:
        (stage,) = repo.stage.collect(stage_name)
        entry = repo.stage_cache._create_stage(to_single_stage_lockfile(stage), wdir=stage.wdir)
        pushed = failed = 0
        for objs in entry.get_used_objs().values():
            done = repo.cloud.push(objs)
            pushed, failed = pushed + len(done.transferred), failed + len(done.failed)
    return pushed, failed


def main(argv: list[str]) -> int:
    from dvc.cli import main as dvc

    if len(argv) != 1:
        print("usage: python -m pipeline.cluster.stage_job STAGE", file=sys.stderr)
        return USAGE
    stage = argv[0]
    for status, args in ((REPRO_FAILED, ["repro", "--pull", stage]), (PUSH_FAILED, ["push", "--run-cache", stage])):
        print(f"$ dvc {' '.join(args)}", flush=True)
        if dvc(args) != 0:
            return status
    print("$ (push the outputs of the stage's run-cache entry)", flush=True)
    try:
        pushed, failed = push_entry_outputs(stage)
    except Exception as exc:  # the remote refused, DVC's internals changed: the job's log says which
        print(f"ERROR: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return OUTPUTS_FAILED
    print(f"{pushed} objects of the run-cache entry's outputs pushed, {failed} failed", flush=True)
    return OUTPUTS_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
