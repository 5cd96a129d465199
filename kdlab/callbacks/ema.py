"""An exponential moving average of the student's weights, evaluated and exported in its place.

After every optimizer step ``ema = decay * ema + (1 - decay) * weights`` over the student's
parameters and floating-point buffers (BatchNorm statistics; integer buffers are copied), the
averaging of Polyak & Juditsky (SIAM J. Control Optim., 1992) in its exponential form, as in Mean
Teacher (Tarvainen & Valpola, NeurIPS 2017) and timm's ``ModelEmaV2``. With ``warmup`` the decay
starts low and grows as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early weights
are not kept for thousands of steps.

Only the student is averaged: the teacher is frozen and the distillers' adapters are not
exported, so averaging them (as Lightning's whole-module ``EMAWeightAveraging`` does) would double
the teacher's memory for nothing. With ``evaluate`` (default) validation and test see the averaged
student, so ``val/acc1``, ``best.ckpt`` and early stopping judge the weights that will be used.
Checkpoints keep the trained weights as the ``state_dict`` (a resumed run continues exactly) and
the average under ``"ema_student"``; ``kdlab export`` writes the average when the run evaluated it
(``--weights ema|student`` chooses).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

EMA_KEY = "ema_student"
EVALUATED_KEY = "ema_student_evaluated"


class StudentEMA(Callback):
    """Keeps an exponential moving average of the student's weights.

    Args:
        decay: Weight of the running average at each update, in [0, 1).
        warmup: Grow the decay from 0.1 towards ``decay`` over the first updates.
        every_n_steps: Update after every this many optimizer steps.
        evaluate: Validate and test the averaged student instead of the trained one.
    """

    def __init__(
        self, decay: float = 0.999, warmup: bool = True, every_n_steps: int = 1, evaluate: bool = True
    ) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"StudentEMA: decay must be in [0, 1), got {decay}")
        if every_n_steps < 1:
            raise ValueError(f"StudentEMA: every_n_steps must be at least 1, got {every_n_steps}")
        self.decay, self.warmup, self.every_n_steps, self.evaluate = decay, warmup, every_n_steps, evaluate
        self.average: dict[str, Tensor] | None = None
        self.updates = 0
        self._last_step = -1
        self._trained: dict[str, Tensor] | None = None  # the trained weights while the average is in

    # ----------------------------------------------------------------------------- averaging
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.average is None:
            self.average = _copy(_student(pl_module).state_dict())
        else:  # restored from a checkpoint: onto the student's device
            device = next(_student(pl_module).parameters()).device
            self.average = {name: value.to(device) for name, value in self.average.items()}

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == self._last_step or step % self.every_n_steps:  # accumulating, or not this step
            return
        self._last_step = step
        self.update(_student(pl_module).state_dict())

    @torch.no_grad()
    def update(self, weights: dict[str, Tensor]) -> None:
        """One averaging step towards ``weights`` (the student's state dict)."""
        if self.average is None:
            self.average = _copy(weights)
            return
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay
        for name, value in weights.items():
            average = self.average[name]
            if average.is_floating_point():
                average.lerp_(value.detach().to(average.dtype), 1 - decay)
            else:
                average.copy_(value)
        self.updates += 1

    # ----------------------------------------------------------------------------- evaluation
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._swap_in(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._swap_out(pl_module)

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._swap_in(trainer, pl_module)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._swap_out(pl_module)

    def _swap_in(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.evaluate:
            return
        if self.average is None:  # no average yet, nor one in the checkpoint evaluated
            return
        student = _student(pl_module)
        self._trained = _copy(student.state_dict())
        student.load_state_dict(self.average)

    def _swap_out(self, pl_module: LightningModule) -> None:
        if self._trained is not None:
            _student(pl_module).load_state_dict(self._trained)
            self._trained = None

    # ----------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.average is not None:
            checkpoint[EMA_KEY] = {f"student.{name}": value.cpu() for name, value in self.average.items()}
            checkpoint[EVALUATED_KEY] = self.evaluate

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Lightning calls it whenever a stage restores a checkpoint: a resumed fit, validate/test.
        if EMA_KEY in checkpoint:
            self.average = _strip(checkpoint[EMA_KEY])

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.updates, self._last_step = int(state_dict["updates"]), int(state_dict["last_step"])


def _student(pl_module: LightningModule) -> torch.nn.Module:
    student = getattr(pl_module, "student", None)
    if not isinstance(student, torch.nn.Module):
        raise TypeError("StudentEMA needs a module with a `student` network (kdlab.DistillationModule)")
    return student


def _copy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: value.detach().clone() for name, value in state.items()}


def _strip(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name.removeprefix("student."): value for name, value in state.items()}
