"""Run the independent jobs of one stage side by side, each in a forked copy of this process.

Why: DVC runs one stage at a time, so while a train stage's single thread works, the machine's other cores sit
idle; the replica groups of a learned pair are independent jobs that can use them. Why fork: a job needs torch
and the dataset, which this process has already loaded; a forked child shares both, where a spawned one would
pay torch's 2 s import again. Fork only where it is safe for what a job runs: Linux, torch on the CPU, before
this process has run any torch computation (macOS's system libraries and a started CUDA context are not
fork-safe), so everywhere else the jobs run in turn. Either way each job computes the same numbers: where it
runs is not an input.

A child's result comes back pickled through a pipe; its exception comes back as text and is raised here, so a
failing job is one error, never a half-written output (the stage writes nothing until every job is back).
"""

import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


class JobError(RuntimeError):
    """A job that failed in a child process: its traceback, as the child printed it."""


def free_cores() -> int:
    """The cores this process may run on (its affinity mask, which a CI runner or `taskset` may narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def side_by_side(threads: int, on_cpu: bool) -> int:
    """How many jobs of `threads` threads each may run at once here: as many as the free cores hold, where fork
    is safe; 1 (in turn) otherwise, and for `threads: 0` (torch's default already takes every core)."""
    if not on_cpu or sys.platform != "linux" or threads <= 0:
        return 1
    return max(1, free_cores() // threads)


def run_all(jobs: Sequence[Callable[[], T]], at_once: int) -> list[T]:
    """Every job's result, in order, up to `at_once` running together. In the last wave this process runs the
    first job itself, after its last fork; in earlier waves it only waits, so it forks before any computation."""
    if at_once <= 1 or len(jobs) <= 1:
        return [job() for job in jobs]
    results: list[T] = []
    for start in range(0, len(jobs), at_once):
        wave = list(enumerate(jobs[start:start + at_once], start))
        last = start + at_once >= len(jobs)
        children = [(i, *_fork(job)) for i, job in (wave[1:] if last else wave)]
        try:
            mine = [wave[0][1]()] if last else []
        except BaseException:
            for _, process, _ in children:
                process.kill()
            raise
        results.extend(mine)
        results.extend(_collect(process, pipe, i) for i, process, pipe in children)
    return results


def _fork(job: Callable[[], T]):
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)

    def child() -> None:
        reader.close()
        try:
            writer.send(("ok", job()))
        except BaseException:  # noqa: BLE001 -- everything goes back to the parent, which decides
            writer.send(("error", traceback.format_exc()))
        finally:
            writer.close()

    process = context.Process(target=child, daemon=True)  # dies with this process (Ctrl-C, a crash)
    process.start()
    writer.close()
    return process, reader


def _collect(process, pipe, index: int):
    try:
        status, payload = pipe.recv()  # before join: a large result would block the child on a full pipe
    except EOFError:
        process.join()
        raise JobError(f"job {index} ended without a result (exit code {process.exitcode})") from None
    finally:
        pipe.close()
    process.join()
    if status == "error":
        raise JobError(f"job {index} failed in its process:\n{payload}")
    return payload
