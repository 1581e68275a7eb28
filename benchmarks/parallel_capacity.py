"""How many cores' worth of CPU work this machine delivers when every core is busy: the ceiling of any speed-up
that running N workers side by side can show here.

Why: a virtual machine's cores may share physical cores (hyper-threads) or a host with other tenants, so two busy
processes on "2 cores" can each run at little more than half speed. A sweep on 2 workers cannot then be 1.7x one
worker, however well the sweep is built; measured beside it, the ceiling tells the sweep's overhead apart from the
machine's. The work is a fixed pure-Python loop (the single-threaded kind DVC and git do around a training), timed
alone on one core, then on every core at once, one process pinned to each. Linux only (CPU affinity).
"""

import multiprocessing
import os
import statistics
import time

LOOPS = 3_000_000  # about a quarter of a second of work on the 2-core CI machine


def _work(loops: int) -> int:
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


def _timed(core: int, loops: int, start, results) -> None:
    """In a child: pinned to `core`, wait until every sibling is ready, then time the loop."""
    os.sched_setaffinity(0, {core})
    start.wait()
    began = time.perf_counter()
    _work(loops)
    results.put(time.perf_counter() - began)


def _round(cores: list[int], loops: int) -> list[float]:
    """The loop's seconds in each of len(cores) processes started together, one pinned to each core."""
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(len(cores)), context.Queue()
    children = [context.Process(target=_timed, args=(core, loops, start, results)) for core in cores]
    for child in children:
        child.start()
    seconds = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join()
    return seconds


def measure(loops: int = LOOPS, repeats: int = 5, cores: list[int] | None = None) -> dict:
    """cores: how many processes ran together, one pinned to each of `cores` (default: every core this process
    may use); alone/together: median seconds of one loop on the first core and on all of them at once
    (alternating, so a busy spell hits both); capacity: cores' worth of work per second together,
    len(cores) x alone / together (len(cores) when the cores are independent, about 1 when they share one)."""
    cores = list(cores) if cores is not None else sorted(os.sched_getaffinity(0))
    alone, together = [], []
    for _ in range(repeats):
        alone += _round(cores[:1], loops)
        together.append(statistics.median(_round(cores, loops)))
    one, all_ = statistics.median(alone), statistics.median(together)
    return {"cores": len(cores), "loops": loops, "alone_seconds": one, "together_seconds": all_,
            "capacity": len(cores) * one / all_}


if __name__ == "__main__":
    print(measure())
