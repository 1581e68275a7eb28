"""The reference notebooks' training loops, re-run on the pipeline's own datasets, beside the pipeline itself.

Each experiment keeps its notebook's model class, optimiser, learning rate, epochs and batch handling (per-sample
updates in 000, the whole training split as one batch in 001, shuffled mini-batches in 002, in-order mini-batches
in 004), so its time is what the notebook would take. Only the bugs the pipeline also fixes are fixed: 002 clips
gradients (it says so but never did), 004 builds its state on the model's device, 000 predicts from its learned
h0. Code that changes no weight (loss prints, 002's per-epoch validation plot) is left out.

Both sides train on the same generated dataset, the notebooks on raw values as they do, the pipeline on scaled
ones, and both are scored by the pipeline's own metric (test MSE in original units), so the numbers compare.
Only the training loop is timed, with torch pinned to one CPU thread on both sides.
"""

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.timing import timed
from pipeline.stages import evaluate as evaluation
from pipeline.stages import generate
from pipeline.files import checkpoints, datasets
from pipeline.learning import fitting, models
from pipeline.learning.replicas import ReplicaStack
from pipeline.files.artifacts import Paths
from pipeline.params import Params, parse
from pipeline.learning.runtime import configure, resolve_device
from pipeline.analysis import scoring

ROOT = Path(__file__).resolve().parents[1]
THREADS = 1
DEVICE = "cpu"  # the notebooks ran on the CPU; the pipeline runs there too so that the timings compare

# Seed 004's series as the README's "Adding an experiment" maps it: sin(2 * 3.14 / 40 * t) at t = 0, 1, ...,
# windows of 10, the last 40 points held out.
SINE_004 = {"kind": "sine", "dt": 1.0, "frequency": 0.157, "train_until": 760.0, "extrapolate_until": 800.0,
            "window": 10, "val_fraction": 0.2, "noise": 0.0}

QUICK_EPOCHS = 2
QUICK_SIZES = {  # the test suite's tiny profile, plus seed 004's series
    "sine": {"train_until": 20.0, "extrapolate_until": 30.0},
    "sine_004": {"train_until": 60.0, "extrapolate_until": 80.0},
    # windows: all gives each sincos, ramp and trajectory sequence rollout_steps (10) windows
    "sincos": {"n_train": 4, "n_val": 2, "n_test": 10, "rollout_steps": 10},
    "ramp": {"n_train": 6, "n_val": 2, "n_test": 10},
    "trajectory": {"n_train": 6, "n_val": 2, "n_test": 10},
    "memory_short": {"length": 12, "n_train": 60, "n_val": 10, "n_test": 10},
    "memory_long": {"length": 12, "n_train": 60, "n_val": 10, "n_test": 10},
}


def benchmark_params(quick: bool) -> Params:
    """The project's params.yaml plus seed 004's dataset, on the CPU with one thread; quick: tiny data, 2 epochs.

    The data seed stays params.yaml's, so the datasets are the ones `dvc repro` generates; runs change only the
    training seed. One replica: each notebook run is set against one training run."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["sine_004"] = dict(SINE_004)
    raw["train"]["replicas"] = 1
    raw.update(device=DEVICE, threads=THREADS)
    if quick:
        for name, sizes in QUICK_SIZES.items():
            raw["data"][name].update(sizes)
        raw["train"]["epochs"] = QUICK_EPOCHS
        for entry in raw["data"].values():  # a dataset's own training settings, at the quick size too
            if "train" in entry:
                entry["train"]["epochs"] = QUICK_EPOCHS
    return parse(raw)


# --- the notebooks' models --------------------------------------------------------------------------------------
# Each has `predict_next(x)`: (B, T, F) windows -> (B, F_out), every window from a fresh state, as the pipeline's
# models do, so that scoring and the rollout treat both sides alike.

class SimpleRNN(nn.Module):
    """Seed 000: separate Wxh, Whh (both with bias) and Why, a learnable h0, called once per time step."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.h0 = nn.Parameter(torch.rand([1, hidden]))
        self.Wxh = nn.Linear(n_in, hidden)
        self.Whh = nn.Linear(hidden, hidden)
        self.Why = nn.Linear(hidden, n_out)
        self.tanh = nn.Tanh()

    def forward(self, x: torch.Tensor, h_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h_t = self.tanh(self.Wxh(x) + self.Whh(h_prev))
        return self.Why(h_t), h_t

    def predict_next(self, x: torch.Tensor) -> torch.Tensor:
        """From the learned h0 it trained from (000 predicted from zeros instead)."""
        h = self.h0.expand(len(x), -1)
        for t in range(x.shape[1]):
            y, h = self(x[:, t], h)
        return y


class Model2D(nn.Module):
    """Seed 001's hand-written cell (`Model` for one feature, `Model2D` for two): h = tanh(W_in x + b + W_rec h)
    from a zero state, a linear head on the last state."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.num_neurons = hidden
        self.input_weights = nn.Linear(n_in, hidden)
        self.recurrent_weights = nn.Linear(hidden, hidden, bias=False)
        self.fc = nn.Linear(hidden, n_out)

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        output = xs.new_zeros(len(xs), self.num_neurons)
        for i in range(xs.shape[1]):
            output = torch.tanh(self.input_weights(xs[:, i]) + self.recurrent_weights(output))
        return self.fc(output)

    def predict_next(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)


class Model2DStd(nn.Module):
    """Seed 001's torch.nn.RNN from a zero state, a linear head on the last state."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.hidden_size = hidden
        self.rnn = nn.RNN(n_in, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, n_out)

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        h0 = torch.zeros(1, len(xs), self.hidden_size, device=xs.device)
        _, hn = self.rnn(xs, h0)
        return self.fc(hn.squeeze(0))

    def predict_next(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)


class AutoRegressiveRNN(nn.Module):
    """Seed 002: i2h and i2o both read [x_t, h_{t-1}], so the output at t comes from the previous state and the
    current input, not from the new state; zero initial state."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.hidden_size = hidden
        self.i2h = nn.Linear(n_in + hidden, hidden)
        self.i2o = nn.Linear(n_in + hidden, n_out)
        self.tanh = nn.Tanh()

    def forward(self, x: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size, seq_length, _ = x.size()
        outputs = torch.zeros(batch_size, seq_length, self.i2o.out_features, device=x.device)
        for t in range(seq_length):
            combined = torch.cat((x[:, t, :], hidden), 1)
            hidden = self.tanh(self.i2h(combined))
            outputs[:, t, :] = self.i2o(combined)
        return outputs, hidden

    def init_hidden(self, batch_size: int = 1) -> torch.Tensor:
        return torch.zeros(batch_size, self.hidden_size, device=self.i2h.weight.device)

    def predict_next(self, x: torch.Tensor) -> torch.Tensor:
        return self(x, self.init_hidden(len(x)))[0][:, -1]


class RNN_LSTM(nn.Module):  # noqa: N801 (seed 004's name)
    """Seed 004: torch.nn.LSTM from a zero state, a linear head on the last step's output. The zero state is
    made on the input's device (004 made it on the CPU whatever the model's device)."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.lstm = nn.LSTM(input_size=n_in, hidden_size=hidden, batch_first=True)
        self.linear = nn.Linear(in_features=hidden, out_features=n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros(1, x.shape[0], self.hidden, device=x.device)
        output, _ = self.lstm(x, (zeros, zeros))
        return self.linear(output)[:, -1, :]

    def predict_next(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)


NOTEBOOK_MODELS = {cls.__name__: cls for cls in (SimpleRNN, Model2D, Model2DStd, AutoRegressiveRNN, RNN_LSTM)}


# --- the experiments --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Experiment:
    """One notebook experiment and the pipeline variant it is set against; the fields are the notebook's."""

    name: str
    notebook: str  # "000", "001", "002" or "004": which training loop runs
    dataset: str  # the pipeline dataset both sides train on
    variant: str  # the params.yaml `models:` entry closest to the notebook's model
    model: str  # the notebook's model class, a key of NOTEBOOK_MODELS
    hidden: int
    lr: float
    epochs: int
    batch_size: int | None  # None: the whole training split is one batch
    shuffle: bool = False
    clip_norm: float = 0.0  # 0: no clipping
    rollout: bool = False  # also extrapolate one window at a time, as seed 002 does
    quick: bool = False


def notebook_experiments(quick: bool = False) -> list[Experiment]:
    """Every notebook experiment with its notebook's hyperparameters; quick: at most QUICK_EPOCHS epochs (the
    data shrink with `generate_datasets(root, quick=True)`)."""
    full = [
        Experiment("000 sincos", "000", "sincos", "elman", "SimpleRNN", hidden=8, lr=1e-3, epochs=10, batch_size=1),
        # 001's Model: W_in x + b + W_rec h from a zero state, output from the state: the concat cell exactly.
        Experiment("001 ramp", "001", "ramp", "concat", "Model2D", hidden=5, lr=1e-2, epochs=500, batch_size=None),
        Experiment("001 trajectory", "001", "trajectory", "concat", "Model2D", hidden=10, lr=1e-2, epochs=1000,
                   batch_size=None),
        Experiment("001 trajectory nn.RNN", "001", "trajectory", "rnn", "Model2DStd", hidden=10, lr=1e-2,
                   epochs=1000, batch_size=None),
        # 001 gives the short-memory model as many neurons as time steps (SEQ_LENGTH = 100).
        Experiment("001 memory_short", "001", "memory_short", "rnn", "Model2DStd", hidden=100, lr=1e-2, epochs=100,
                   batch_size=None),
        Experiment("001 memory_long", "001", "memory_long", "rnn", "Model2DStd", hidden=10, lr=1e-2, epochs=1000,
                   batch_size=None),
        Experiment("002 sine", "002", "sine", "concat", "AutoRegressiveRNN", hidden=10, lr=1e-2, epochs=50,
                   batch_size=128, shuffle=True, clip_norm=1.0, rollout=True),
        Experiment("004 sine_004", "004", "sine_004", "lstm", "RNN_LSTM", hidden=50, lr=1e-3, epochs=5, batch_size=32),
    ]
    if not quick:
        return full
    return [dataclasses.replace(e, epochs=min(e.epochs, QUICK_EPOCHS), quick=True) for e in full]


def generate_datasets(root: Path, quick: bool) -> dict[str, Path]:
    """Write every dataset the experiments use under root/data/datasets with the pipeline's own generators and
    params.yaml's seed (the preview figures of the generate stage are skipped). Returns name -> file."""
    params = benchmark_params(quick)
    paths = Paths(Path(root))
    written = {}
    for name in sorted({e.dataset for e in notebook_experiments(quick)}):
        datasets.save(generate.build(params, name), paths.dataset(name))
        written[name] = paths.dataset(name)
    return written


# --- the notebooks' training loops ------------------------------------------------------------------------------

def _loop_000(model: SimpleRNN, exp: Experiment, x: torch.Tensor, y: torch.Tensor) -> None:
    """Seed 000: one Adam update per sequence, in order; the cell is called once per time step from h0."""
    criterion = nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=exp.lr)
    for _ in range(exp.epochs):
        for i in range(len(x)):
            h_prev = model.h0
            for t in range(x.shape[1]):
                output, h_prev = model(x[i, t:t + 1], h_prev)
            loss = criterion(output, y[i:i + 1])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def _loop_001(model: nn.Module, exp: Experiment, x: torch.Tensor, y: torch.Tensor) -> None:
    """Seed 001: one Adam update per epoch on the whole training split."""
    optimizer = torch.optim.Adam(model.parameters(), lr=exp.lr)
    loss_fn = nn.MSELoss()
    for _ in range(exp.epochs):
        model.train()
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _loop_002(model: AutoRegressiveRNN, exp: Experiment, x: torch.Tensor, y: torch.Tensor) -> None:
    """Seed 002's Lightning fit written out: shuffled DataLoader batches, the last output against the target,
    gradients clipped to exp.clip_norm (the notebook explains clipping at 1.0 but never passes it to its Trainer)."""
    loader = DataLoader(TensorDataset(x, y), batch_size=exp.batch_size, shuffle=exp.shuffle)
    optimizer = torch.optim.Adam(model.parameters(), lr=exp.lr)
    for _ in range(exp.epochs):
        model.train()
        for xb, yb in loader:
            outputs, _ = model(xb, model.init_hidden(xb.size(0)))
            loss = nn.functional.mse_loss(outputs[:, -1, :].reshape(-1), yb.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), exp.clip_norm)
            optimizer.step()


def _loop_004(model: RNN_LSTM, exp: Experiment, x: torch.Tensor, y: torch.Tensor) -> None:
    """Seed 004: a DataLoader over a list of (window, target) pairs, in order (no shuffle), Adam at its default
    learning rate."""
    loader = DataLoader(list(zip(x, y)), batch_size=exp.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=exp.lr)
    loss_fn = nn.MSELoss()
    for _ in range(exp.epochs):
        model.train()
        for xb, yb in loader:
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


LOOPS: dict[str, Callable[[nn.Module, Experiment, torch.Tensor, torch.Tensor], None]] = {
    "000": _loop_000, "001": _loop_001, "002": _loop_002, "004": _loop_004}


def window_rollout(predict_next: Callable[[torch.Tensor], torch.Tensor], context: np.ndarray,
                   steps: int) -> np.ndarray:
    """Seed 002's extrapolation: per sequence, a Python list of values; at every step the last window becomes a
    fresh (1, T, F) tensor, the model rebuilds its state from it and predicts one value, which is appended.
    Gradients stay on, as in the notebook. (M, T, F) context -> (M, steps, F) predictions."""
    window, n_features = context.shape[1], context.shape[2]
    rollouts = []
    for sequence in context:
        pred_seq = sequence.tolist()
        for t in range(steps):
            x_t = torch.tensor(pred_seq[t:t + window]).reshape(1, -1, n_features)
            pred_seq.append(predict_next(x_t)[0].tolist())
        rollouts.append(pred_seq[window:])
    return np.array(rollouts, dtype=np.float32)


def warm_up() -> None:
    """Pay torch's one-off costs before any clock starts: the first Adam built in a process imports the
    optimiser machinery (about a second here), which would otherwise land on whichever side runs first."""
    layer = nn.Linear(1, 1)
    optimizer = torch.optim.Adam(layer.parameters())
    layer(torch.zeros(1, 1)).sum().backward()
    optimizer.step()


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run_notebook(exp: Experiment, seed: int, data: datasets.Dataset) -> dict:
    """Train exp's notebook model with exp's notebook loop on the training split (raw values, as the notebooks do).

    Returns seconds (the training loop only), mse (test MSE in original units, the pipeline's test.mse),
    rollout_mse (the window-at-a-time rollout against the true continuation; None unless exp.rollout),
    epochs and parameters."""
    warm_up()
    configure(THREADS, seed)
    device = torch.device(DEVICE)
    model = NOTEBOOK_MODELS[exp.model](data.x_train.shape[-1], exp.hidden, data.y_train.shape[-1]).to(device)
    x, y = (torch.from_numpy(a).to(device) for a in (data.x_train, data.y_train))
    seconds, _ = timed(lambda: LOOPS[exp.notebook](model, exp, x, y))
    model.eval()
    with torch.no_grad():
        pred = model.predict_next(torch.from_numpy(data.x_test).to(device)).cpu().numpy()
    result = {"seconds": seconds, "mse": scoring.regression_metrics(pred, data.y_test)["mse"],
              "rollout_mse": None, "epochs": exp.epochs, "parameters": _parameters(model)}
    if exp.rollout:
        rolled = window_rollout(model.predict_next, data.rollout_context, data.meta["rollout_steps"])
        result["rollout_mse"] = scoring.regression_metrics(rolled, data.rollout_target)["mse"]
    return result


def run_pipeline(exp: Experiment, seed: int, data_dir: Path) -> dict:
    """Train exp's pipeline variant with fitting.fit and the default params (this seed), in the project folder
    data_dir that `generate_datasets` filled, the way the train stage does; then score the checkpoint it wrote
    with the evaluate stage's `score`. Same keys as run_notebook; epochs is the number run (early stopping)."""
    params = dataclasses.replace(benchmark_params(exp.quick), seed=seed)
    paths = Paths(Path(data_dir))
    data = datasets.load(paths.dataset(exp.dataset))
    spec = params.variant(exp.variant)
    device = resolve_device(params.device)
    warm_up()
    configure(params.threads)  # what training.run does, in its order, so the same weights come out
    shape = models.Shape(input_size=data.meta["n_features"], output_size=data.y_train.shape[-1],
                         window=data.meta["window"], hidden=spec.hidden, layers=spec.layers)
    stack = ReplicaStack(spec.kind, shape, [params.seed], spec.forget_bias).to(device)  # replica 0: the run's seed
    train, val = fitting.tensors(data, "train", device), fitting.tensors(data, "val", device)
    seconds, (history,) = timed(lambda: fitting.fit(stack, train, val, params.training(exp.dataset, exp.variant)))
    checkpoint = paths.checkpoint(exp.dataset, exp.variant)
    checkpoints.save(checkpoint, spec.kind, shape, [stack.state_arrays(0)])
    predictor, = evaluation.load_predictors(params, checkpoint)[0]
    metrics = scoring.score(data, predictor, params.evaluate)["metrics"]
    return {"seconds": seconds, "mse": metrics["test"]["mse"],
            "rollout_mse": metrics["rollout"]["mse"] if exp.rollout else None,
            "epochs": len(history.rows) + int(history.diverged), "parameters": stack.parameters_per_replica()}
