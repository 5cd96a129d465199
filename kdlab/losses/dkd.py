"""Decoupled Knowledge Distillation (Zhao et al., CVPR 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.losses.base import Distiller, check_non_negative, check_temperature
from kdlab.outputs import Batch, Outputs


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float | Tensor = 4.0,
) -> Tensor:
    """Decoupled Knowledge Distillation (Zhao et al., CVPR 2022).

    KD splits into TCKD, the binary KL between teacher and student over (target class,
    all other classes), and NCKD, the KL between their distributions over the non-target
    classes only. DKD weighs them independently: ``alpha * TCKD + beta * NCKD``, each scaled
    by T² and averaged over the batch, as in the authors' code (mdistiller).

    Every log-probability is computed from log-sum-exps of the logits instead of the log of
    summed probabilities (mdistiller takes ``log`` of softmax sums and masks the target with
    ``-1000``), so the loss and its gradient stay finite when a probability underflows, e.g.
    when a network puts all its mass on the target class; elsewhere both agree to rounding.

    Args:
        student_logits: ``(batch, classes)`` student scores, at least two classes.
        teacher_logits: ``(batch, classes)`` teacher scores.
        target: ``(batch,)`` ground-truth class indices.
        alpha: Weight of TCKD (target-class knowledge).
        beta: Weight of NCKD (non-target-class knowledge); the DKD paper tunes it per pair.
        temperature: Softening temperature T > 0.
    """
    if student_logits.shape[1] < 2:
        raise ValueError(
            f"dkd_loss needs at least 2 classes, got logits of shape {tuple(student_logits.shape)}"
        )
    target_mask = F.one_hot(target.reshape(-1), student_logits.shape[1]).bool()
    s_binary, s_rest = _decouple(student_logits / temperature, target_mask)
    t_binary, t_rest = _decouple(teacher_logits / temperature, target_mask)
    tckd = F.kl_div(s_binary, t_binary, reduction="batchmean", log_target=True)
    nckd = F.kl_div(s_rest, t_rest, reduction="batchmean", log_target=True)
    return (alpha * tckd + beta * nckd) * temperature**2


def _decouple(logits: Tensor, target_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Log-probabilities of (target, not target) and over the non-target classes alone."""
    batch, classes = logits.shape
    others = logits[~target_mask].view(batch, classes - 1)
    log_total = torch.logsumexp(logits, dim=1, keepdim=True)
    log_target = logits[target_mask].view(batch, 1) - log_total
    log_not_target = torch.logsumexp(others, dim=1, keepdim=True) - log_total
    binary = torch.cat([log_target, log_not_target], dim=1)
    return binary, F.log_softmax(others, dim=1)


class DKD(Distiller):
    """Decoupled KD as a weighted term of the total loss.

    The DKD recipe warms this term up linearly over the first 20 epochs: add
    ``kdlab.callbacks.LossWeightSchedule(warmup_epochs=20)`` to the trainer's callbacks.

    Args:
        weight: Multiplier of the DKD term (1.0 with a CE weight of 1.0 in the DKD paper).
        alpha: Weight of TCKD.
        beta: Weight of NCKD: 8 by default; the paper's CIFAR-100 table uses 2 for
            resnet56→resnet20 and resnet110→resnet32, 6 for vgg13→vgg8, vgg13→MobileNetV2,
            wrn_40_2→wrn_16_2 and wrn_40_2→wrn_40_1.
        temperature: Softening temperature T.
    """

    def __init__(
        self, weight: float = 1.0, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0
    ) -> None:
        super().__init__(weight)
        check_non_negative("DKD", alpha=alpha, beta=beta)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.temperature = check_temperature("DKD", temperature)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        return dkd_loss(
            student.logits, teacher.logits, batch.targets, self.alpha, self.beta, self.temperature
        )
