"""The train stage: fit one (dataset, model) pair and write its checkpoint, metrics and loss curve.

A learned pair trains `train.replicas` replicas that differ only in their seed (weight initialisation and batch
order, `replica_seed`), in networks of `train.replicas_per_network` (learning/replicas.py) that run side by side in
forked copies of this process (learning/processes.py); its metrics are medians over them under the single-run names,
with every replica's own outcome beside them.

Learned variants are trained by gradients in learning/fitting.py (torch, imported only for them); the closed-form
baselines are fitted in numpy here, so their stages never pay for importing torch. Both write the same outputs.
The metrics file holds only what the weights determine (no wall time), so that two runs with the same params
write byte-identical metrics and `dvc metrics diff` shows real changes only.
"""

import dataclasses
import math
import statistics
import time
from pathlib import Path

import numpy as np

from pipeline.models import baselines, normalisation
from pipeline.files import checkpoints, datasets, replica_cache
from pipeline.learning import numerics, processes
from pipeline.files.artifacts import Paths, guaranteed, write_csv, write_json
from pipeline.learning.history import History
from pipeline.errors import ParamsError
from pipeline.params import ModelSpec, Params, TrainParams


def replica_seed(seed: int, replica: int) -> int:
    """The seed of replica `replica` of a run with `seed`: replica 0 uses `seed` itself, so `train.replicas: 1`
    is exactly the single run of before; replica r > 0 uses the first 32-bit word of numpy's
    SeedSequence([seed, r]), a hash that keeps every (seed, replica) stream apart (seed 1's replicas are not
    seed 0's shifted by one)."""
    if replica == 0:
        return seed
    return int(np.random.SeedSequence([seed, replica]).generate_state(1)[0])


def run(params: Params, dataset: str, model_name: str, paths: Paths = Paths()) -> dict:
    """Dataset file in; checkpoint (every replica), metrics JSON and loss-curve CSV out."""
    spec = params.variant(model_name)
    if model_name not in params.models_on(dataset):
        return _not_run(params, dataset, model_name, paths)
    data = datasets.load(paths.dataset(dataset))
    shape = checkpoints.Shape(input_size=data.meta["n_features"], output_size=data.y_train.shape[-1],
                              window=data.meta["window"], hidden=spec.hidden, layers=spec.layers)
    label = f"train {dataset}/{model_name}"
    started = time.perf_counter()
    if spec.kind in baselines.BASELINES:
        seeds, (histories, arrays, parameters, device) = [], _fit_baseline(data, spec.kind, shape)
        # Sizes mean nothing to a closed-form baseline: keep them out of its checkpoint, so that changing
        # `model.hidden` leaves it byte-identical and DVC skips its evaluation.
        shape = dataclasses.replace(shape, hidden=0, layers=0)
    else:
        cfg = params.training(dataset, model_name)
        check_free_running(cfg, data, dataset)
        seeds = [replica_seed(params.seed, r) for r in range(cfg.replicas)]
        histories, arrays, parameters, device = _fit_learned(params, cfg, data, spec, shape, seeds, label,
                                                             paths.dataset(dataset))
    seconds = time.perf_counter() - started
    metrics = train_metrics(histories, seeds, parameters, device)
    checkpoints.save(paths.checkpoint(dataset, model_name), spec.kind, shape, arrays)
    write_json(paths.train_metrics(dataset, model_name), metrics)
    write_csv(paths.train_curve(dataset, model_name), ["epoch", "replica", "train_loss", "val_loss"],
              [(epoch, r, _loss(train), _loss(val))
               for r, history in enumerate(histories) for epoch, train, val in history.rows])
    if metrics["diverged"]:
        state = f"DIVERGED (loss exploded) in {metrics['diverged_replicas']} of {len(histories)} replicas, kept"
    else:
        state = "done,"
    replicas = f" (median of {len(histories)} replicas)" if len(histories) > 1 else ""
    where = f"{device} ({numerics.mode()})" if device == "cpu" and seeds else device
    print(f"{label}: {state} best val loss {metrics['best_val_loss']:.4g}{replicas} at epoch "
          f"{metrics['best_epoch']:g} in {seconds:.1f}s on {where}")
    return metrics


def _not_run(params: Params, dataset: str, model_name: str, paths: Paths) -> dict:
    """A variant that does not run on this dataset (its `datasets:` leaves it out, or persistence on a target
    that is not the inputs' next value): its stage exists (DVC's matrix crosses every dataset with every model)
    but trains nothing; its outputs say so, and evaluation and the report skip the pair."""
    reason = params.why_not_on(dataset, model_name)
    checkpoints.save_not_run(paths.checkpoint(dataset, model_name), reason)
    metrics = {"not_run": reason}
    write_json(paths.train_metrics(dataset, model_name), metrics)
    write_csv(paths.train_curve(dataset, model_name), ["epoch", "replica", "train_loss", "val_loss"], [])
    print(f"train {dataset}/{model_name}: not run here ({reason}); wrote a not-run record")
    return metrics


def check_free_running(cfg: TrainParams, data: datasets.Dataset, dataset: str) -> None:
    """The free-running phase needs every split it uses to have true continuations of K steps: one line that
    names the setting otherwise, before any training starts."""
    steps = cfg.rollout_steps
    if not steps:
        return
    if not data.has_rollout:
        raise ParamsError(f"params.yaml: train.rollout_steps is {steps} for data.{dataset}, which cannot be rolled "
                          f"out (its target is not its next value); give the variant `datasets:` without it "
                          f"(models.<name>.datasets) or set data.{dataset}.train.rollout_steps: 0")
    longest = min(data.longest_continuation(split) for split in ("train", "val"))
    if longest < steps:
        raise ParamsError(f"params.yaml: train.rollout_steps is {steps} but data.{dataset}'s training and "
                          f"validation sequences continue at most {longest} steps after a window; use "
                          f"rollout_steps <= {longest} for it (data.{dataset}.train.rollout_steps)")


# Losses are means of squares of values scaled to unit variance, accumulated in float32 (learned models) or
# float64 (baselines): digits beyond these are round-off that moves with the CPU's kernels, not results.
LOSS_DIGITS = 6
LOSS_FLOOR = 1e-12


def _loss(value: float) -> float | None:
    """A loss as far as the computation guarantees it: 6 significant digits, round-off-level values (the exact
    linear baseline's 1e-15 on a pure sine) as 0, and null where JSON has no number (NaN)."""
    if not math.isfinite(value):
        return None
    return guaranteed(value, LOSS_FLOOR, LOSS_DIGITS)


def train_metrics(histories: list[History], seeds: list[int], parameters: int, device: str) -> dict:
    """Medians over replicas under the single-run names, with every replica's own outcome beside them. A
    baseline (no seeds) is one deterministic fit."""
    per_replica = {}
    for r, history in enumerate(histories):
        last = history.rows[-1] if history.rows else (0, math.nan, math.nan)
        per_replica[str(r)] = {
            **({"seed": seeds[r]} if seeds else {}),
            "best_val_loss": _loss(history.best_val_loss),
            "best_epoch": history.best_epoch,
            "epochs_run": last[0] + (1 if history.diverged else 0),
            "final_train_loss": _loss(last[1]),
            "final_val_loss": _loss(last[2]),
            "diverged": history.diverged,
        }
        if history.rollout is not None:
            phase = history.rollout
            per_replica[str(r)].update({
                "rollout_start_val_loss": _loss(phase.start_val_loss),
                "rollout_best_val_loss": _loss(phase.best_val_loss),
                "rollout_best_epoch": phase.best_epoch,
                "rollout_epochs_run": (phase.rows[-1][0] if phase.rows else 0) + (1 if phase.diverged else 0),
            })
            per_replica[str(r)]["diverged"] = history.diverged or phase.diverged

    def median(key: str) -> float | None:
        values = [row[key] for row in per_replica.values() if row[key] is not None]
        return _loss(statistics.median(values)) if values else None

    diverged = sum(row["diverged"] for row in per_replica.values())
    free_running = {}
    if any(h.rollout is not None for h in histories):
        free_running = {"free_running": {
            "steps": histories[0].rollout_steps,
            "start_val_loss": median("rollout_start_val_loss"),
            "best_val_loss": median("rollout_best_val_loss"),
            "improved_replicas": sum(h.rollout.best_epoch > 0 for h in histories),
        }}
    return {
        "replicas": len(histories),
        "deterministic": not seeds,
        "best_val_loss": median("best_val_loss"),
        "best_epoch": statistics.median(h.best_epoch for h in histories),
        "epochs_run": statistics.median(row["epochs_run"] for row in per_replica.values()),
        "final_train_loss": median("final_train_loss"),
        "final_val_loss": median("final_val_loss"),
        "diverged": diverged > 0,
        "diverged_replicas": diverged,
        "parameters": parameters,
        "device": device,
        **free_running,
        "per_replica": per_replica,
    }


def _fit_baseline(data: datasets.Dataset, kind: str, shape: checkpoints.Shape
                  ) -> tuple[list[History], list[dict[str, np.ndarray]], int, str]:
    """Fit on the scaled training split in one go; its losses are epoch 0 of the curve. Baselines have no
    trained parameters, no seed (one fit: it is deterministic) and always run on the CPU."""
    model = normalisation.applied(kind, baselines.build(kind, shape), data.normalise)
    x, y = data.scaled_split("train")
    model.fit(x, y, data.lengths("train"))
    losses = [_mse(model.predict_next(xs, data.lengths(split)), ys)
              for split, (xs, ys) in (("train", (x, y)), ("val", data.scaled_split("val")))]
    history = History(rows=[(0, *losses)], best_epoch=0, best_val_loss=losses[1])
    return [history], [model.state()], 0, "cpu"


def networks(seeds: list[int], per_network: int) -> list[list[int]]:
    """The replica seeds in networks of `train.replicas_per_network`, by index: replicas 0..k-1, then k..2k-1,
    the last one possibly smaller (5 replicas at 3 per network are 0-2 and 3-4). Each is one network
    (replicas.py), and the split decides which kernel calls a replica's arithmetic shares, so it is a setting,
    never the machine's choice; fixed by index, a network never depends on the replica count, so a pair
    extended from 3 to 6 replicas reuses its network 0-2 (replica_cache.py)."""
    return [seeds[start:start + per_network] for start in range(0, len(seeds), per_network)]


def _fit_learned(params: Params, cfg: TrainParams, data: datasets.Dataset, spec: ModelSpec,
                 shape: checkpoints.Shape, seeds: list[int], label: str, dataset_file: Path
                 ) -> tuple[list[History], list[dict[str, np.ndarray]], int, str]:
    """Train every replica network, side by side in forked processes where the machine has free cores
    (processes.py), in turn otherwise: the same numbers either way. A network found in the replica cache (the
    same settings, seeds and code trained it before) is taken from there instead."""
    from pipeline.learning import fitting  # torch: imported only when a model is trained by gradients
    from pipeline.progress import Progress
    from pipeline.learning.replicas import ReplicaStack
    from pipeline.learning.runtime import configure, resolve_device

    device = resolve_device(params.device)
    configure(params.threads)
    train, val = fitting.tensors(data, "train", device), fitting.tensors(data, "val", device)
    continued = fitting.continued_tensors(data, cfg.rollout_steps, device) if cfg.rollout_steps else None
    groups = networks(seeds, cfg.replicas_per_network)
    keys = [replica_cache.key(_fingerprint(params, cfg, spec, shape, data, dataset_file, group, device))
            for group in groups]
    kept = [replica_cache.load(k) for k in keys]
    todo = [i for i, result in enumerate(kept) if result is None]
    at_once = processes.side_by_side(params.threads, device.type == "cpu")

    def job(index: int, speaks: bool):
        group = groups[index]
        shown = label if len(groups) == 1 else f"{label} replicas {_span(groups, index)}"

        def fit_group():
            configure(params.threads)
            stack = ReplicaStack(spec.kind, shape, group, spec.forget_bias, data.normalise).to(device)
            histories = fitting.fit(stack, train, val, cfg, Progress(shown, cfg.epochs) if speaks else None,
                                    continued)
            return histories, [stack.state_arrays(r) for r in range(stack.replicas)], stack.parameters_per_replica()

        return fit_group

    # One progress line at a time: where networks run side by side, the parent's speaks for all of them.
    trained = processes.run_all([job(i, at_once <= 1 or n == 0) for n, i in enumerate(todo)], at_once)
    for i, result in zip(todo, trained):
        replica_cache.store(keys[i], result)
        kept[i] = result
    reused = [g for g in range(len(groups)) if g not in todo]
    if reused:
        count = sum(len(groups[g]) for g in reused)
        print(f"{label}: {count} of {len(seeds)} replicas reused from {replica_cache.folder()} (networks "
              f"{', '.join(_span(groups, g) for g in reused)}); trained {len(seeds) - count}")
    histories = [h for result in kept for h in result[0]]
    arrays = [a for result in kept for a in result[1]]
    return histories, arrays, kept[0][2], str(device)


def _span(groups: list[list[int]], index: int) -> str:
    """Network `index` as the replica numbers it holds, e.g. `0-2`."""
    first = sum(len(g) for g in groups[:index])
    return f"{first}-{first + len(groups[index]) - 1}" if len(groups[index]) > 1 else str(first)


def _fingerprint(params: Params, cfg: TrainParams, spec: ModelSpec, shape: checkpoints.Shape,
                 data: datasets.Dataset, dataset_file: Path, seeds: list[int], device) -> dict:
    """Everything one network's trained result depends on (replica_cache.py): the replica count and the split
    into networks are left out on purpose, since they change which networks exist, not what one of them is."""
    import platform

    import torch

    training_settings = dataclasses.asdict(cfg)
    for name in ("replicas", "replicas_per_network"):
        training_settings.pop(name)
    return {
        "source": replica_cache.source_hash(), "torch": torch.__version__, "numerics": numerics.mode(),
        "machine": platform.machine(), "device": str(device), "threads": params.threads,
        "dataset": replica_cache.file_hash(dataset_file), "normalise": data.normalise,
        "kind": spec.kind, "forget_bias": spec.forget_bias, "shape": dataclasses.asdict(shape),
        "train": training_settings, "seeds": list(seeds),
    }


def _mse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over examples and features in float64, as fitting.mean_loss averages for the learned models."""
    return float(np.mean((np.asarray(pred, dtype=np.float64) - truth) ** 2))
