"""Per-step training curves, when asked: the loss terms and learning rates every N optimizer steps.

:class:`kdlab.DistillationModule` logs epoch means (per-step ``self.log`` calls cost about a
millisecond of Python per key, more than a small student's step on a GPU). This callback writes
the last step's terms straight to the run's loggers every ``every_n_steps`` optimizer steps, with
the global step as x-axis (W&B charts by step, CSV rows with ``step``): one host sync per write.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class StepLogging(Callback):
    """Logs ``step/loss``, ``step/<term>`` and ``step/lr`` (``step/lr_<k>`` for several parameter
    groups) every ``every_n_steps`` optimizer steps.

    Args:
        every_n_steps: Steps between writes; None for the trainer's ``log_every_n_steps``.
    """

    def __init__(self, every_n_steps: int | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"StepLogging: every_n_steps must be at least 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        # Here, not at the batch end: the learning rate is the one this step uses (an epoch-wise
        # scheduler has already moved on when the epoch's last batch ends).
        step = trainer.global_step + 1  # the optimizer steps taken once this one is
        interval = self.every_n_steps or trainer.log_every_n_steps
        if step % interval or not trainer.loggers or not trainer.is_global_zero:
            return
        terms = getattr(pl_module, "step_terms", None) or {}
        if not terms:
            return
        metrics = {f"step/{name}": float(value) for name, value in terms.items()}
        metrics["step/loss"] = sum(metrics.values())
        groups = optimizer.param_groups
        for k, group in enumerate(groups):
            metrics["step/lr" if len(groups) == 1 else f"step/lr_{k}"] = float(group["lr"])
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
