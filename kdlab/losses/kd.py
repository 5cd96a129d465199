"""Hinton knowledge distillation."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlab.losses.base import Distiller
from kdlab.outputs import Batch, Outputs


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Distilling the Knowledge in a Neural Network (Hinton et al., 2015).

    KL(teacher ‖ student) between temperature-softened class distributions, summed over
    classes, averaged over the batch and scaled by T² so that gradient magnitudes do not
    shrink as the temperature grows.

    Args:
        student_logits: ``(batch, classes)`` student scores.
        teacher_logits: ``(batch, classes)`` teacher scores.
        temperature: Softening temperature T > 0.
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


class KD(Distiller):
    """Hinton KD as a weighted term of the total loss.

    Args:
        weight: Multiplier of the KD term (0.9 with a CE weight of 0.1 in the CRD tables).
        temperature: Softening temperature T.
    """

    def __init__(self, weight: float = 0.9, temperature: float = 4.0) -> None:
        super().__init__(weight)
        if temperature <= 0:
            raise ValueError(f"KD: temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        return kd_loss(student.logits, teacher.logits, self.temperature)
