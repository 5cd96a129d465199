"""TemperatureSchedule and LossWeightSchedule: values, errors, and exact continuation after resume."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from kdlab import DistillationModule
from kdlab.callbacks import CTKD, LossWeightSchedule, TemperatureSchedule
from kdlab.callbacks.schedules import schedule_value
from kdlab.losses import DKD, KD, MLKD
from kdlab.models import MLP, ConvNet


class Recording(KD):
    """KD that records the temperature and weight it is called with."""

    def __init__(self, weight: float = 0.9, temperature: float = 4.0) -> None:
        super().__init__(weight, temperature)
        self.seen: list[tuple[float, float]] = []

    @property
    def name(self) -> str:
        return "kd"

    def forward(self, student, teacher, batch):
        self.seen.append((float(self.temperature), self.weight))
        return super().forward(student, teacher, batch)


def loader(samples: int = 128, batch_size: int = 32) -> DataLoader:
    """Digits in a fixed order (no shuffling), so interrupted and whole runs see the same batches."""
    digits = load_digits()
    images = torch.tensor(digits.images[:samples], dtype=torch.float32).unsqueeze(1) / 16.0
    targets = torch.tensor(digits.target[:samples])
    return DataLoader(TensorDataset(images, targets, torch.arange(samples)), batch_size=batch_size)


def build(*distillers, seed: int = 0) -> DistillationModule:
    """The same random teacher every time; the student initialised from ``seed``."""
    seed_everything(0, verbose=False)
    teacher = ConvNet(width=4)
    seed_everything(seed, verbose=False)
    return DistillationModule(MLP(hidden=[16]), teacher, distillers=list(distillers), ce_weight=0.1)


def fit(module, callbacks, trainer_kwargs, max_epochs=4, ckpt_path=None):
    kwargs = trainer_kwargs | {"max_epochs": max_epochs, "limit_val_batches": 0, "num_sanity_val_steps": 0}
    trainer = Trainer(callbacks=callbacks, **kwargs)
    trainer.fit(module, train_dataloaders=loader(), ckpt_path=ckpt_path)
    return trainer


def per_epoch(seen: list, batches: int = 4) -> list:
    """The values of each epoch, checking they are constant within it."""
    epochs = [seen[i : i + batches] for i in range(0, len(seen), batches)]
    assert all(len(set(epoch)) == 1 for epoch in epochs), epochs
    return [epoch[0] for epoch in epochs]


# ----------------------------------------------------------------------------- values
def test_schedule_shapes():
    assert schedule_value("constant", 4.0, None, 7, 10) == 4.0
    assert [schedule_value("linear", 8.0, 2.0, t, 4) for t in (0, 1, 2, 4, 9)] == [8.0, 6.5, 5.0, 2.0, 2.0]
    assert schedule_value("cosine", 8.0, 2.0, 0, 10) == 8.0
    assert schedule_value("cosine", 8.0, 2.0, 5, 10) == pytest.approx(5.0)
    assert schedule_value("cosine", 8.0, 2.0, 2, 10) == pytest.approx(
        2 + 6 * (1 + math.cos(0.2 * math.pi)) / 2
    )
    assert schedule_value("cosine", 8.0, 2.0, 12, 10) == pytest.approx(2.0)
    assert [schedule_value("step", 4.0, None, t, 0, [2, 5], 0.5) for t in (0, 1, 2, 4, 5, 9)] == [
        4,
        4,
        2,
        2,
        1,
        1,
    ]


def test_loss_weight_factor_is_the_dkd_warmup():
    schedule = LossWeightSchedule(warmup_epochs=20)
    assert [schedule.factor(e) for e in (0, 1, 9, 19, 20, 100)] == [0.05, 0.1, 0.5, 1.0, 1.0, 1.0]
    ramp = LossWeightSchedule(warmup_epochs=4, start_factor=0.5, end_factor=2.0)
    assert [ramp.factor(e) for e in range(5)] == [0.875, 1.25, 1.625, 2.0, 2.0]
    assert LossWeightSchedule(warmup_epochs=0, end_factor=0.3).factor(0) == 0.3


# ----------------------------------------------------------------------------- in a real fit
def test_temperature_schedule_per_epoch(trainer_kwargs):
    kd = Recording()
    trainer = fit(build(kd), [TemperatureSchedule(kind="linear", start=8.0, end=2.0)], trainer_kwargs)
    assert [t for t, _ in per_epoch(kd.seen)] == [8.0, 6.5, 5.0, 3.5]
    assert trainer.callback_metrics["schedule/temperature"] == pytest.approx(3.5)
    assert kd.temperature == 4.0, "teardown leaves the configured temperature"


def test_temperature_schedule_per_step(trainer_kwargs):
    kd = Recording()
    schedule = TemperatureSchedule(kind="cosine", start=6.0, end=2.0, interval="step", duration=6)
    fit(build(kd), [schedule], trainer_kwargs, max_epochs=2)
    expected = [2 + 4 * (1 + math.cos(math.pi * min(step / 6, 1))) / 2 for step in range(8)]
    assert [t for t, _ in kd.seen] == pytest.approx(expected)


def test_step_schedule_of_a_named_distiller(trainer_kwargs):
    kd, dkd = Recording(), DKD(temperature=4.0)
    seen = []
    dkd.register_forward_pre_hook(lambda module, args: seen.append(module.temperature))
    schedule = TemperatureSchedule(kind="step", start=4.0, milestones=[1, 2], gamma=0.5, distillers=["dkd"])
    trainer = fit(build(kd, dkd), [schedule], trainer_kwargs, max_epochs=3)
    assert per_epoch(seen) == [4.0, 2.0, 1.0]
    assert {t for t, _ in kd.seen} == {4.0}, "distillers not named keep their temperature"
    assert trainer.callback_metrics["schedule/dkd/temperature"] == pytest.approx(1.0)


def test_schedule_without_start_begins_at_each_distillers_temperature(trainer_kwargs):
    kd, dkd = Recording(temperature=4.0), DKD(temperature=2.0)
    seen = []
    dkd.register_forward_pre_hook(lambda module, args: seen.append(module.temperature))
    trainer = fit(
        build(kd, dkd), [TemperatureSchedule(kind="linear", end=1.0, duration=2)], trainer_kwargs, 3
    )
    assert [t for t, _ in per_epoch(kd.seen)] == [4.0, 2.5, 1.0]
    assert per_epoch(seen) == [2.0, 1.5, 1.0]
    assert {"schedule/kd/temperature", "schedule/dkd/temperature"} <= set(trainer.callback_metrics)


def test_loss_weight_warmup_in_a_fit(trainer_kwargs):
    kd = Recording(weight=2.0)
    trainer = fit(build(kd), [LossWeightSchedule(warmup_epochs=3)], trainer_kwargs, max_epochs=5)
    assert [w for _, w in per_epoch(kd.seen)] == pytest.approx([2 / 3, 4 / 3, 2.0, 2.0, 2.0])
    assert trainer.callback_metrics["schedule/kd/weight"] == pytest.approx(2.0)
    assert kd.weight == 2.0


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("build_schedule", "message"),
    [
        (lambda: TemperatureSchedule(kind="constant", start=-1.0), "start must be a temperature > 0"),
        (lambda: TemperatureSchedule(kind="linear", start=4.0, end=0.0), "end must be a temperature > 0"),
        (lambda: TemperatureSchedule(kind="exponential", start=4.0), "unknown kind 'exponential'.*constant"),
        (lambda: TemperatureSchedule(kind="constant"), "needs start"),
        (lambda: TemperatureSchedule(kind="cosine", start=4.0), "needs end"),
        (lambda: TemperatureSchedule(kind="step", start=4.0), "needs milestones"),
        (lambda: TemperatureSchedule(kind="step", start=4.0, milestones=[3], gamma=0.0), "gamma must be > 0"),
        (lambda: TemperatureSchedule(kind="constant", start=4.0, end=2.0), "end is only used"),
        (
            lambda: TemperatureSchedule(kind="linear", start=4, end=2, interval="batch"),
            "interval must be one of",
        ),
        (
            lambda: TemperatureSchedule(kind="linear", start=4, end=2, duration=0),
            "duration must be a positive",
        ),
        (lambda: TemperatureSchedule(kind="constant", start=4.0, distillers=[]), "non-empty list"),
        (lambda: LossWeightSchedule(warmup_epochs=-1), "warmup_epochs must be an integer >= 0"),
        (lambda: LossWeightSchedule(start_factor=-0.5), "start_factor must be a number >= 0"),
    ],
)
def test_invalid_schedules_fail_at_construction(build_schedule, message):
    with pytest.raises(ValueError, match=message):
        build_schedule()


@pytest.mark.parametrize(
    ("distillers", "callbacks", "message"),
    [
        (
            [KD()],
            [TemperatureSchedule(start=2.0, distillers=["dkd"])],
            r"unknown distiller name\(s\) \['dkd'\].*\['kd'\]",
        ),
        ([MLKD()], [TemperatureSchedule(start=2.0)], r"no distiller has a `temperature`.*\['mlkd'\]"),
        (
            [KD(), MLKD()],
            [TemperatureSchedule(start=2.0, distillers=["mlkd"])],
            "have no `temperature`.*those that do",
        ),
        ([KD()], [TemperatureSchedule(start=2.0), CTKD()], "TemperatureSchedule and CTKD would both set"),
        ([KD()], [LossWeightSchedule(), LossWeightSchedule(distillers=["kd"])], "both set the `weight`"),
    ],
)
def test_invalid_targets_fail_at_setup(trainer_kwargs, distillers, callbacks, message):
    with pytest.raises(ValueError, match=message):
        fit(build(*distillers), callbacks, trainer_kwargs, max_epochs=1)


# ----------------------------------------------------------------------------- resume
class StopAfter(Callback):
    """Ends the fit after ``epochs`` epochs, as a pre-empted job would."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def schedules():
    return [
        TemperatureSchedule(kind="cosine", start=8.0, end=1.0, interval="step"),
        LossWeightSchedule(warmup_epochs=3),
    ]


def test_schedules_continue_identically_after_resume(trainer_kwargs, tmp_path):
    whole = Recording()
    fit(build(whole), schedules(), trainer_kwargs, max_epochs=5)

    first = Recording()
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    kwargs = trainer_kwargs | {"enable_checkpointing": True}
    fit(build(first), [*schedules(), StopAfter(2), checkpoints], kwargs, max_epochs=5)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    states = {key.split("{")[0]: value for key, value in saved["callbacks"].items() if "Schedule" in key}
    assert (
        states["TemperatureSchedule"]["base"] == {"kd": 4.0}
        and states["TemperatureSchedule"]["duration"] == 20
    )
    assert states["LossWeightSchedule"]["base"] == {"kd": 0.9}

    resumed = Recording()
    fit(
        build(resumed, seed=1),
        schedules(),
        trainer_kwargs,
        max_epochs=5,
        ckpt_path=tmp_path / "ckpt" / "last.ckpt",
    )
    assert len(first.seen) == 8 and len(resumed.seen) == 12
    assert first.seen + resumed.seen == whole.seen
