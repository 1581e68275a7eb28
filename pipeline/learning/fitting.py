"""Gradient training of a learned model's replicas: mini-batch Adam with gradient clipping, early stopping on
validation loss, the best weights restored at the end, and divergence recorded as a result, not a crash; all of
it per replica, with the replicas trained together as one network (replicas.py).

Losses are MSE on the scaled data. A split's examples are (x, y), or (x, y, lengths) for right-padded windows of
different real lengths (`tensors`): the lengths travel with their windows through every shuffle and batch, and
each prediction comes from its own window's last real step (replicas.ReplicaStack.predict_next). This is the
only module that trains with torch; the train stage imports it only for learned variants.
"""

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline.files import datasets
from pipeline.learning.history import History
from pipeline.params import TrainParams
from pipeline.progress import Progress
from pipeline.learning.replicas import ReplicaStack
from pipeline.learning.schedules import learning_rate


# Data are scaled to unit variance on the training inputs, so predicting the mean costs a loss of about 1. A loss
# this many times above both that and the untrained model's has left every useful region: Adam with a huge
# learning rate takes steps of size lr whatever the gradient, so its loss explodes without ever becoming NaN.
DIVERGENCE_FACTOR = 100.0


class Adam:
    """torch.optim.Adam's default update (no weight decay, no amsgrad, one tensor at a time), op for op.

    Why not torch.optim.Adam itself: every torch optimizer imports torch._dynamo on its first step, about 1.1 s
    here, which each learned train stage of a full run would pay for an update of five tensor ops. A test checks
    that both produce bit-identical weights over many steps."""

    def __init__(self, parameters, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.parameters = [p for p in parameters if p.requires_grad]
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.parameters]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.parameters]
        self.steps = [0] * len(self.parameters)  # per parameter, as torch counts: one without a gradient waits

    def zero_grad(self) -> None:
        for p in self.parameters:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, (p, exp_avg, exp_avg_sq) in enumerate(zip(self.parameters, self.exp_avg, self.exp_avg_sq)):
            if p.grad is None:
                continue
            self.steps[i] += 1
            grad, step = p.grad, float(self.steps[i])
            exp_avg.lerp_(grad, 1 - self.beta1)
            exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            step_size = self.lr / (1 - self.beta1 ** step)
            denom = (exp_avg_sq.sqrt() / (1 - self.beta2 ** step) ** 0.5).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)


def exploded(loss: float, reference: float) -> bool:
    """A loss that is non-finite, or DIVERGENCE_FACTOR above `reference` (the untrained loss, at least 1)."""
    return not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * max(reference, 1.0)


# (stack, x, members) -> predictions; one_step also takes the windows' lengths (M, B) as a fourth argument
Predict = Callable[..., torch.Tensor]
Examples = tuple[torch.Tensor, ...]  # (x, y) or (x, y, lengths)


def one_step(stack: ReplicaStack, x: torch.Tensor, members: list[int],
             lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher forcing: (M, B, T, F) true windows -> (M, B, F_out), each prediction from true values (from each
    window's last real step, where `lengths` (M, B) are given)."""
    if lengths is None:
        return stack.predict_next(x, members)
    return stack.predict_next(x, members, lengths)


def _unpack(examples: Examples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(x, y) or (x, y, lengths) -> (x, y, lengths or None)."""
    x, y, *rest = examples
    return x, y, (rest[0] if rest else None)


def free_running(steps: int) -> Predict:
    """The free-running prediction of `steps` values, (M, B, T, F) contexts -> (M, B, steps, F): step k predicts
    from the last T values (context, then its own predictions) from a fresh state, exactly as the evaluate
    stage's rollout (scoring.window_rollout) does, but differentiable through every fed-back value."""
    def predict(stack: ReplicaStack, x: torch.Tensor, members: list[int]) -> torch.Tensor:
        window, outputs = x, []
        for _ in range(steps):
            nxt = stack.predict_next(window, members)  # (M, B, F)
            outputs.append(nxt)
            window = torch.cat([window[:, :, 1:], nxt[:, :, None]], dim=2)
        return torch.stack(outputs, dim=2)

    return predict


@torch.no_grad()
def mean_loss(stack: ReplicaStack, x: torch.Tensor, y: torch.Tensor, members: list[int] | None = None,
              batch_size: int = 4096, predict: Predict = one_step, lengths: torch.Tensor | None = None
              ) -> list[float]:
    """Each replica's MSE over (x, y), summed batch by batch: one value per replica in `members` (default all).
    `lengths` (N,): the windows' real lengths, for right-padded windows."""
    stack.eval()
    members = list(range(stack.replicas)) if members is None else members
    totals = [0.0] * len(members)
    length_batches = [None] * len(x.split(batch_size)) if lengths is None else lengths.split(batch_size)
    for xb, yb, lb in zip(x.split(batch_size), y.split(batch_size), length_batches):
        if lb is None:
            pred = predict(stack, xb.expand(len(members), *xb.shape), members)
        else:
            pred = predict(stack, xb.expand(len(members), *xb.shape), members, lb.expand(len(members), *lb.shape))
        totals = [t + torch.nn.functional.mse_loss(pred[i], yb, reduction="sum") for i, t in enumerate(totals)]
    return [float(t) / y.numel() for t in totals]


def clip_per_replica(stack: ReplicaStack, max_norm: float, members: list[int] | None = None) -> None:
    """torch.nn.utils.clip_grad_norm_'s rule (the 2-norm of the per-tensor 2-norms), applied to each replica's
    own gradients, for every replica at once: a replica whose gradient is large must not shrink the others'."""
    grads = [w.grad for w in stack.weights if w.grad is not None]
    rows = torch.tensor(members) if members is not None and len(members) < stack.replicas else None
    mine = [(g if rows is None else g[rows]).reshape(g.shape[0] if rows is None else len(rows), -1) for g in grads]
    norms = torch.stack([torch.linalg.vector_norm(m, 2.0, dim=1) for m in mine])  # (tensors, replicas)
    scale = torch.clamp(max_norm / (torch.linalg.vector_norm(norms, 2.0, dim=0) + 1e-6), max=1.0)
    for g in grads:
        view = scale.reshape(-1, *[1] * (g.dim() - 1))
        if rows is None:
            g.mul_(view)
        else:
            g[rows] *= view


def _snapshot(stack: ReplicaStack, replica: int) -> list[torch.Tensor]:
    return [w[replica].detach().clone() for w in stack.weights]


@torch.no_grad()
def _restore(stack: ReplicaStack, replica: int, state: list[torch.Tensor]) -> None:
    for w, value in zip(stack.weights, state):
        w[replica] = value


@dataclass
class Phase:
    """One training phase: what the model predicts from each example, for how long, at which rates."""

    predict: Predict
    epochs: int
    patience: int  # epochs without a better validation loss before a replica stops; 0: never
    learning_rate: Callable[[int], float]
    batch_size: int
    clip_norm: float


def fit(stack: ReplicaStack, train: Examples, val: Examples,
        cfg: TrainParams, progress: Progress | None = None,
        continued: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
        ) -> list[History]:
    """Train every replica in place and leave each at its best weights (lowest validation loss). `train` and
    `val` are (x, y), or (x, y, lengths) for right-padded windows (see the module's docstring).

    Each replica has its own batch order (a generator seeded with its seed), its own gradient clipping, early
    stopping and divergence check, so it trains as it would alone (every cross-replica weight is an exact zero).
    A replica that has stopped, early or by diverging, leaves the kernel calls (a long-running replica no longer
    carries the stopped ones) and is held at its best weights. A batch whose loss is non-finite for some replica
    is skipped for all of them, since 0 * inf in the shared backward pass would poison the others' gradients;
    that replica is marked diverged and the others go on without it.

    With `cfg.rollout_steps` K > 0, a second phase follows from each replica's best weights: the loss is the
    error of K fed-back predictions from `continued` ((contexts, continuations) of train and val, scaled), at
    `cfg.rollout_lr`, stopping early on the K-step validation loss. Its epoch 0 is the teacher-forced model, so
    a replica keeps its first-phase weights unless the second phase improves their K-step validation loss."""
    histories = [History() for _ in range(stack.replicas)]
    generators = [torch.Generator().manual_seed(seed) for seed in stack.seeds]  # init cannot shift shuffling
    first = Phase(one_step, cfg.epochs, cfg.patience, lambda epoch: learning_rate(cfg, epoch), cfg.batch_size,
                  cfg.clip_norm)
    _train_phase(stack, train, val, first, generators, [h.rows for h in histories], histories, progress)
    if cfg.rollout_steps:
        if continued is None:
            raise ValueError("rollout_steps > 0 needs the training sequences' continuations")
        second = Phase(free_running(cfg.rollout_steps), cfg.rollout_epochs, cfg.rollout_patience,
                       lambda epoch: cfg.rollout_lr, cfg.batch_size, cfg.clip_norm)
        rollout = [History() for _ in range(stack.replicas)]
        _train_phase(stack, *continued, second, generators, [h.rows for h in rollout], rollout,
                     progress and Progress(f"{progress.label} free-running {cfg.rollout_steps} steps",
                                           cfg.rollout_epochs, progress.stream))
        for history, phase in zip(histories, rollout):
            history.rollout, history.rollout_steps = phase, cfg.rollout_steps
    return histories


def _train_phase(stack: ReplicaStack, train: Examples, val: Examples, phase: Phase, generators: list[torch.Generator],
                 rows: list[list], histories: list[History], progress: Progress | None) -> None:
    """Run one phase for every replica, from the weights they have; leave each at its lowest validation loss
    (epoch 0, the weights it came with, included), recording each epoch in `histories`."""
    replicas = stack.replicas
    x, y, lengths = _unpack(train)
    x_val, y_val, lengths_val = _unpack(val)
    optimizer = Adam(stack.parameters(), lr=phase.learning_rate(1))
    best = [_snapshot(stack, r) for r in range(replicas)]
    # epoch 0: the starting weights are the first best
    start_val = mean_loss(stack, x_val, y_val, predict=phase.predict, lengths=lengths_val)
    references = [max(t, v) for t, v in zip(mean_loss(stack, x, y, predict=phase.predict, lengths=lengths),
                                             start_val)]
    for history, loss in zip(histories, start_val):
        history.best_val_loss = history.start_val_loss = loss
    active, stale = [True] * replicas, [0] * replicas

    def stop(r: int, diverged: bool = False) -> None:
        active[r] = False
        histories[r].diverged |= diverged
        _restore(stack, r, best[r])

    for epoch in range(1, phase.epochs + 1):
        members = [r for r in range(replicas) if active[r]]  # only these go through the kernel this epoch
        if not members:
            break
        stack.train()
        optimizer.lr = phase.learning_rate(epoch)
        orders = {r: torch.randperm(len(x), generator=generators[r]).split(phase.batch_size) for r in members}
        batch_losses: dict[int, list[torch.Tensor]] = {r: [] for r in members}
        for batch in range(len(orders[members[0]])):
            members = [r for r in members if active[r]]
            if not members:
                break
            indices = [orders[r][batch].to(x.device) for r in members]
            targets = torch.stack([y[index] for index in indices])
            if lengths is None:
                pred = phase.predict(stack, torch.stack([x[index] for index in indices]), members)
            else:  # each window keeps its own length through the shuffle
                pred = phase.predict(stack, torch.stack([x[index] for index in indices]), members,
                                     torch.stack([lengths[index] for index in indices]))
            loss = torch.stack([torch.nn.functional.mse_loss(pred[i], targets[i]) for i in range(len(members))])
            optimizer.zero_grad()
            finite = torch.isfinite(loss)
            if not bool(finite.all()):
                for i, r in enumerate(members):
                    if not finite[i]:
                        stop(r, diverged=True)
                continue
            loss.sum().backward()
            if phase.clip_norm > 0:
                clip_per_replica(stack, phase.clip_norm, members)
            optimizer.step()
            for r in range(replicas):
                if not active[r]:
                    _restore(stack, r, best[r])
            for i, r in enumerate(members):
                batch_losses[r].append(loss[i].detach() * targets[0].numel())  # a mean over batch and features
        members = [r for r in members if active[r]]
        train_loss = {r: float(torch.stack(batch_losses[r]).sum() / y.numel()) if batch_losses[r] else math.nan
                      for r in members}
        val_loss = (dict(zip(members, mean_loss(stack, x_val, y_val, members, predict=phase.predict,
                                                lengths=lengths_val))) if members else {})
        for r in members:
            history = histories[r]
            if exploded(train_loss[r], references[r]) or exploded(val_loss[r], references[r]):
                stop(r, diverged=True)
                continue
            rows[r].append((epoch, train_loss[r], val_loss[r]))
            if val_loss[r] < history.best_val_loss:
                history.best_val_loss, history.best_epoch, stale[r] = val_loss[r], epoch, 0
                best[r] = _snapshot(stack, r)
            else:
                stale[r] += 1
                if phase.patience and stale[r] >= phase.patience:  # 0: no early stopping
                    stop(r)
        if progress:
            running = [r for r in range(replicas) if rows[r] and rows[r][-1][0] == epoch]
            if running:
                progress.update(epoch, statistics.median(train_loss[r] for r in running),
                                statistics.median(val_loss[r] for r in running))
    for r in range(replicas):
        _restore(stack, r, best[r])


def continued_tensors(data: datasets.Dataset, steps: int, device: torch.device
                      ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The free-running phase's examples, scaled: ((contexts, continuations) of train, the same of val)."""
    return tuple(tuple(torch.from_numpy(a).to(device) for a in data.scaled_continuations(split, steps))
                 for split in ("train", "val"))


def tensors(data: datasets.Dataset, split: str, device: torch.device) -> Examples:
    """A split's examples, scaled: (x, y), and the windows' lengths after them where they differ."""
    examples = tuple(torch.from_numpy(a).to(device) for a in data.scaled_split(split))
    lengths = data.lengths(split)
    return examples if lengths is None else examples + (torch.from_numpy(lengths).to(device),)
