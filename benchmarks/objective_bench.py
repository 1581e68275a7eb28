"""What the free-running objective costs (issue 14): seconds per epoch of its phase against a teacher-forced
epoch, on the sine with the default params and 5 replicas, in process.

A free-running epoch predicts K values from each window, each from a full window of the last T values, so it
should cost about K teacher-forced epochs at most (less, since the shared kernel call's overhead is paid once
per step for every replica). Both sides run every epoch (patience 0) on the same data; the validation pass of
each epoch is included, as in training."""

import dataclasses
from collections.abc import Iterable

import numpy as np
import torch

from benchmarks.timing import alternating, timed
from pipeline.data import generators
from pipeline.stages import train as training
from pipeline.learning import fitting
from pipeline.files.checkpoints import Shape
from pipeline.params import Params
from pipeline.learning.replicas import ReplicaStack

DATASET = "sine"
KINDS = ("rnn", "gru")
STEPS = (10, 20)


def epoch_costs(params: Params, kinds: Iterable[str] = KINDS, steps: Iterable[int] = STEPS, epochs: int = 5,
                repeats: int = 3, replicas: int = 5) -> dict:
    """kind -> {"teacher_forced": s/epoch, "K": s/epoch, "ratio_K": free-running / teacher-forced}, medians over
    repeats; the sides alternate within each repeat."""
    spec = params.dataset(DATASET)
    data = generators.KINDS.get(params.data_kinds[DATASET]).generate(spec, DATASET,
                                                                    np.random.default_rng(params.data_seed))
    cpu = torch.device("cpu")
    train, val = fitting.tensors(data, "train", cpu), fitting.tensors(data, "val", cpu)
    seeds = [training.replica_seed(params.seed, r) for r in range(replicas)]
    torch.set_num_threads(params.threads or torch.get_num_threads())
    result = {}
    for kind in kinds:
        variant = params.variant(kind)
        shape = Shape(data.meta["n_features"], data.y_train.shape[-1], data.meta["window"], variant.hidden,
                      variant.layers)
        base = dataclasses.replace(params.training(DATASET, kind), patience=0, rollout_patience=0)

        def seconds(k: int) -> float:
            stack = ReplicaStack(kind, shape, seeds, variant.forget_bias)
            if k == 0:
                cfg = dataclasses.replace(base, epochs=epochs, rollout_steps=0)
                continued = None
            else:  # one teacher-forced epoch first (timed apart and subtracted), then the phase
                cfg = dataclasses.replace(base, epochs=1, rollout_steps=k, rollout_epochs=epochs)
                continued = fitting.continued_tensors(data, k, cpu)
            return timed(lambda: fitting.fit(stack, train, val, cfg, continued=continued))

        medians, runs, _ = alternating({str(k): (lambda k=k: seconds(k)) for k in (0, *steps)}, repeats,
                                       clock=lambda side: side())  # a side times its fit only, not its set-up
        teacher = medians["0"] / epochs
        row = {"teacher_forced": teacher, "runs": runs}
        for k in steps:
            per_epoch = (medians[str(k)] - teacher) / epochs
            row[str(k)] = per_epoch
            row[f"ratio_{k}"] = per_epoch / teacher
        result[kind] = row
    return {"dataset": DATASET, "replicas": replicas, "epochs": epochs, "repeats": repeats, "steps": list(steps),
            "kinds": result}
