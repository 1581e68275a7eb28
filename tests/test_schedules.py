"""Learning-rate schedules: each one's curve, and that training follows it epoch by epoch."""

import dataclasses
import math

import pytest

from pipeline.files import datasets
from pipeline.learning import fitting, schedules
from pipeline.files.artifacts import Paths
from pipeline.params import TrainParams

from test_training import sine, split, tiny_stack  # noqa: F401 (sine is a fixture)

BASE = TrainParams(epochs=20, lr=0.01)


def curve(cfg: TrainParams) -> list[float]:
    return [schedules.learning_rate(cfg, epoch) for epoch in range(1, cfg.epochs + 1)]


def test_constant_is_lr_every_epoch():
    assert curve(BASE) == [0.01] * 20


def test_exponential_multiplies_by_the_decay_each_epoch():
    rates = curve(dataclasses.replace(BASE, schedule="exponential", lr_decay=0.9))
    assert rates[0] == 0.01
    assert all(b / a == pytest.approx(0.9, rel=1e-12) for a, b in zip(rates, rates[1:]))
    assert rates[-1] == pytest.approx(0.01 * 0.9 ** 19, rel=1e-12)


def test_cosine_falls_from_lr_towards_lr_min_through_the_midpoint():
    cfg = dataclasses.replace(BASE, schedule="cosine", lr_min=0.001)
    rates = curve(cfg)
    assert rates[0] == 0.01
    assert all(b < a for a, b in zip(rates, rates[1:]))  # strictly falling
    assert rates[10] == pytest.approx((0.01 + 0.001) / 2, rel=1e-12)  # epoch 11: half of the way
    assert rates[-1] > 0.001 and schedules.learning_rate(cfg, 21) == pytest.approx(0.001, rel=1e-12)


def test_epochs_count_from_one():
    with pytest.raises(ValueError):
        schedules.learning_rate(BASE, 0)


@pytest.mark.parametrize("schedule", ["constant", "exponential", "cosine"])
def test_training_uses_the_schedule_epoch_by_epoch(sine, monkeypatch, schedule):
    """fit sets the optimizer's rate from the schedule at the start of every epoch it runs."""
    seen = []
    original = fitting.Adam.step

    def recording(self):
        seen.append(self.lr)
        return original(self)

    monkeypatch.setattr(fitting.Adam, "step", recording)
    data = datasets.load(Paths().dataset("sine"))
    cfg = dataclasses.replace(sine.train, epochs=3, patience=5, schedule=schedule, lr_decay=0.5, lr_min=0.0)
    history, = fitting.fit(tiny_stack("rnn", data), split(data, "train"), split(data, "val"), cfg)
    batches = math.ceil(len(data.x_train) / cfg.batch_size)
    expected = [schedules.learning_rate(cfg, epoch) for epoch in (1, 2, 3) for _ in range(batches)]
    assert seen == expected and len(history.rows) == 3
