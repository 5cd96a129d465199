"""Evaluation metrics of a distillation run, built on torchmetrics.

Every metric here is a sample-weighted mean or a calibration histogram, so none needs the
number of classes, all reduce correctly across DDP processes, and none synchronises with
the host while updating (``nan_strategy="disable"``, ``validate_args=False``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.aggregation import MeanMetric
from torchmetrics.classification import BinaryCalibrationError


def _mean() -> MeanMetric:
    return MeanMetric(nan_strategy="disable")


def topk_correct(logits: Tensor, targets: Tensor, k: int) -> Tensor:
    """Per-sample 1.0/0.0: is the target among the ``k`` highest scores (k capped at #classes)."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1).float()


def kl_per_sample(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """KL(teacher ‖ student) of the untempered class distributions, one value per sample."""
    log_p_teacher = F.log_softmax(teacher_logits.float(), dim=1)
    log_p_student = F.log_softmax(student_logits.float(), dim=1)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)


class KDMetrics(nn.Module):
    """Student top-1/top-5 accuracy (micro), ECE, cross-entropy, teacher agreement, KL and teacher
    accuracy, accumulated over an epoch: updated every batch, logged once per epoch (Lightning's
    ``log`` costs milliseconds of Python per key and call, as much as a small network's batch).

    ECE (Guo et al., 2017) uses 15 equal-width confidence bins and the L1 norm, computed on
    (max-probability, is-correct) pairs, which is torchmetrics' multiclass definition.
    """

    def __init__(self) -> None:
        super().__init__()
        self.acc1 = _mean()
        self.acc5 = _mean()
        self.ece = BinaryCalibrationError(n_bins=15, norm="l1", validate_args=False)
        self.agreement = _mean()
        self.kl = _mean()
        self.teacher_acc1 = _mean()
        self.loss = _mean()

    @torch.no_grad()
    def update(
        self,
        student_logits: Tensor,
        targets: Tensor,
        teacher_logits: Tensor | None = None,
        teacher_accuracy: bool = True,
    ) -> None:
        """Update with one batch (the teacher's metrics only when ``teacher_logits`` is given)."""
        confidence, prediction = F.softmax(student_logits.float(), dim=1).max(dim=1)
        self.loss.update(F.cross_entropy(student_logits.float(), targets, reduction="none"))
        self.acc1.update((prediction == targets).float())
        self.acc5.update(topk_correct(student_logits, targets, 5))
        self.ece.update(confidence, (prediction == targets).long())
        if teacher_logits is not None:
            teacher_prediction = teacher_logits.argmax(dim=1)
            self.agreement.update((prediction == teacher_prediction).float())
            self.kl.update(kl_per_sample(teacher_logits, student_logits))
            if teacher_accuracy:
                self.teacher_acc1.update((teacher_prediction == targets).float())

    def updated(self) -> dict[str, Metric]:
        """The metrics updated since their last reset, by name (to pass to ``log_dict``)."""
        return {name: metric for name, metric in self.named_children() if metric.update_called}
