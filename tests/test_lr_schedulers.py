"""Learning-rate schedules stepped per optimizer step or per epoch, sized to the run, from YAML, and
continued exactly after a resume from the middle of an epoch."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from torch.optim import SGD

from kdlab import DistillationModule
from kdlab.cli import KDLabCLI
from kdlab.data import DigitsDataModule
from kdlab.errors import ConfigurationError
from kdlab.lr_schedulers import OneCycleLR, RunLength, WarmupCosineLR, run_length
from kdlab.models import MLP

from .kdlab_runs import QUIET, REPO

BATCHES = 12  # DigitsDataModule(batch_size=96): 1078 training images


class LearningRates(Callback):
    """The learning rate each training step runs with; optionally saves a checkpoint and stops."""

    def __init__(self, stop_at: int | None = None, path: str | None = None) -> None:
        self.seen: list[float] = []
        self.stop_at, self.path = stop_at, path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.stop_at:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True  # ends the fit after this step, like a pre-empted job


def module(scheduler, interval: str) -> DistillationModule:
    seed_everything(0, verbose=False)
    return DistillationModule(
        MLP(hidden=[8]),
        optimizer=partial(SGD, lr=0.1, momentum=0.9),
        lr_scheduler=scheduler,
        lr_scheduler_interval=interval,
    )


def fit(model, trainer_kwargs, epochs: int, callbacks: list, ckpt_path=None) -> None:
    kwargs = trainer_kwargs | {"max_epochs": epochs, "limit_val_batches": 0, "num_sanity_val_steps": 0}
    Trainer(callbacks=callbacks, **kwargs).fit(model, DigitsDataModule(batch_size=96), ckpt_path=ckpt_path)


def reference(scheduler_factory, steps: int) -> list[float]:
    """The learning rate of each of ``steps`` steps of a scheduler stepped by hand."""
    optimizer = SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    scheduler = scheduler_factory(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_one_cycle_per_step_is_sized_to_the_run_and_follows_torch(trainer_kwargs):
    rates = LearningRates()
    fit(module(partial(OneCycleLR, max_lr=0.5), "step"), trainer_kwargs, 3, [rates])
    expected = reference(
        partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.5, total_steps=3 * BATCHES), 3 * BATCHES
    )
    assert len(rates.seen) == 3 * BATCHES
    assert rates.seen == pytest.approx(expected, rel=1e-12)
    assert max(rates.seen) == pytest.approx(0.5, rel=1e-3) and rates.seen[-1] < 1e-4


def test_per_epoch_interval_changes_the_rate_only_between_epochs(trainer_kwargs):
    rates = LearningRates()
    fit(module(partial(WarmupCosineLR, warmup_epochs=1), "epoch"), trainer_kwargs, 4, [rates])
    per_epoch = [rates.seen[i * BATCHES : (i + 1) * BATCHES] for i in range(4)]
    assert all(len(set(epoch)) == 1 for epoch in per_epoch)
    # 1 warm-up epoch at 0.01 × lr, then a cosine over the 3 remaining epochs
    cosine = [0.1 * (1 + math.cos(math.pi * k / 3)) / 2 for k in range(3)]
    assert [epoch[0] for epoch in per_epoch] == pytest.approx([0.001, *cosine])


def test_warmup_cosine_per_step_warms_up_over_whole_epochs(trainer_kwargs):
    rates = LearningRates()
    scheduler = partial(WarmupCosineLR, warmup_epochs=0.5, warmup_start_factor=0.0, min_lr=0.01)
    fit(module(scheduler, "step"), trainer_kwargs, 2, [rates])
    warmup, total = BATCHES // 2, 2 * BATCHES
    assert rates.seen[:warmup] == pytest.approx([0.1 * s / warmup for s in range(warmup)])
    cosine = [
        0.01 + 0.09 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))) / 2
        for s in range(warmup, total)
    ]
    assert rates.seen[warmup:] == pytest.approx(cosine)


def test_step_schedule_continues_exactly_after_a_mid_epoch_resume(trainer_kwargs, tmp_path):
    scheduler = partial(OneCycleLR, max_lr=0.5)
    whole = LearningRates()
    fit(module(scheduler, "step"), trainer_kwargs, 3, [whole])
    path = str(tmp_path / "mid.ckpt")
    first = LearningRates(stop_at=BATCHES + 5, path=path)  # 5 steps into the second epoch
    fit(module(scheduler, "step"), trainer_kwargs, 3, [first])
    resumed = LearningRates()
    fit(module(scheduler, "step"), trainer_kwargs, 3, [resumed], ckpt_path=path)
    assert len(first.seen) == BATCHES + 5 and len(resumed.seen) == 2 * BATCHES - 5
    assert first.seen + resumed.seen == whole.seen


def test_schedulers_sized_to_the_run_need_one():
    optimizer = SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="total_steps is not set and no run is being configured"):
        OneCycleLR(optimizer, max_lr=0.1)
    with run_length(lambda: RunLength(total=10, per_epoch=5)):
        assert OneCycleLR(optimizer, max_lr=0.1).total_steps == 10
        with pytest.raises(ValueError, match=r"warm-up \(10 steps\) must be shorter than the run"):
            WarmupCosineLR(optimizer, warmup_epochs=2)


def test_interval_is_checked():
    with pytest.raises(ConfigurationError, match="lr_scheduler_interval must be 'epoch' or 'step'"):
        DistillationModule(MLP(), lr_scheduler_interval="batch")


def test_cifar10_recipe_steps_a_one_cycle_per_batch_from_yaml(tmp_path):
    cli = KDLabCLI(
        args=[
            f"--config={REPO / 'experiments/cifar10/base.yaml'}",
            f"--config={REPO / 'experiments/cifar10/vanilla.yaml'}",
            f"--trainer.default_root_dir={tmp_path}",
            *QUIET,
        ],
        run=False,
    )
    model = cli.model
    assert model.lr_scheduler_interval == "step"
    with run_length(lambda: RunLength(total=3910, per_epoch=391)):
        scheduler = model.lr_scheduler_factory(model.optimizer_factory(model.trainable_parameters()))
    assert isinstance(scheduler, OneCycleLR) and scheduler.total_steps == 3910
    assert scheduler.optimizer.param_groups[0]["nesterov"]
