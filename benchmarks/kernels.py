"""Kernel-level timings: how fast our hand-written cells train against torch.nn.RNN, and how much the pipeline's
batched rollout saves over seed 002's window-at-a-time loop while predicting the same values.

Both pin torch to one CPU thread, as the pipeline's stages do, and report the median over repeats so that one
hiccup of a busy machine does not decide the result.
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks import notebooks
from benchmarks.timing import alternating, median_time
from benchmarks.notebooks import THREADS, warm_up, window_rollout
from pipeline.models import inference
from pipeline.files import checkpoints, datasets
from pipeline.learning import models
from pipeline.files.artifacts import Paths
from pipeline.learning.runtime import configure
from pipeline.analysis import scoring

TORCH_RNN = "nn.RNN"  # the reference kind of `throughput`; every other kind is a pipeline model


class TorchRNN(nn.Module):
    """torch.nn.RNN (one layer, input 1) with a Linear head on the last state: the same loss as our cells."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.rnn = nn.RNN(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def predict_next(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.rnn(x)  # h (1, B, H)
        return self.head(h[-1])


def _build(kind: str, hidden: int, seq_len: int) -> nn.Module:
    if kind == TORCH_RNN:
        return TorchRNN(hidden)
    return models.build(kind, models.Shape(input_size=1, output_size=1, window=seq_len, hidden=hidden, layers=1))


def throughput(kind: str, hidden: int = 16, batch: int = 64, seq_len: int = 15, steps: int = 20,
               repeats: int = 5, seed: int = 0) -> dict:
    """Training speed of one model on random data: forward, backward and an Adam step per update.

    kind is a pipeline model (elman, concat, rnn, ...) or TORCH_RNN. One update processes batch x seq_len
    sequence steps; the median over `repeats` runs of `steps` updates (after one warm-up update) gives
    seconds_per_update and sequence_steps_per_second."""
    warm_up()
    configure(THREADS, seed)
    model = _build(kind, hidden, seq_len)
    x, y = torch.randn(batch, seq_len, 1), torch.randn(batch, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train(updates: int) -> None:
        for _ in range(updates):
            loss = nn.functional.mse_loss(model.predict_next(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    train(1)  # first-call allocations and Adam's state stay out of the timing
    seconds, _, _ = median_time(lambda: train(steps), repeats)
    return {"kind": kind, "hidden": hidden, "batch": batch, "seq_len": seq_len,
            "parameters": sum(p.numel() for p in model.parameters()),
            "seconds_per_update": seconds / steps,
            "sequence_steps_per_second": batch * seq_len * steps / seconds}


class Seed002Forward(nn.Module):
    """Seed 002's forward exactly as the notebook writes it, one Python step per time step (torch.cat of x_t and
    the state, i2h, tanh, the step's output written into a zeros tensor), holding the weights of the pipeline's
    one-layer concat variant, whose output reads the new state. It computes what the concat checkpoint computes,
    so seed 002's extrapolation can be timed as written and still give the same numbers."""

    def __init__(self, concat: models.SequenceModel) -> None:
        super().__init__()
        if len(concat.i2h) != 1:
            raise ValueError("seed 002's forward has one layer")
        self.i2h, self.h2o, self.hidden_size, self.tanh = concat.i2h[0], concat.h2o, concat.hidden, nn.Tanh()

    def forward(self, x: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size, seq_length, _ = x.size()
        outputs = torch.zeros(batch_size, seq_length, self.h2o.out_features)
        for t in range(seq_length):
            combined = torch.cat((x[:, t, :], hidden), 1)
            hidden = self.tanh(self.i2h(combined))
            outputs[:, t, :] = self.h2o(hidden)
        return outputs, hidden

    def predict_next(self, x: torch.Tensor) -> torch.Tensor:
        return self(x, torch.zeros(len(x), self.hidden_size))[0][:, -1]


def rollout_comparison(checkpoint: checkpoints.Checkpoint, data: datasets.Dataset, steps: int | None = None,
                       repeats: int = 3) -> dict:
    """Extrapolate data's rollout task (default: its full length) with a trained checkpoint: seed 002's way
    (`window_rollout`: one sequence and one window at a time, a Python list, the state rebuilt every step) and
    the evaluate stage's way (`scoring.rollout` of the numpy forward that `evaluation.load_predictor` gives:
    every sequence, and every window in flight, advanced at once), both on scaled data as the model was trained.

    The window loop runs twice where it can: over the model's own torch forward (`fused`: elman and concat run
    in torch's fused tanh-RNN kernel, which seed 002 does not have) and, for a one-layer concat checkpoint, over
    seed 002's per-time-step forward as the notebook writes it (`as_written`, Seed002Forward). The sides take
    turns within each of the `repeats` rounds, and each figure is its median.

    Returns sequences, steps, batched_seconds, and per window loop (`fused`, `as_written` where it ran):
    window_seconds, speedup (window / batched) and max_abs_diff between its prediction and the batched one in
    original units (float32 round-off, carried along the rollout)."""
    configure(THREADS)
    steps = data.meta["rollout_steps"] if steps is None else steps
    context = data.scaled(data.rollout_context)
    model = models.restore(checkpoint, torch.device("cpu")).eval()
    loops = {"fused": model}
    if checkpoint.kind == "concat" and checkpoint.shape.layers == 1:
        loops["as_written"] = Seed002Forward(model).eval()
    predictor = inference.restore(checkpoint)
    sides = {"batched": lambda: scoring.rollout(predictor, context, steps),
             **{name: (lambda f=forward: window_rollout(f.predict_next, context, steps))
                for name, forward in loops.items()}}
    seconds, _, out = alternating(sides, repeats)
    result = {"sequences": len(context), "steps": steps, "batched_seconds": seconds["batched"]}
    for name in loops:
        diff = np.abs(data.unscaled(out[name]) - data.unscaled(out["batched"]))
        result[name] = {"window_seconds": seconds[name], "speedup": seconds[name] / seconds["batched"],
                        "max_abs_diff": float(diff.max())}
    return result


def rollout_benchmark(root: Path, quick: bool, repeats: int = 3, seed: int = 0) -> dict:
    """Seed 002's experiment end to end: train the pipeline's variant on the sine (its 1000-step extrapolation;
    100 steps in quick mode) in the project folder root, which `notebooks.generate_datasets` filled, then time
    both rollouts of the trained checkpoint with `rollout_comparison`.

    The sine has one held-out continuation, so the batched rollout can only advance the 15 windows in flight
    together (one cell step per predicted value instead of 15); `many` repeats the comparison on seed 000's
    sincos task, whose 50 held-out sequences (10 in quick mode) also advance together."""
    result = {}
    for key, exp in (("sine", next(e for e in notebooks.notebook_experiments(quick) if e.rollout)),
                     ("many", next(e for e in notebooks.notebook_experiments(quick) if e.dataset == "sincos"))):
        notebooks.run_pipeline(exp, seed, root)
        checkpoint = checkpoints.load(Paths(root).checkpoint(exp.dataset, exp.variant))
        data = datasets.load(Paths(root).dataset(exp.dataset))
        result[key] = {"experiment": exp.name, "variant": exp.variant,
                       **rollout_comparison(checkpoint, data, repeats=repeats)}
    return {**result.pop("sine"), **result}
