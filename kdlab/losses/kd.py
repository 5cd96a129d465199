"""Hinton knowledge distillation, optionally on standardized logits."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlab.losses.base import Distiller, check_temperature
from kdlab.outputs import Batch, Outputs


def standardize_logits(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Z-score each row of ``logits`` over its classes.

    Logit Standardization in Knowledge Distillation (Sun et al., CVPR 2024): the row mean is
    subtracted and the result divided by the row's standard deviation (Bessel-corrected, as
    ``Tensor.std``) plus ``eps``, so that only the logits' relations, not their range, are
    matched.

    Args:
        logits: ``(batch, classes)`` scores.
        eps: Added to the standard deviation so constant rows stay finite.
    """
    mean = logits.mean(dim=1, keepdim=True)
    std = logits.std(dim=1, keepdim=True)
    return (logits - mean) / (std + eps)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float | Tensor = 4.0,
    standardize: bool = False,
) -> Tensor:
    """Distilling the Knowledge in a Neural Network (Hinton et al., 2015).

    KL(teacher ‖ student) between temperature-softened class distributions, summed over
    classes, averaged over the batch and scaled by T² so that gradient magnitudes do not
    shrink as the temperature grows. With ``standardize=True`` both logit rows are first
    z-scored (:func:`standardize_logits`, Sun et al., CVPR 2024); that paper's CIFAR-100
    recipe pairs it with a lower temperature and a larger KD weight (T 2, KD weight 9).

    Args:
        student_logits: ``(batch, classes)`` student scores.
        teacher_logits: ``(batch, classes)`` teacher scores.
        temperature: Softening temperature T > 0 (a 0-d tensor for a learned temperature).
        standardize: Z-score each logit row before dividing by the temperature.
    """
    if standardize:
        student_logits = standardize_logits(student_logits)
        teacher_logits = standardize_logits(teacher_logits)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


class KD(Distiller):
    """Hinton KD as a weighted term of the total loss.

    Args:
        weight: Multiplier of the KD term (0.9 with a CE weight of 0.1 in the CRD tables).
        temperature: Softening temperature T.
        standardize: Z-score the logits first (logit standardization, Sun et al., CVPR 2024).
    """

    def __init__(self, weight: float = 0.9, temperature: float = 4.0, standardize: bool = False) -> None:
        super().__init__(weight)
        self.temperature = check_temperature("KD", temperature)
        self.standardize = standardize

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        return kd_loss(student.logits, teacher.logits, self.temperature, self.standardize)
