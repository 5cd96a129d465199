"""SLURM requeue at a clean point: the end of a training step.

With ``SLURMEnvironment(auto_requeue=True)`` (Lightning's default when it runs under SLURM), the
signal SLURM sends before the time limit (``#SBATCH --signal=USR1@90``) makes Lightning write
``<default_root_dir>/hpc_ckpt_<n>.ckpt`` and call ``scontrol requeue $SLURM_JOB_ID``; the
requeued job runs the same command and Lightning resumes from the newest ``hpc_ckpt`` file
(``ckpt_path=None`` under SLURM, or ``ckpt_path="hpc"``).

Lightning writes that checkpoint inside the signal handler, i.e. wherever Python happens to be:
in the middle of a forward pass, between ``backward`` and the optimizer step, or while the data
loader advances. Such a checkpoint records a half-done step, and the resumed run differs from an
uninterrupted one. :class:`RequeueAtStepEnd` keeps Lightning's mechanism and only moves it: the
signal is noted, and Lightning's handler runs at the end of the current training step, on every
DDP rank at the same step.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer


class RequeueAtStepEnd(Callback):
    """Defers Lightning's SLURM auto-requeue handler to the end of the current training step.

    Inactive unless the run's cluster environment is ``SLURMEnvironment`` with ``auto_requeue``.
    A signal that arrives during validation is handled after the next training step. The
    ``kdlab`` command adds this callback by default.
    """

    def __init__(self) -> None:
        self._signal: int | None = None
        self._handler: Callable[[int, FrameType | None], Any] | None = None
        self._pending = False

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Single-device strategies do not carry the environment; the connector always does.
        environment = getattr(trainer.strategy, "cluster_environment", None) or getattr(
            getattr(trainer, "_accelerator_connector", None), "cluster_environment", None
        )
        if not isinstance(environment, SLURMEnvironment) or not environment.auto_requeue:
            return
        signum = environment.requeue_signal or signal.SIGUSR1
        handler = signal.getsignal(signum)
        if not callable(handler):  # Lightning installs its handler only where it can
            return
        try:
            signal.signal(signum, self._note)
        except ValueError:  # not the main thread: leave Lightning's handler in place
            return
        self._signal, self._handler, self._pending = signum, handler, False

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self._pending = True

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self._handler is None:
            return
        pending = self._pending
        if trainer.world_size > 1:
            # Ranks may receive the signal during different steps; they must save together.
            pending = trainer.strategy.reduce_boolean_decision(pending, all=False)
        if pending:
            self._pending = False
            self._handler(self._signal, None)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._give_back()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._give_back()

    def _give_back(self) -> None:
        if self._handler is not None and self._signal is not None:
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(self._signal, self._handler)
        self._signal, self._handler = None, None
