"""Pieces that reliability tests put into ``kdlab fit`` runs by class path (tests.reliability_helpers.X).

Runs started as subprocesses import them too, so they live in an importable module, not in a test.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import Callback

from kdlab.checkpointing import AtomicCheckpointIO
from kdlab.losses.base import Distiller
from kdlab.losses.kd import kd_loss
from kdlab.models import MLP
from kdlab.outputs import Batch, Outputs


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class PauseAt(Callback):
    """Holds the run at the start of chosen training batches until the test lets it go.

    At ``(epoch, batch)`` it writes ``<folder>/at-e<epoch>-b<batch>`` and waits for
    ``<folder>/go-e<epoch>-b<batch>``; a test kills or signals the process meanwhile.

    Args:
        folder: Where the marker files go.
        points: ``[epoch, batch]`` pairs (batch = index within the epoch).
    """

    def __init__(self, folder: str, points: list[list[int]]) -> None:
        self.folder = Path(folder)
        self.points = {(int(e), int(b)) for e, b in points}

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        point = (trainer.current_epoch, batch_idx)
        if point not in self.points or trainer.global_rank != 0:
            return
        name = f"e{point[0]}-b{point[1]}"
        (self.folder / f"at-{name}").write_text(str(os.getpid()))
        while not (self.folder / f"go-{name}").exists():
            time.sleep(0.02)


class NoisyKD(Distiller):
    """KD whose value also depends on the global torch, numpy and Python generators, as random
    negatives or dropout would: a resumed run only matches when all three are restored."""

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> torch.Tensor:
        noise = (1 + 0.1 * torch.rand(())) * (1 + 0.1 * np.random.rand()) * (1 + 0.1 * random.random())
        return kd_loss(student.logits, teacher.logits) * noise


class NonFiniteAt(Distiller):
    """Returns ``value`` (NaN or inf) at its ``call``-th training call on process ``rank``.

    Args:
        call: 1-based count of training calls at which to go non-finite.
        value: ``"nan"``, ``"inf"`` or ``"-inf"``.
        rank: Only this DDP rank goes non-finite (None: every rank).
    """

    def __init__(self, call: int = 3, value: str = "nan", rank: int | None = None) -> None:
        super().__init__(weight=1.0)
        self.call, self.value, self.rank = call, float(value), rank
        self.calls = 0

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> torch.Tensor:
        self.calls += 1
        loss = kd_loss(student.logits, teacher.logits)
        if self.calls == self.call and self.rank in (None, _rank()):
            return loss * self.value
        return loss


class NonFiniteStudent(MLP):
    """An MLP whose logits are NaN at its ``call``-th training forward (so the CE term is NaN).

    Args:
        call: 1-based count of training forwards at which the logits are NaN.
    """

    def __init__(self, call: int = 3, num_classes: int = 10) -> None:
        super().__init__(num_classes=num_classes, hidden=[16])
        self.call, self.calls = call, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls == self.call:
                return logits * float("nan")
        return logits


class WrongTap(Distiller):
    """A feature distiller asking for a student layer that does not exist."""

    student_taps = ("layer_that_does_not_exist",)
    teacher_taps = ("layer3",)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> torch.Tensor:
        return student.logits.sum() * 0


class RecordingCheckpointIO(AtomicCheckpointIO):
    """AtomicCheckpointIO that appends ``<rank> <path>`` to ``log`` for every checkpoint written.

    Args:
        log: Text file collecting one line per write.
    """

    def __init__(self, log: str) -> None:
        super().__init__()
        self.log = log

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        super().save_checkpoint(checkpoint, path, storage_options)
        with open(self.log, "a") as handle:
            handle.write(f"{_rank()} {Path(path).name}\n")
