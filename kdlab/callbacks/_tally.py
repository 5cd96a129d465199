"""Per-class and confidence-bin counts of an evaluation epoch, accumulated on the device."""

from __future__ import annotations

import torch
from torch import Tensor


class EvaluationTally:
    """Counts that a dashboard needs from one evaluation epoch, kept as device tensors.

    Per class: samples, student hits, teacher hits, student/teacher agreement. Per confidence
    bin (equal width on [0, 1], the student's max softmax probability): samples, summed
    confidence, hits. Updating never synchronises with the host; :meth:`reduce` sums the
    counts of every process once at the end of the epoch.

    Args:
        num_bins: Confidence bins of the reliability diagram (15 as in Guo et al., 2017).
    """

    def __init__(self, num_bins: int = 15) -> None:
        self.num_bins = num_bins
        self.counts: dict[str, Tensor] = {}
        self.has_teacher = False

    def __bool__(self) -> bool:
        return bool(self.counts)

    @torch.no_grad()
    def update(self, logits: Tensor, targets: Tensor, teacher_logits: Tensor | None = None) -> None:
        """Add one batch (student logits, integer targets, optional teacher logits)."""
        num_classes = logits.shape[1]
        if not self.counts:
            self._allocate(num_classes, logits.device)
        confidence, prediction = logits.float().softmax(dim=1).max(dim=1)
        hit = (prediction == targets).float()
        self._add_per_class("support", targets, torch.ones_like(hit), num_classes)
        self._add_per_class("student_hits", targets, hit, num_classes)
        if teacher_logits is not None:
            self.has_teacher = True
            teacher_prediction = teacher_logits.argmax(dim=1)
            self._add_per_class("teacher_hits", targets, (teacher_prediction == targets).float(), num_classes)
            self._add_per_class("agreement", targets, (teacher_prediction == prediction).float(), num_classes)
        bins = (confidence * self.num_bins).long().clamp_(max=self.num_bins - 1)
        self.counts["bin_count"] += torch.bincount(bins, minlength=self.num_bins).float()
        self.counts["bin_confidence"] += torch.bincount(bins, confidence, minlength=self.num_bins)
        self.counts["bin_hits"] += torch.bincount(bins, hit, minlength=self.num_bins)

    def reduce(self, strategy: object) -> dict[str, Tensor]:
        """The counts summed over processes (``strategy.reduce``), on the host."""
        reduce = getattr(strategy, "reduce", None)
        summed = {k: reduce(v.clone(), reduce_op="sum") if reduce else v for k, v in self.counts.items()}
        return {k: v.detach().cpu() for k, v in summed.items()}

    def reset(self) -> None:
        self.counts = {}
        self.has_teacher = False

    def _allocate(self, num_classes: int, device: torch.device) -> None:
        per_class = ("support", "student_hits", "teacher_hits", "agreement")
        per_bin = ("bin_count", "bin_confidence", "bin_hits")
        self.counts = {k: torch.zeros(num_classes, device=device) for k in per_class}
        self.counts |= {k: torch.zeros(self.num_bins, device=device) for k in per_bin}

    def _add_per_class(self, key: str, targets: Tensor, values: Tensor, num_classes: int) -> None:
        self.counts[key] += torch.bincount(targets, values, minlength=num_classes)[:num_classes]


def per_class_rows(
    counts: dict[str, Tensor], has_teacher: bool, names: list[str] | None = None
) -> tuple[list[str], list[list]]:
    """Columns and rows of the per-class table: class, name, support, accuracies (agreement)."""
    columns = ["class", "name", "support", "student_acc1"]
    if has_teacher:
        columns += ["teacher_acc1", "agreement"]
    support = counts["support"]
    denominator = support.clamp(min=1)
    rows = []
    for index in range(len(support)):
        name = names[index] if names is not None and index < len(names) else str(index)
        row = [index, name, int(support[index]), float(counts["student_hits"][index] / denominator[index])]
        if has_teacher:
            row += [
                float(counts["teacher_hits"][index] / denominator[index]),
                float(counts["agreement"][index] / denominator[index]),
            ]
        rows.append(row)
    return columns, rows


def reliability_rows(counts: dict[str, Tensor]) -> tuple[list[str], list[list], float]:
    """Columns and rows of the reliability table (one per bin) and the expected calibration error."""
    count, confidence, hits = counts["bin_count"], counts["bin_confidence"], counts["bin_hits"]
    num_bins, total = len(count), float(count.sum().clamp(min=1))
    rows, ece = [], 0.0
    for index in range(num_bins):
        n = float(count[index])
        mean_confidence = float(confidence[index]) / n if n else 0.0
        accuracy = float(hits[index]) / n if n else 0.0
        ece += n / total * abs(accuracy - mean_confidence)
        rows.append([index / num_bins, (index + 1) / num_bins, int(n), mean_confidence, accuracy])
    return ["lower", "upper", "count", "confidence", "accuracy"], rows, ece
