"""Dataset generators, one per `kind`, each faithful to the reference notebook it comes from.

A generator is a pure function `(spec, name, rng) -> Dataset`; its spec is a frozen dataclass whose fields are
exactly the keys allowed under `data.<name>` in params.yaml. Register a new kind with `@KINDS.register`.
"""

import dataclasses
import math
from pathlib import Path

import numpy as np

from pipeline.data import dynamics, user_data
from pipeline.files.datasets import (Dataset, first_windows, make_dataset, random_split_index, real_steps,
                                     sliding_windows)
from pipeline.errors import DataError
from pipeline.registry import Registry
from pipeline.schema import fail, setting


@dataclasses.dataclass(frozen=True)
class Kind:
    spec: type
    generate: object  # Callable[[spec, str, np.random.Generator], Dataset]
    rolls_out: bool = True  # its target is the next value, so a model can be fed its own predictions
    repeats_inputs: bool = True  # its target has the inputs' features, so persistence (the last value) is defined
    chaotic: bool = False  # a long rollout's error saturates whatever the model: compare how long it stays valid


KINDS: Registry[Kind] = Registry("dataset kind")


def kind(name: str, spec: type, rolls_out: bool = True, repeats_inputs: bool = True, chaotic: bool = False):
    def add(generate):
        KINDS.register(name)(Kind(spec, generate, rolls_out, repeats_inputs, chaotic))
        return generate

    return add


def _held_out(rng: np.random.Generator, sequences: np.ndarray, n_val: int, n_test: int) -> dict[str, np.ndarray]:
    """Shuffle whole sequences once and cut them into train/val/test: no sequence is in two splits."""
    order = rng.permutation(len(sequences))
    return {"val": sequences[order[:n_val]], "test": sequences[order[n_val:n_val + n_test]],
            "train": sequences[order[n_val + n_test:]]}


def _next_value_splits(parts: dict[str, np.ndarray], length: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each sequence's first `length` points are the input window, the next point the target."""
    return {s: (seqs[:, :length], seqs[:, length]) for s, seqs in parts.items()}


WINDOWS = ("first", "all")


def _sequence_splits(parts: dict[str, np.ndarray], length: int, windows: str
                     ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The (window -> next value) examples of each split, and the training and validation sequences with the
    starts of their windows (the free-running objective's examples).

    `first`: each sequence's first `length` values predict the next, as the seeds do; a rollout then asks for
    positions (phases, magnitudes) no training window showed. `all`: every window of each training and
    validation sequence, over all its `length + rollout_steps` values, so training covers every position a
    rollout visits. Test examples are always the first window, where the rollout starts."""
    splits = _next_value_splits(parts, length)
    starts = {s: first_windows(len(parts[s])) for s in ("train", "val")}
    if windows == "all":
        for s in ("train", "val"):
            count, total = parts[s].shape[:2]
            offsets = np.arange(total - length)
            starts[s] = np.stack(np.meshgrid(np.arange(count), offsets, indexing="ij"), axis=-1).reshape(-1, 2)
            index = starts[s][:, 1:] + np.arange(length + 1)[None, :]
            cut = parts[s][starts[s][:, :1], index]  # (count * offsets, length + 1, F)
            splits[s] = (cut[:, :length], cut[:, length])
    return splits, {s: (parts[s], starts[s]) for s in ("train", "val")}


# --- sine: seed 002 (and 004) -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SineSpec:
    """sin(frequency * t) sampled every dt; train on t < train_until, extrapolate up to extrapolate_until."""

    dt: float = setting(0.1, gt=0)
    frequency: float = setting(1.0, gt=0)
    train_until: float = setting(75.0, gt=0)
    extrapolate_until: float = setting(175.0, gt=0)
    window: int = setting(15, ge=1)
    val_fraction: float = setting(0.2, gt=0, lt=1)
    noise: float = setting(0.0, ge=0)

    def check(self, key: str) -> None:
        if self.extrapolate_until <= self.train_until:
            fail(f"{key}.extrapolate_until", f"must be > train_until ({self.train_until}), "
                 f"got {self.extrapolate_until}")
        n_train = round(self.train_until / self.dt)
        if n_train < self.window + 2:
            fail(f"{key}.window", f"must leave at least 2 training windows in {n_train} points "
                 f"(train_until / dt), got {self.window}")
        if round((self.extrapolate_until - self.train_until) / self.dt) <= self.window:
            fail(f"{key}.extrapolate_until", f"must give more than window ({self.window}) points after "
                 "train_until for the test windows")


@kind("sine", SineSpec)
def sine(spec: SineSpec, name: str, rng: np.random.Generator) -> Dataset:
    """Windows of the training part (a seeded random val split); test windows and the rollout target are the
    continuation t in [train_until, extrapolate_until), never seen in training. The rollout starts from the
    last training window, as seed 002 extrapolates from its last window (1000 steps with the defaults)."""
    n_train = round(spec.train_until / spec.dt)
    n_ext = round((spec.extrapolate_until - spec.train_until) / spec.dt)
    t = spec.dt * np.arange(n_train + n_ext)  # integer steps avoid arange's float drift
    series = np.sin(spec.frequency * t)[:, None]
    if spec.noise:
        series = series + spec.noise * rng.standard_normal(series.shape)
    train_part, ext_part = series[:n_train], series[n_train:]
    x, y = sliding_windows(train_part, spec.window)
    keep, out = random_split_index(len(x), spec.val_fraction, rng)
    test = sliding_windows(ext_part, spec.window)
    rollout = (train_part[None, -spec.window:], ext_part[None])
    # Every window starts at its own index of the training part, which holds both splits' continuations.
    starts = {s: np.stack([np.zeros_like(i), i], axis=1) for s, i in (("train", keep), ("val", out))}
    sequences = {s: (train_part[None], starts[s]) for s in ("train", "val")}
    splits = {"train": (x[keep], y[keep]), "val": (x[out], y[out]), "test": test}
    return make_dataset(name, "sine", ["sin(t)"], splits, rollout, sequences=sequences,
                        time_step=spec.dt, time_label="t")


# --- sincos: seed 000 ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SincosSpec:
    """Sums of w*sin(f*t) + w*cos(f*t) over n_terms random (f, w), drawn once per dataset; each sequence
    starts at a random phase t0 in [0, 2) and covers 2*pi in `length` steps, as in seed 000."""

    n_train: int = setting(300, ge=1)
    n_val: int = setting(50, ge=1)
    n_test: int = setting(50, ge=1)
    length: int = setting(20, ge=2)
    n_terms: int = setting(4, ge=1)
    frequency_range: tuple[float, ...] = setting((0.5, 2.5), gt=0)
    weight_range: tuple[float, ...] = setting((0.5, 2.0))
    rollout_steps: int = setting(40, ge=1)
    windows: str = setting("first", choices=WINDOWS)  # training windows: each sequence's first, or all

    def check(self, key: str) -> None:
        for field in ("frequency_range", "weight_range"):
            low_high = getattr(self, field)
            if len(low_high) != 2 or low_high[0] > low_high[1]:
                fail(f"{key}.{field}", f"must be [low, high] with low <= high, got {list(low_high)}")


@kind("sincos", SincosSpec)
def sincos(spec: SincosSpec, name: str, rng: np.random.Generator) -> Dataset:
    frequencies = rng.uniform(*spec.frequency_range, size=spec.n_terms)
    weights = rng.uniform(*spec.weight_range, size=spec.n_terms)
    n = spec.n_train + spec.n_val + spec.n_test
    t0 = rng.random(n) * 2
    steps = np.arange(spec.length + spec.rollout_steps) * (2 * math.pi / spec.length)
    t = t0[:, None] + steps[None, :]  # (n, length + rollout_steps)
    values = (weights * (np.sin(t[..., None] * frequencies) + np.cos(t[..., None] * frequencies))).sum(-1)
    parts = _held_out(rng, values[..., None], spec.n_val, spec.n_test)
    test = parts["test"]
    rollout = (test[:, :spec.length], test[:, spec.length:])
    splits, sequences = _sequence_splits(parts, spec.length, spec.windows)
    return make_dataset(name, "sincos", ["value"], splits, rollout, sequences=sequences)


# --- ramp and trajectory: seed 001 ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RampSpec:
    """k * s for k = k0, k0 + 1, ... with s ~ N(0, 1) and k0 uniform in 0..max_start per sequence; predict the
    next value from `length` values. Seed 001 always starts at k0 = 0 (max_start 0), so a rollout past k = length
    asks every model for positions it never saw."""

    max_start: int = setting(0, ge=0)
    n_train: int = setting(1000, ge=1)
    n_val: int = setting(100, ge=1)
    n_test: int = setting(200, ge=1)
    length: int = setting(5, ge=2)
    rollout_steps: int = setting(10, ge=1)
    windows: str = setting("first", choices=WINDOWS)  # training windows: each sequence's first, or all


@kind("ramp", RampSpec)
def ramp(spec: RampSpec, name: str, rng: np.random.Generator) -> Dataset:
    n = spec.n_train + spec.n_val + spec.n_test
    k = rng.integers(0, spec.max_start + 1, size=(n, 1)) + np.arange(spec.length + spec.rollout_steps)
    values = (k * rng.standard_normal((n, 1)))[..., None]
    parts = _held_out(rng, values, spec.n_val, spec.n_test)
    rollout = (parts["test"][:, :spec.length], parts["test"][:, spec.length:])
    splits, sequences = _sequence_splits(parts, spec.length, spec.windows)
    return make_dataset(name, "ramp", ["value"], splits, rollout, sequences=sequences)


@dataclasses.dataclass(frozen=True)
class TrajectorySpec:
    """2-D points (x, a*x + b) at x = x0, x0 + 1, ... with a ~ N(0, 1), b ~ intercept_scale * N(0, 1) and x0
    uniform in 0..max_start (seed 001: always 0)."""

    max_start: int = setting(0, ge=0)
    n_train: int = setting(1000, ge=1)
    n_val: int = setting(100, ge=1)
    n_test: int = setting(200, ge=1)
    length: int = setting(5, ge=2)
    intercept_scale: float = setting(5.0, ge=0)
    rollout_steps: int = setting(10, ge=1)
    windows: str = setting("first", choices=WINDOWS)  # training windows: each sequence's first, or all


@kind("trajectory", TrajectorySpec)
def trajectory(spec: TrajectorySpec, name: str, rng: np.random.Generator) -> Dataset:
    n = spec.n_train + spec.n_val + spec.n_test
    x = (rng.integers(0, spec.max_start + 1, size=(n, 1)) + np.arange(spec.length + spec.rollout_steps)).astype(float)
    a = rng.standard_normal((n, 1))
    b = rng.standard_normal((n, 1)) * spec.intercept_scale
    values = np.stack([x, a * x + b], axis=-1)  # (n, L, 2)
    parts = _held_out(rng, values, spec.n_val, spec.n_test)
    rollout = (parts["test"][:, :spec.length], parts["test"][:, spec.length:])
    splits, sequences = _sequence_splits(parts, spec.length, spec.windows)
    return make_dataset(name, "trajectory", ["x", "y"], splits, rollout, sequences=sequences)


# --- memory: seed 001's "limits of RNNs" ---------------------------------------------------------------------

class _Lengths:
    """For a spec whose `length` is an int or a range [min, max] (memory, adding)."""

    length: int | tuple[int, ...]

    @property
    def shortest(self) -> int:
        return self.length[0] if isinstance(self.length, tuple) else self.length

    @property
    def longest(self) -> int:
        return self.length[-1] if isinstance(self.length, tuple) else self.length


def _split_rows(rng: np.random.Generator, n: int, n_val: int, n_test: int) -> dict[str, np.ndarray]:
    """A random permutation of n sequences cut into val, test and train rows (in that order of the draw)."""
    order = rng.permutation(n)
    return {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}


@dataclasses.dataclass(frozen=True)
class MemorySpec(_Lengths):
    """`length` N(0, 1) values; the target is x[lag] + x[-1]. Not autoregressive, so no rollout.

    `length` is an int (every sequence that long) or a range [min, max]: each sequence's length is drawn
    uniformly in it (inclusive), so that a model must find each sequence's own end (seed 003's padded and packed
    batches). A non-negative lag then counts from each sequence's start, a negative one from its own end."""

    lag: int = setting(-5)
    length: int | tuple[int, ...] = setting(100)
    n_train: int = setting(1000, ge=1)
    n_val: int = setting(100, ge=1)
    n_test: int = setting(200, ge=1)

    def check(self, key: str) -> None:
        if isinstance(self.length, tuple):
            if len(self.length) != 2:
                fail(f"{key}.length", f"must be one integer or a range [min, max] of two, got {list(self.length)}")
            if self.length[0] < 1:
                fail(f"{key}.length", f"must have min >= 1 in [min, max], got {list(self.length)}")
            if self.length[0] > self.length[1]:
                fail(f"{key}.length", f"must be [min, max] with min <= max, got {list(self.length)}")
        elif self.length < 2:
            fail(f"{key}.length", f"must be >= 2, got {self.length}")
        if not -self.shortest <= self.lag < self.shortest:
            what = (f"the shortest sequence (length {self.shortest})" if isinstance(self.length, tuple)
                    else f"a sequence of length {self.length}")
            fail(f"{key}.lag", f"must index {what} ({-self.shortest}..{self.shortest - 1}), got {self.lag}")


@kind("memory", MemorySpec, rolls_out=False)
def memory(spec: MemorySpec, name: str, rng: np.random.Generator) -> Dataset:
    n = spec.n_train + spec.n_val + spec.n_test
    x = rng.standard_normal((n, spec.longest, 1))
    cut = _split_rows(rng, n, spec.n_val, spec.n_test)
    if not isinstance(spec.length, tuple):
        y = x[:, spec.lag] + x[:, -1]
        return make_dataset(name, "memory", ["value"], {s: (x[i], y[i]) for s, i in cut.items()}, None)
    # Drawn after every draw of the fixed-length kind, so that an int length gives the same data as before.
    lengths = rng.integers(spec.length[0], spec.length[1] + 1, size=n)
    x[~real_steps(lengths, spec.longest)] = 0.0  # right-padded with zeros
    rows = np.arange(n)
    lag = spec.lag if spec.lag >= 0 else lengths + spec.lag
    y = x[rows, lag] + x[rows, lengths - 1]
    return make_dataset(name, "memory", ["value"], {s: (x[i], y[i]) for s, i in cut.items()}, None,
                        lengths={s: lengths[i] for s, i in cut.items()})


# --- mackey_glass and lorenz: the chaotic series of the forecasting literature ----------------------------------

def _time_ordered(series: np.ndarray, window: int, val_fraction: float, test_fraction: float, rollout_steps: int
                  ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray],
                             dict[str, tuple[np.ndarray, np.ndarray]]]:
    """One long (L, F) series cut in time order into train, val and test parts: a window belongs to the split
    its target lies in (so val and test windows start in the part before, as a forecaster's would); the rollout
    starts at the test part's first value, from the window before it, for `rollout_steps` values; the
    free-running objective's sequences are the training part (train) and the training and validation parts (val),
    with each window's start."""
    n = len(series)
    n_test, n_val = math.floor(n * test_fraction), math.floor(n * val_fraction)
    train_end, val_end = n - n_val - n_test, n - n_test
    x, y = sliding_windows(series, window)
    target = np.arange(window, n)
    inside = {"train": target < train_end, "val": (target >= train_end) & (target < val_end), "test": target >= val_end}
    splits = {s: (x[mask], y[mask]) for s, mask in inside.items()}
    rollout = (series[None, val_end - window:val_end], series[None, val_end:val_end + rollout_steps])
    sequences = {s: (series[None, :end], np.stack([np.zeros(int(inside[s].sum()), dtype=np.int64),
                                                    target[inside[s]] - window], axis=1))
                 for s, end in (("train", train_end), ("val", val_end))}
    return splits, rollout, sequences


def _check_time_ordered(spec, key: str, samples: int) -> None:
    """The parts of a time-ordered series must hold training windows and the test part the rollout."""
    if spec.val_fraction + spec.test_fraction >= 1:
        fail(f"{key}.test_fraction", f"plus val_fraction must be < 1, got {spec.val_fraction} + {spec.test_fraction}")
    n_test, n_val = math.floor(samples * spec.test_fraction), math.floor(samples * spec.val_fraction)
    if samples - n_val - n_test < spec.window + 2 or n_val < 1:
        fail(f"{key}.samples", f"must leave at least window + 2 ({spec.window + 2}) training values and one "
             f"validation value, got {samples}")
    if n_test < spec.rollout_steps:
        fail(f"{key}.rollout_steps", f"must fit in the test part ({n_test} values: samples x test_fraction), got "
             f"{spec.rollout_steps}")


@dataclasses.dataclass(frozen=True)
class MackeyGlassSpec:
    """The Mackey-Glass delay equation dx/dt = beta x(t - tau) / (1 + x(t - tau)^power) - gamma x(t), chaotic at
    tau 17 with beta 0.2, gamma 0.1, power 10 (Mackey & Glass 1977; the forecasting benchmark of Farmer &
    Sidorowich 1987 and of Jaeger & Haas 2004, who integrate from x = 1.2). RK4 at `step` (dynamics.py), the
    first `transient` time units dropped, then `samples` values every `sample_every` time units, cut in time
    order into train, val and test; the rollout runs `rollout_steps` from the start of the test part."""

    tau: float = setting(17.0, gt=0)
    beta: float = setting(0.2, gt=0)
    gamma: float = setting(0.1, gt=0)
    power: int = setting(10, ge=1)
    initial: float = setting(1.2, gt=0)
    step: float = setting(0.1, gt=0)
    transient: float = setting(500.0, ge=0)
    sample_every: float = setting(1.0, gt=0)
    samples: int = setting(3000, ge=1)
    window: int = setting(18, ge=1)
    val_fraction: float = setting(0.15, gt=0, lt=1)
    test_fraction: float = setting(0.2, gt=0, lt=1)
    rollout_steps: int = setting(500, ge=1)

    def check(self, key: str) -> None:
        for name in ("tau", "sample_every", "transient"):
            value = getattr(self, name)
            if abs(value / self.step - round(value / self.step)) > 1e-9:
                fail(f"{key}.{name}", f"must be a whole number of integration steps (step {self.step}), got {value}")
        _check_time_ordered(self, key, self.samples)


@kind("mackey_glass", MackeyGlassSpec, chaotic=True)
def mackey_glass(spec: MackeyGlassSpec, name: str, rng: np.random.Generator) -> Dataset:
    every = int(round(spec.sample_every / spec.step))
    skip = int(round(spec.transient / spec.step))
    x = dynamics.mackey_glass(skip + every * (spec.samples - 1) + 1, spec.step, spec.tau, spec.beta, spec.gamma,
                              spec.power, spec.initial)
    series = x[skip::every][:spec.samples, None]
    splits, rollout, sequences = _time_ordered(series, spec.window, spec.val_fraction, spec.test_fraction,
                                               spec.rollout_steps)
    return make_dataset(name, "mackey_glass", ["x"], splits, rollout, sequences=sequences,
                        time_step=spec.sample_every, time_label="t")


LORENZ_LYAPUNOV = 0.906  # the largest Lyapunov exponent at sigma 10, rho 28, beta 8/3 (Sprott 2003: 0.9056)


@dataclasses.dataclass(frozen=True)
class LorenzSpec:
    """The Lorenz-63 system at its classic parameters (Lorenz 1963: sigma 10, rho 28, beta 8/3), its three
    columns modelled jointly. RK4 at `step` from (1, 1, 1), the first `transient` time units dropped, then
    `samples` values every `sample_every` (0.02, as Pathak et al. 2018 sample it), cut in time order; the
    rollout runs `rollout_steps` from the start of the test part, and its valid horizon is also counted in
    Lyapunov times (steps x sample_every x 0.906)."""

    sigma: float = setting(10.0, gt=0)
    rho: float = setting(28.0, gt=0)
    beta: float = setting(8.0 / 3.0, gt=0)
    step: float = setting(0.01, gt=0)
    transient: float = setting(50.0, ge=0)
    sample_every: float = setting(0.02, gt=0)
    samples: int = setting(6000, ge=1)
    window: int = setting(10, ge=1)
    val_fraction: float = setting(0.15, gt=0, lt=1)
    test_fraction: float = setting(0.15, gt=0, lt=1)
    rollout_steps: int = setting(500, ge=1)

    def check(self, key: str) -> None:
        for name in ("sample_every", "transient"):
            value = getattr(self, name)
            if abs(value / self.step - round(value / self.step)) > 1e-9:
                fail(f"{key}.{name}", f"must be a whole number of integration steps (step {self.step}), got {value}")
        _check_time_ordered(self, key, self.samples)


@kind("lorenz", LorenzSpec, chaotic=True)
def lorenz(spec: LorenzSpec, name: str, rng: np.random.Generator) -> Dataset:
    every = int(round(spec.sample_every / spec.step))
    skip = int(round(spec.transient / spec.step))
    states = dynamics.lorenz(skip + every * (spec.samples - 1) + 1, spec.step, spec.sigma, spec.rho, spec.beta,
                             np.ones(3))
    series = states[skip::every][:spec.samples]
    splits, rollout, sequences = _time_ordered(series, spec.window, spec.val_fraction, spec.test_fraction,
                                               spec.rollout_steps)
    lyapunov = LORENZ_LYAPUNOV if (spec.sigma, spec.rho, spec.beta) == (10.0, 28.0, 8.0 / 3.0) else None
    return make_dataset(name, "lorenz", ["x", "y", "z"], splits, rollout, sequences=sequences,
                        time_step=spec.sample_every, time_label="t",
                        extra_meta={"lyapunov_exponent": lyapunov} if lyapunov else None)


# --- adding: Hochreiter & Schmidhuber 1997 ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AddingSpec(_Lengths):
    """The adding problem (Hochreiter & Schmidhuber 1997, experiment 4; Le et al. 2015; Arjovsky et al. 2016):
    two input channels, values U(0, 1) and a marker that is 1 at exactly two steps, one in each half of the
    sequence, 0 elsewhere; the target is the sum of the two marked values. Predicting the mean (1) costs MSE
    1/6 (the variance of a sum of two U(0, 1)); "solved" is MSE below about 0.01. Not autoregressive (no
    rollout). `length` is an int or a range [min, max] of lengths drawn per sequence, as for `memory`; the
    markers then lie in the halves of each sequence's own length."""

    length: int | tuple[int, ...] = setting(50)
    n_train: int = setting(5000, ge=1)
    n_val: int = setting(500, ge=1)
    n_test: int = setting(1000, ge=1)

    def check(self, key: str) -> None:
        if isinstance(self.length, tuple):
            if len(self.length) != 2 or self.length[0] > self.length[1]:
                fail(f"{key}.length", f"must be one integer or a range [min, max] with min <= max, got "
                     f"{list(self.length)}")
        if self.shortest < 2:
            fail(f"{key}.length", f"must be >= 2 (one marker in each half of the sequence), got "
                 f"{list(self.length) if isinstance(self.length, tuple) else self.length}")


@kind("adding", AddingSpec, rolls_out=False, repeats_inputs=False)
def adding(spec: AddingSpec, name: str, rng: np.random.Generator) -> Dataset:
    n = spec.n_train + spec.n_val + spec.n_test
    lengths = (np.full(n, spec.length) if not isinstance(spec.length, tuple)
               else rng.integers(spec.length[0], spec.length[1] + 1, size=n))
    values = rng.random((n, spec.longest))
    half = lengths // 2
    first = np.floor(rng.random(n) * half).astype(np.int64)  # in [0, half)
    second = half + np.floor(rng.random(n) * (lengths - half)).astype(np.int64)  # in [half, length)
    rows = np.arange(n)
    markers = np.zeros((n, spec.longest))
    markers[rows, first] = markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1)
    x[~real_steps(lengths, spec.longest)] = 0.0  # right-padded with zeros
    y = (values[rows, first] + values[rows, second])[:, None]
    cut = _split_rows(rng, n, spec.n_val, spec.n_test)
    variable = isinstance(spec.length, tuple)
    return make_dataset(name, "adding", ["value", "marker"], {s: (x[i], y[i]) for s, i in cut.items()}, None,
                        lengths={s: lengths[i] for s, i in cut.items()} if variable else None)


# --- csv: a user's own series (seed 003's real-world data) -----------------------------------------------------

SCALINGS = ("global", "per_series")


@dataclasses.dataclass(frozen=True)
class CsvSpec:
    """A user's CSV file (pipeline/user_data.py reads it): `column` or `columns`, optionally many series in long
    format (`id_column`) ordered by `time_column`, with gaps handled as `missing` says.

    Each series is split in time order: train, then val, then test, by the same fractions. A window belongs to
    the split its target lies in and never crosses two series. The rollout is a rolling-origin backtest: origins
    every `stride` steps through each series' test part, each forecasting `rollout_steps` values from the window
    before it; `stride` 0 is one origin per series at the start of its test part (and `rollout_steps` 0 the
    whole of the shortest test part)."""

    path: str = setting()
    column: str | None = setting(None)
    columns: tuple[str, ...] | None = setting(None)
    id_column: str | None = setting(None)
    time_column: str | None = setting(None)
    missing: str = setting("error", choices=user_data.MISSING)
    scaling: str = setting("global", choices=SCALINGS)
    window: int = setting(20, ge=1)
    val_fraction: float = setting(0.15, gt=0, lt=1)
    test_fraction: float = setting(0.15, gt=0, lt=1)
    rollout_steps: int = setting(0, ge=0)
    stride: int = setting(0, ge=0)

    def check(self, key: str) -> None:
        if self.val_fraction + self.test_fraction >= 1:
            fail(f"{key}.test_fraction", f"plus val_fraction must be < 1, got "
                 f"{self.val_fraction} + {self.test_fraction}")
        if not Path(self.path).resolve().is_relative_to(Path("data/raw").resolve()):
            fail(f"{key}.path", f"must be a file under data/raw/ (the folder DVC watches for this stage), "
                 f"got '{self.path}'")
        if (self.column is None) == (self.columns is None):
            fail(f"{key}.column", "or columns (a list, modelled jointly) must be given, not both"
                 if self.column else "is missing: name the value column (or list several under columns)")
        values = self.value_columns
        if len(values) == 0 or len(set(values)) != len(values):
            fail(f"{key}.columns", f"must list distinct column names, got {list(values)}")
        for other in ("id_column", "time_column"):
            if getattr(self, other) in values:
                fail(f"{key}.{other}", f"'{getattr(self, other)}' is also a value column; name another column")
        if self.stride and not self.rollout_steps:
            fail(f"{key}.rollout_steps", f"must be > 0 with stride {self.stride}: it is each origin's horizon")

    @property
    def value_columns(self) -> tuple[str, ...]:
        return (self.column,) if self.column is not None else tuple(self.columns or ())

    def layout(self, name: str) -> user_data.Layout:
        return user_data.Layout(self.value_columns, f"data.{name}", "column" if self.column else "columns",
                                self.id_column, self.time_column, self.missing)


@dataclasses.dataclass(frozen=True)
class _Cut:
    """Where one series' parts end: values [0, train) train, [train, val) validation, [val, end) test."""

    train: int
    val: int
    end: int


def _cut(spec: CsvSpec, name: str, series: user_data.Series, multi: bool) -> _Cut:
    n = len(series.values)
    n_test = math.floor(n * spec.test_fraction)
    n_val = math.floor(n * spec.val_fraction)
    n_train = n - n_val - n_test
    if n_train < spec.window + 2 or n_val < 1 or n_test < 1:
        who = f"series '{series.name}'" if multi else f"column '{', '.join(spec.value_columns)}'"
        raise DataError(f"{spec.path}: {who} has {n} values, too few for window {spec.window} with these "
                        f"fractions (train part {n_train} needs >= {spec.window + 2}, val {n_val} and test "
                        f"{n_test} need >= 1); use a longer series or a smaller data.{name}.window")
    return _Cut(n_train, n_train + n_val, n)


def _origins(spec: CsvSpec, name: str, table: user_data.Table, cuts: list[_Cut]) -> tuple[int, list[np.ndarray]]:
    """The backtest's horizon and each series' origins (positions of the first forecast value)."""
    shortest = min(c.end - c.val for c in cuts)
    steps = spec.rollout_steps or shortest
    for series, c in zip(table.series, cuts):
        if c.end - c.val < steps:
            who = f" of series '{series.name}'" if len(cuts) > 1 else ""
            raise DataError(f"data.{name}.rollout_steps is {steps} but the test part{who} has only "
                            f"{c.end - c.val} values")
    if spec.stride == 0:
        return steps, [np.array([c.val]) for c in cuts]
    return steps, [np.arange(c.val, c.end - steps + 1, spec.stride) for c in cuts]


def _padded(parts: list[np.ndarray]) -> np.ndarray:
    """Series of different lengths as one (S, L, F) array, NaN after each one's end."""
    out = np.full((len(parts), max(len(p) for p in parts), parts[0].shape[1]), np.nan)
    for i, part in enumerate(parts):
        out[i, :len(part)] = part
    return out


def _naive_mae(values: np.ndarray) -> np.ndarray:
    """The in-sample one-step naive forecast's mean absolute error per feature: MASE's scale (M4, m = 1)."""
    return np.mean(np.abs(np.diff(values, axis=0)), axis=0)


@kind("csv", CsvSpec)
def csv_series(spec: CsvSpec, name: str, rng: np.random.Generator) -> Dataset:
    table = user_data.read(Path(spec.path), spec.layout(name))
    multi = spec.id_column is not None
    cuts = [_cut(spec, name, s, multi) for s in table.series]
    steps, origins = _origins(spec, name, table, cuts)
    window = spec.window
    examples = {split: ([], [], []) for split in ("train", "val", "test")}
    starts = {"train": [], "val": []}
    for i, (series, c) in enumerate(zip(table.series, cuts)):
        x, y = sliding_windows(series.values, window)
        target = np.arange(window, c.end)
        for split, inside in (("train", target < c.train), ("val", (target >= c.train) & (target < c.val)),
                              ("test", target >= c.val)):
            examples[split][0].append(x[inside])
            examples[split][1].append(y[inside])
            examples[split][2].append(np.full(int(inside.sum()), i))
            if split != "test":  # a training window's continuation stays in the training part, a validation
                starts[split].append(np.stack([np.full(int(inside.sum()), i), target[inside] - window], axis=1))
    splits = {s: (np.concatenate(xs), np.concatenate(ys)) for s, (xs, ys, _) in examples.items()}
    # The free-running objective's sequences: each series' training part, and its training + validation part.
    sequences = {"train": (_padded([s.values[:c.train] for s, c in zip(table.series, cuts)]),
                           np.concatenate(starts["train"])),
                 "val": (_padded([s.values[:c.val] for s, c in zip(table.series, cuts)]),
                         np.concatenate(starts["val"]))}
    context = [s.values[o - window:o] for s, os in zip(table.series, origins) for o in os]
    target = [s.values[o:o + steps] for s, os in zip(table.series, origins) for o in os]
    series_rows = {s: np.concatenate(rows) for s, (_, _, rows) in examples.items()}
    series_rows["rollout"] = np.concatenate([np.full(len(os), i) for i, os in enumerate(origins)])
    train_parts = [s.values[:c.train] for s, c in zip(table.series, cuts)]
    extra = {"series": [s.name for s in table.series], "scaling": spec.scaling, "backtest_stride": spec.stride,
             "naive_mae": [[float(v) for v in _naive_mae(p)] for p in train_parts],
             "filled_cells": table.filled, "dropped_rows": table.dropped, "notes": list(table.notes)}
    if spec.scaling == "per_series":
        std = [np.where(p.std(axis=0) > 1e-12, p.std(axis=0), 1.0) for p in train_parts]
        extra.update(series_mean=[[float(v) for v in p.mean(axis=0)] for p in train_parts],
                     series_std=[[float(v) for v in s] for s in std])
    return make_dataset(name, "csv", list(spec.value_columns), splits, (np.stack(context), np.stack(target)),
                        sequences=sequences, series=series_rows, rollout_origin=np.concatenate(origins),
                        extra_meta=extra)
