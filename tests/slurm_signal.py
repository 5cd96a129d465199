"""Plays SLURM's part in the requeue test: the time limit nears (SIGUSR1), then the job is killed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, Trainer


class RequeueAt(Callback):
    """After training step ``step`` of a run without an HPC checkpoint yet, send this process
    SIGUSR1 (as ``--signal=SIGUSR1@90`` does); before the next step, wait for Lightning's handler
    to have written ``hpc_ckpt_*.ckpt``, then end the process abruptly, as SLURM ends a job at its
    time limit. The wait is not in the step's own hooks: kdlab's ``RequeueAtStepEnd`` runs
    Lightning's handler at the end of the step, after this callback's hook has returned.

    Args:
        step: The global step after which the signal comes.
    """

    def __init__(self, step: int = 3) -> None:
        self.step = step
        self._signalled = False

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        root = Path(trainer.default_root_dir)
        if trainer.global_step == self.step and not any(root.glob("hpc_ckpt_*.ckpt")):
            os.kill(os.getpid(), signal.SIGUSR1)
            self._signalled = True

    def on_train_batch_start(self, trainer: Trainer, *args: Any) -> None:
        if self._signalled:
            self._end(Path(trainer.default_root_dir))

    def on_train_epoch_end(self, trainer: Trainer, *args: Any) -> None:
        if self._signalled:
            self._end(Path(trainer.default_root_dir))

    @staticmethod
    def _end(root: Path) -> None:
        deadline = time.monotonic() + 60
        while not any(root.glob("hpc_ckpt_*.ckpt")) and time.monotonic() < deadline:
            time.sleep(0.1)
        os._exit(143)
