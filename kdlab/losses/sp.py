"""Similarity-preserving distillation: match the batch's pairwise similarity structure."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._common import PairedFeatureLoss


def similarity_matrix(feature: Tensor) -> Tensor:
    """The ``(batch, batch)`` Gram matrix of flattened features, each row L2-normalised."""
    flat = feature.flatten(1)
    return F.normalize(flat @ flat.t(), dim=1)


def sp_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """Similarity-Preserving Knowledge Distillation (Tung & Mori, ICCV 2019).

    Squared Frobenius distance between the row-normalised batch×batch similarity matrices
    of student and teacher, divided by batch². Feature shapes may differ; the batch must not.

    Args:
        student_feature: ``(batch, ...)`` student activations.
        teacher_feature: ``(batch, ...)`` teacher activations.
    """
    batch = student_feature.shape[0]
    difference = similarity_matrix(teacher_feature) - similarity_matrix(student_feature)
    return difference.pow(2).sum() / batch**2


class SP(PairedFeatureLoss):
    """Similarity preservation over layer pairs (weight 3000 in the CRD table).

    Args:
        weight: Multiplier of the summed loss.
        student_taps: Student layers (default the last stage, RepDistiller's ``feat[-2]``).
        teacher_taps: Teacher layers paired with them.
    """

    student_taps = ("stage3",)
    teacher_taps = ("stage3",)
    feature_dims = (2, 3, 4)

    def __init__(
        self,
        weight: float = 3000.0,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__(weight, student_taps, teacher_taps)

    def pair_loss(self, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        return sp_loss(student_feature, teacher_feature)
