"""The stage's side-by-side jobs (pipeline/learning/processes.py): results in order, failures as one error, and the same
answers whether the jobs run in forked processes or in turn."""

import os
import sys

import pytest

from pipeline.learning import processes

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="jobs fork on Linux only")


def pid_job(value):
    return lambda: (value, os.getpid())


@linux_only
@pytest.mark.parametrize("jobs, at_once", [(2, 2), (5, 2), (3, 3), (4, 8)])
def test_results_come_back_in_order_from_forked_processes(jobs, at_once):
    results = processes.run_all([pid_job(i) for i in range(jobs)], at_once)
    assert [value for value, _ in results] == list(range(jobs))
    pids = [pid for _, pid in results]
    assert len(set(pids)) == jobs  # every job in its own process ...
    assert pids.count(os.getpid()) == 1  # ... except one, which this process runs after its last fork
    assert pids[-at_once if jobs % at_once == 0 else -(jobs % at_once)] == os.getpid()


def test_one_at_a_time_runs_every_job_here():
    results = processes.run_all([pid_job(i) for i in range(3)], 1)
    assert results == [(i, os.getpid()) for i in range(3)]


@linux_only
def test_a_failing_job_is_one_error_with_its_traceback():
    def fails():
        raise ValueError("replica 3 broke")

    with pytest.raises(processes.JobError, match=r"(?s)job 1 failed in its process:.*ValueError: replica 3 broke"):
        processes.run_all([pid_job(0), fails], 2)


@linux_only
def test_a_job_whose_process_dies_is_an_error_not_a_hang():
    with pytest.raises(processes.JobError, match=r"job 1 ended without a result \(exit code 3\)"):
        processes.run_all([pid_job(0), lambda: os._exit(3)], 2)


def test_an_error_in_this_process_stops_the_others():
    def fails():
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        processes.run_all([fails, pid_job(1)], 2)


@pytest.mark.parametrize("threads, on_cpu", [(0, True), (1, False), (2, False)])
def test_in_turn_where_fork_is_not_safe_or_threads_take_every_core(threads, on_cpu):
    assert processes.side_by_side(threads, on_cpu) == 1


@linux_only
@pytest.mark.parametrize("threads", [1, 2])
def test_as_many_side_by_side_as_the_free_cores_hold(threads):
    assert processes.side_by_side(threads, True) == max(1, len(os.sched_getaffinity(0)) // threads)
