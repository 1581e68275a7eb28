"""How the benchmarks time things, in one place: a stopwatch, the median of repeats, and sides timed in turns.

Medians, not means: a shared machine has slow spells, and one of them should move a figure by one run at most.
Sides that are compared run in alternating rounds (each side once per round), so a slow spell lands on all of
them alike instead of on whichever side happened to run then.
"""

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall seconds of one call, and its result."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def median_time(fn: Callable[[], T], repeats: int) -> tuple[float, list[float], T]:
    """The median wall time of `repeats` calls, every call's time, and the last call's result."""
    runs, result = [], None
    for _ in range(repeats):
        seconds, result = timed(fn)
        runs.append(seconds)
    return statistics.median(runs), runs, result


def alternating(sides: Mapping[str, Callable[[], Any]], repeats: int, warm_up_rounds: int = 0,
                clock: Callable[[Callable[[], Any]], tuple[float, Any]] = timed
                ) -> tuple[dict[str, float], dict[str, list[float]], dict[str, Any]]:
    """Each side's median over `repeats` rounds in which every side runs once, in the order given; every run's
    time; and each side's last result. `warm_up_rounds` untimed rounds go first (the OS file cache, lazy
    imports). `clock` times one call: a side that times only part of its own work returns (seconds, result)
    itself and is passed `clock=lambda fn: fn()`."""
    runs: dict[str, list[float]] = {name: [] for name in sides}
    results: dict[str, Any] = {}
    for round_ in range(warm_up_rounds + repeats):
        for name, fn in sides.items():
            seconds, results[name] = clock(fn)
            if round_ >= warm_up_rounds:
                runs[name].append(seconds)
    return {name: statistics.median(t) for name, t in runs.items()}, runs, results
