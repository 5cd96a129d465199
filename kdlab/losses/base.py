"""The base class of every distillation term."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from kdlab.outputs import Batch, Outputs


class Distiller(nn.Module):
    """One weighted term of the total loss, computed from student and teacher outputs.

    Subclasses implement :meth:`forward`. Feature-based methods list the module paths they
    need in ``student_taps`` / ``teacher_taps`` (``"layer3"`` for a module's output,
    ``"layer3:input"`` for its input) and may build their adapters in :meth:`build` once the
    tapped shapes are known. Learnable parts live inside the distiller: they are optimised
    together with the student and saved in checkpoints.

    Args:
        weight: Multiplier of this term in the total loss.
    """

    student_taps: tuple[str, ...] = ()
    teacher_taps: tuple[str, ...] = ()

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        if not isinstance(weight, (int, float)) or weight != weight or weight < 0:
            raise ValueError(f"{type(self).__name__}: weight must be a number >= 0, got {weight!r}")
        self.weight = float(weight)

    @property
    def name(self) -> str:
        """Short name used in logged keys, e.g. ``train/kd``."""
        return type(self).__name__.lower()

    def build(
        self, student_shapes: Mapping[str, torch.Size], teacher_shapes: Mapping[str, torch.Size]
    ) -> None:
        """Create adapters that depend on tapped shapes (called once before the optimizer exists)."""

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(student, teacher, batch)")
