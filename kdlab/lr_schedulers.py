"""Learning-rate schedules sized to the run: one-cycle and linear warm-up + cosine.

Such schedules need the run's length in scheduler steps, which depends on the epochs, the
dataset, the batch size, the number of processes and gradient accumulation. A YAML file that
hard-codes it breaks as soon as one of those is overridden, so these schedulers leave
``total_steps`` unset by default and take it from the run: :class:`kdlab.DistillationModule`
builds its scheduler inside :func:`run_length` with the trainer's estimate (optimizer steps with
``lr_scheduler_interval="step"``, epochs with ``"epoch"``). The length is part of the
scheduler's ``state_dict``, so a resumed run continues the same curve.

```yaml
model:
  init_args:
    lr_scheduler:
      class_path: kdlab.lr_schedulers.OneCycleLR
      init_args: {max_lr: 0.1}
    lr_scheduler_interval: step
```
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


@dataclass(frozen=True)
class RunLength:
    """A run's length in scheduler steps: in all, and per epoch."""

    total: int
    per_epoch: int


_RUN: ContextVar[Callable[[], RunLength] | None] = ContextVar("kdlab_run_length", default=None)


@contextmanager
def run_length(length: Callable[[], RunLength]) -> Iterator[None]:
    """Schedulers built inside this context take their length from ``length()`` (called lazily:
    only a scheduler that needs it asks the trainer)."""
    token = _RUN.set(length)
    try:
        yield
    finally:
        _RUN.reset(token)


def _current_run(owner: str) -> RunLength:
    length = _RUN.get()
    if length is None:
        raise ValueError(
            f"{owner}: total_steps is not set and no run is being configured; pass total_steps, or let "
            "kdlab.DistillationModule build the scheduler (model.init_args.lr_scheduler in YAML)"
        )
    run = length()
    if run.total < 1 or run.per_epoch < 1:
        raise ValueError(f"{owner}: the run has {run.total} scheduler steps ({run.per_epoch} per epoch)")
    return run


class OneCycleLR(torch.optim.lr_scheduler.OneCycleLR):
    """Super-Convergence: Very Fast Training of Neural Networks Using Large Learning Rates (Smith &
    Topin, 2019): torch's ``OneCycleLR``, whose length defaults to the run's.

    Args:
        optimizer: The optimizer whose learning rate is scheduled.
        max_lr: Peak learning rate (one per parameter group, or one for all).
        total_steps: Scheduler steps of the whole cycle; None: the run's length.
        pct_start: Fraction of the cycle spent increasing the learning rate.
        anneal_strategy: ``"cos"`` or ``"linear"`` annealing.
        cycle_momentum: Cycle momentum inversely to the learning rate (between ``base_momentum``
            and ``max_momentum``); False keeps the optimizer's momentum.
        base_momentum: Lowest momentum of the cycle.
        max_momentum: Highest momentum of the cycle.
        div_factor: The initial learning rate is ``max_lr / div_factor``.
        final_div_factor: The final learning rate is ``max_lr / (div_factor * final_div_factor)``.
        three_phase: Use fast.ai's three-phase variant.
        last_epoch: Index of the last step taken (-1 to start afresh).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | list[float],
        total_steps: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        if total_steps is None:
            total_steps = _current_run(type(self).__name__).total
        super().__init__(
            optimizer,
            max_lr,
            total_steps=total_steps,
            pct_start=pct_start,
            anneal_strategy=anneal_strategy,
            cycle_momentum=cycle_momentum,
            base_momentum=base_momentum,
            max_momentum=max_momentum,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
            three_phase=three_phase,
            last_epoch=last_epoch,
        )


class WarmupCosineLR(LRScheduler):
    """Linear warm-up (Accurate, Large Minibatch SGD, Goyal et al., 2017) then cosine annealing
    without restarts (SGDR, Loshchilov & Hutter, ICLR 2017), sized to the run.

    Step ``s`` (0-based, the ``s``-th scheduler step) uses ``lr * (f + (1 - f) * s / W)`` during
    the ``W`` warm-up steps (``f = warmup_start_factor``), then
    ``min_lr + (lr - min_lr) * (1 + cos(pi * (s - W) / (T - W))) / 2`` until ``T = total_steps``,
    ``lr`` being each parameter group's initial learning rate.

    Args:
        optimizer: The optimizer whose learning rate is scheduled.
        warmup_epochs: Length of the linear warm-up in epochs (fractions allowed when stepping
            per optimizer step).
        warmup_start_factor: Learning rate at the first step, as a fraction of the initial one.
        min_lr: Learning rate at the end of the cosine.
        total_steps: Scheduler steps of the whole run; None: the run's length.
        steps_per_epoch: Scheduler steps per epoch, to convert ``warmup_epochs``; None: the run's.
        last_epoch: Index of the last step taken (-1 to start afresh).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_epochs: float = 0.0,
        warmup_start_factor: float = 0.01,
        min_lr: float = 0.0,
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
        last_epoch: int = -1,
    ) -> None:
        if total_steps is None or steps_per_epoch is None:
            run = _current_run(type(self).__name__)
            total_steps = run.total if total_steps is None else total_steps
            steps_per_epoch = run.per_epoch if steps_per_epoch is None else steps_per_epoch
        if warmup_epochs < 0 or not 0 <= warmup_start_factor <= 1:
            raise ValueError(
                f"WarmupCosineLR: warmup_epochs must be >= 0 and warmup_start_factor in [0, 1], got "
                f"{warmup_epochs} and {warmup_start_factor}"
            )
        self.total_steps = int(total_steps)
        self.warmup_steps = round(warmup_epochs * steps_per_epoch)
        if self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"WarmupCosineLR: the warm-up ({self.warmup_steps} steps) must be shorter than the run "
                f"({self.total_steps} steps); lower warmup_epochs"
            )
        self.warmup_start_factor, self.min_lr = warmup_start_factor, min_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        step, warmup = self.last_epoch, self.warmup_steps
        if step < warmup:
            factor = self.warmup_start_factor + (1 - self.warmup_start_factor) * step / warmup
            return [base * factor for base in self.base_lrs]
        progress = min(1.0, (step - warmup) / (self.total_steps - warmup))
        cosine = (1 + math.cos(math.pi * progress)) / 2
        return [self.min_lr + (base - self.min_lr) * cosine for base in self.base_lrs]
