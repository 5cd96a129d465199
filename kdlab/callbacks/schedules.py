"""Temperature and loss-weight schedules: callbacks that set distiller attributes as training goes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from lightning.pytorch import LightningModule, Trainer

from kdlab.callbacks.targets import DistillerSchedule

KINDS = ("constant", "linear", "cosine", "step")


def schedule_value(
    kind: str,
    start: float,
    end: float | None,
    t: int,
    duration: float,
    milestones: Sequence[int] = (),
    gamma: float = 1.0,
) -> float:
    """Value of a schedule at time ``t`` (an epoch or step index counted from 0).

    ``constant``: ``start``; ``linear`` and ``cosine``: from ``start`` at ``t = 0`` to ``end``
    at ``t = duration`` (held after); ``step``: ``start · gamma^k``, k the number of
    ``milestones`` ≤ t.
    """
    if kind == "constant":
        return start
    if kind == "step":
        return start * gamma ** sum(t >= m for m in milestones)
    progress = min(max(t / duration, 0.0), 1.0)
    if kind == "linear":
        return start + (end - start) * progress
    return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2


class TemperatureSchedule(DistillerSchedule):
    """Schedule the ``temperature`` of distillers: constant, linear, cosine or step.

    Example (anneal every temperature from 8 to 2 over the run)::

        trainer:
          callbacks:
            - class_path: kdlab.callbacks.TemperatureSchedule
              init_args: {kind: cosine, start: 8.0, end: 2.0}

    Logged as ``schedule/temperature`` when one value applies to every distiller with a
    temperature (``distillers`` None and ``start`` given), else per distiller as
    ``schedule/<name>/temperature``. Not to be combined with :class:`~kdlab.callbacks.CTKD`
    on the same distiller (refused at setup).

    Args:
        kind: ``constant`` (``start``), ``linear`` or ``cosine`` (``start`` → ``end`` over
            ``duration``), or ``step`` (``start`` multiplied by ``gamma`` at each milestone).
        start: Temperature at the beginning; None starts each distiller at its own
            configured temperature.
        end: Temperature at the end of ``duration`` (linear and cosine only).
        interval: ``epoch`` (the value changes at epoch starts) or ``step`` (every optimizer step).
        duration: Length of the linear/cosine ramp in ``interval`` units; None means the
            whole run (``trainer.max_epochs`` or the estimated number of optimizer steps).
        milestones: ``step`` kind: the epochs (or steps) at which the temperature is multiplied by ``gamma``.
        gamma: ``step`` kind: the multiplier at each milestone.
        distillers: Names of the distillers to schedule (e.g. ``["kd"]``); None means every
            distiller that has a ``temperature``.
    """

    controls = "temperature"
    log_name = "temperature"

    def __init__(
        self,
        kind: Literal["constant", "linear", "cosine", "step"] = "constant",
        start: float | None = None,
        end: float | None = None,
        interval: Literal["epoch", "step"] = "epoch",
        duration: int | None = None,
        milestones: list[int] | None = None,
        gamma: float = 0.5,
        distillers: list[str] | None = None,
    ) -> None:
        super().__init__(distillers, interval)
        _check_kind(kind, start, end, milestones, gamma, duration)
        self.kind = kind
        self.start = None if start is None else float(start)
        self.end = None if end is None else float(end)
        self.duration = duration
        self.milestones = sorted(milestones or [])
        self.gamma = float(gamma)
        self._duration: float | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.duration is not None:
            self._duration = float(self.duration)
        elif self._duration is None:  # a resumed run keeps the length it started with
            self._duration = _run_length(trainer, self.interval, type(self).__name__, self.kind)

    def value(self, name: str, t: int) -> float:
        start = self._base[name] if self.start is None else self.start
        return schedule_value(
            self.kind, start, self.end, t, self._duration or 1.0, self.milestones, self.gamma
        )

    def logged(self, values: dict[str, float]) -> dict[str, float]:
        if self.distillers is None and self.start is not None:
            return {"schedule/temperature": next(iter(values.values()))}
        return super().logged(values)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        if self.duration is None:
            self._duration = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "duration": self._duration}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._duration = state_dict.get("duration")


class LossWeightSchedule(DistillerSchedule):
    """Warm up the ``weight`` of distillers linearly over the first epochs.

    At epoch ``e`` (counted from 0) the weight is ``w · (start_factor + (end_factor −
    start_factor) · min((e + 1) / warmup_epochs, 1))``, ``w`` being the distiller's
    configured weight. With the defaults this is the DKD / ReviewKD warm-up
    ``min(epoch / 20, 1) · w`` of the authors' code, whose epoch counter starts at 1: the
    first epoch already trains with 1/20 of the weight. Logged as ``schedule/<name>/weight``.

    Args:
        warmup_epochs: Epochs to reach ``end_factor``; 0 applies ``end_factor`` from the start.
        start_factor: Fraction of the configured weight the ramp starts from (at "epoch 0").
        end_factor: Fraction of the configured weight reached after the warm-up.
        distillers: Names of the distillers to warm up; None means all of them.
    """

    controls = "weight"
    log_name = "weight"

    def __init__(
        self,
        warmup_epochs: int = 20,
        start_factor: float = 0.0,
        end_factor: float = 1.0,
        distillers: list[str] | None = None,
    ) -> None:
        super().__init__(distillers, "epoch")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(
                f"LossWeightSchedule: warmup_epochs must be an integer >= 0, got {warmup_epochs!r}"
            )
        for label, factor in (("start_factor", start_factor), ("end_factor", end_factor)):
            if not isinstance(factor, (int, float)) or not factor >= 0:
                raise ValueError(f"LossWeightSchedule: {label} must be a number >= 0, got {factor!r}")
        self.warmup_epochs = warmup_epochs
        self.start_factor = float(start_factor)
        self.end_factor = float(end_factor)

    def factor(self, epoch: int) -> float:
        """The multiplier of the configured weight at ``epoch`` (counted from 0)."""
        if self.warmup_epochs == 0:
            return self.end_factor
        progress = min((epoch + 1) / self.warmup_epochs, 1.0)
        return self.start_factor + (self.end_factor - self.start_factor) * progress

    def value(self, name: str, t: int) -> float:
        return self._base[name] * self.factor(t)


def _check_kind(
    kind: str,
    start: float | None,
    end: float | None,
    milestones: list[int] | None,
    gamma: float,
    duration: int | None,
) -> None:
    name = "TemperatureSchedule"
    if kind not in KINDS:
        raise ValueError(f"{name}: unknown kind {kind!r}; choose one of {KINDS}")
    for label, value in (("start", start), ("end", end)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
        ):
            raise ValueError(f"{name}: {label} must be a temperature > 0, got {value!r}")
    if kind == "constant" and start is None:
        raise ValueError(f"{name}: kind='constant' needs start (the temperature to hold)")
    if kind in ("linear", "cosine") and end is None:
        raise ValueError(f"{name}: kind={kind!r} needs end (the temperature reached after `duration`)")
    if kind not in ("linear", "cosine") and end is not None:
        raise ValueError(f"{name}: end is only used by kind 'linear' or 'cosine', not {kind!r}")
    if kind == "step":
        if not milestones or not all(isinstance(m, int) and m >= 0 for m in milestones):
            raise ValueError(
                f"{name}: kind='step' needs milestones, a list of epochs/steps >= 0, got {milestones!r}"
            )
        if not isinstance(gamma, (int, float)) or not gamma > 0:
            raise ValueError(f"{name}: gamma must be > 0 (it multiplies the temperature), got {gamma!r}")
    elif milestones:
        raise ValueError(f"{name}: milestones are only used by kind 'step', not {kind!r}")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int) or duration <= 0
    ):
        raise ValueError(f"{name}: duration must be a positive integer or None, got {duration!r}")


def _run_length(trainer: Trainer, interval: str, owner: str, kind: str) -> float | None:
    if kind not in ("linear", "cosine"):
        return None
    length = trainer.max_epochs if interval == "epoch" else trainer.estimated_stepping_batches
    if length is None or length < 0 or math.isinf(length):
        raise ValueError(
            f"{owner}: the run has no fixed length (max_epochs={trainer.max_epochs}); set `duration` "
            f"in {interval}s for the {kind} schedule."
        )
    return float(length)
