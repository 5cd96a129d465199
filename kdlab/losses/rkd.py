"""Relational knowledge distillation: match distances and angles between samples."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._common import PairedFeatureLoss


def pairwise_distances(embedding: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distances between all rows, zero on the diagonal (squared distances clamped at ``eps``)."""
    squared = embedding.pow(2).sum(dim=1)
    distances = (squared[:, None] + squared[None, :] - 2 * embedding @ embedding.t()).clamp(min=eps).sqrt()
    eye = torch.eye(len(embedding), dtype=torch.bool, device=embedding.device)
    return distances.masked_fill(eye, 0.0)


def _mean_normalised(distances: Tensor) -> Tensor:
    # The mean over positive entries, without a host sync: distances are >= 0, so their sum
    # is the sum of the positive ones.
    return distances / (distances.sum() / (distances > 0).sum().clamp(min=1))


def _angles(embedding: Tensor) -> Tensor:
    directions = F.normalize(embedding[None, :, :] - embedding[:, None, :], p=2, dim=2)
    return torch.bmm(directions, directions.transpose(1, 2)).flatten()


def rkd_loss(
    student_embedding: Tensor,
    teacher_embedding: Tensor,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
) -> Tensor:
    """Relational Knowledge Distillation (Park et al., CVPR 2019).

    ``distance_weight`` × Huber loss between pairwise distances (each normalised by its mean
    over distinct pairs) plus ``angle_weight`` × Huber loss between the cosines of the angles
    formed by every triplet. The teacher side carries no gradient.

    Args:
        student_embedding: ``(batch, ...)`` student features (flattened per sample).
        teacher_embedding: ``(batch, ...)`` teacher features (flattened per sample).
        distance_weight: Weight of the distance term.
        angle_weight: Weight of the angle term.
    """
    student = student_embedding.flatten(1)
    teacher = teacher_embedding.flatten(1).detach()
    distance = F.smooth_l1_loss(
        _mean_normalised(pairwise_distances(student)), _mean_normalised(pairwise_distances(teacher))
    )
    angle = F.smooth_l1_loss(_angles(student), _angles(teacher))
    return distance_weight * distance + angle_weight * angle


class RKD(PairedFeatureLoss):
    """RKD-DA on the pooled embeddings (weight 1 with 25/50 in the CRD table).

    Args:
        weight: Multiplier of the loss.
        distance_weight: Weight of the distance term.
        angle_weight: Weight of the angle term.
        student_taps: The student feature (default ``embedding``).
        teacher_taps: The teacher feature (default ``embedding``).
    """

    student_taps = ("embedding",)
    teacher_taps = ("embedding",)
    feature_dims = (2, 3, 4)

    def __init__(
        self,
        weight: float = 1.0,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__(weight, student_taps, teacher_taps)
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight

    def pair_loss(self, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        return rkd_loss(student_feature, teacher_feature, self.distance_weight, self.angle_weight)
