"""Numerical integration of the chaotic systems behind the `mackey_glass` and `lorenz` datasets, in float64.

Why a fixed-step classical Runge-Kutta scheme written out here rather than scipy's adaptive solvers: a fixed
sequence of float64 multiplies and adds gives the same bits on every CPU (numpy's elementwise arithmetic is
correctly rounded and uses no BLAS), so a dataset is a function of its params alone; an adaptive step size
would make the sampled points depend on error estimates, and scipy is not a dependency. The step is small
against each system's time scales (0.01 for Lorenz, whose fastest scale is about 0.1; 0.1 for Mackey-Glass,
against its delay of 17), and tests/test_new_tasks.py checks each against an integration at a finer step.
"""

import numpy as np


def mackey_glass(steps: int, step: float, tau: float, beta: float, gamma: float, power: int,
                 initial: float) -> np.ndarray:
    """x(t) at t = 0, step, ..., (steps - 1) * step for dx/dt = beta x(t - tau) / (1 + x(t - tau)^power)
    - gamma x(t), with the constant history x(t) = initial for t <= 0.

    RK4 for a delay equation: the stages at t + step / 2 need x(t + step / 2 - tau), between two stored points,
    and take their mean (linear interpolation, second order, as in the reservoir-computing benchmarks that
    integrate this equation with RK4). tau must be a whole number of steps, so the delayed points are stored
    values (the caller checks it)."""
    lag = int(round(tau / step))
    x = np.empty(steps + lag)
    x[:lag + 1] = initial  # the history, then x(0)

    def rate(now: float, delayed: float) -> float:
        raised = 1.0
        for _ in range(power):  # repeated products, not pow(): libm's pow may pick per-CPU code paths
            raised *= delayed
        return beta * delayed / (1.0 + raised) - gamma * now

    for i in range(lag, steps + lag - 1):
        d0, d1 = x[i - lag], x[i - lag + 1]
        dh = 0.5 * (d0 + d1)
        k1 = rate(x[i], d0)
        k2 = rate(x[i] + 0.5 * step * k1, dh)
        k3 = rate(x[i] + 0.5 * step * k2, dh)
        k4 = rate(x[i] + step * k3, d1)
        x[i + 1] = x[i] + step / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return x[lag:]


def lorenz(steps: int, step: float, sigma: float, rho: float, beta: float, initial: np.ndarray) -> np.ndarray:
    """(x, y, z) at t = 0, step, ..., (steps - 1) * step of the Lorenz-63 system, by RK4: (steps, 3)."""
    def rate(s: np.ndarray) -> np.ndarray:
        x, y, z = s
        return np.array([sigma * (y - x), x * (rho - z) - y, x * y - beta * z])

    out = np.empty((steps, 3))
    s = np.asarray(initial, dtype=np.float64).copy()
    for i in range(steps):
        out[i] = s
        k1 = rate(s)
        k2 = rate(s + 0.5 * step * k1)
        k3 = rate(s + 0.5 * step * k2)
        k4 = rate(s + step * k3)
        s = s + step / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return out
