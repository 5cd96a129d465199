"""KD metrics against direct computations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassCalibrationError

from kdlab.metrics import KDMetrics


def test_metrics_match_direct_computation():
    torch.manual_seed(0)
    batches = [(torch.randn(32, 7) * 3, torch.randint(0, 7, (32,)), torch.randn(32, 7) * 3) for _ in range(3)]
    metrics = KDMetrics()
    reference_ece = MulticlassCalibrationError(num_classes=7, n_bins=15, norm="l1")
    for student, targets, teacher in batches:
        metrics.update(student, targets, teacher)
        reference_ece.update(student.softmax(1), targets)
    student = torch.cat([b[0] for b in batches])
    targets = torch.cat([b[1] for b in batches])
    teacher = torch.cat([b[2] for b in batches])

    assert torch.isclose(metrics.acc1.compute(), (student.argmax(1) == targets).float().mean())
    top5 = student.topk(5, 1).indices
    assert torch.isclose(metrics.acc5.compute(), (top5 == targets[:, None]).any(1).float().mean())
    assert torch.isclose(metrics.agreement.compute(), (student.argmax(1) == teacher.argmax(1)).float().mean())
    kl = F.kl_div(
        F.log_softmax(student, 1), F.log_softmax(teacher, 1), reduction="batchmean", log_target=True
    )
    assert torch.isclose(metrics.kl.compute(), kl, rtol=1e-5)
    assert torch.isclose(metrics.teacher_acc1.compute(), (teacher.argmax(1) == targets).float().mean())
    assert torch.isclose(metrics.ece.compute(), reference_ece.compute(), atol=1e-6)


def test_without_teacher_only_student_metrics_update():
    metrics = KDMetrics()
    logits, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    metrics.update(logits, targets)
    assert set(metrics.updated()) == {"acc1", "acc5", "ece", "loss"}  # top-5 of 3 classes: capped at 3
    assert torch.isclose(metrics.loss.compute(), F.cross_entropy(logits, targets))
    assert metrics.acc5.compute() == 1.0
