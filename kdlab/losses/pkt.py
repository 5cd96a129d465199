"""Probabilistic knowledge transfer: match the conditional distributions of cosine similarities."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kdlab.losses._common import PairedFeatureLoss


def _similarity_distribution(embedding: Tensor, eps: float) -> Tensor:
    unit = embedding / (embedding.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)
    unit = torch.where(torch.isnan(unit), torch.zeros_like(unit), unit)
    similarity = (unit @ unit.t() + 1.0) / 2.0  # cosine similarity mapped to [0, 1]
    return similarity / similarity.sum(dim=1, keepdim=True)


def pkt_loss(student_embedding: Tensor, teacher_embedding: Tensor, eps: float = 1e-7) -> Tensor:
    """Learning Deep Representations with Probabilistic Knowledge Transfer (Passalis & Tefas, ECCV 2018).

    Cosine similarities between the batch's samples, shifted to [0, 1] and normalised per row
    into conditional probabilities, for student and teacher; the loss is the mean over all
    entries of ``p_t * log((p_t + eps) / (p_s + eps))`` (the authors' code).

    Args:
        student_embedding: ``(batch, dim_s)`` student features.
        teacher_embedding: ``(batch, dim_t)`` teacher features.
        eps: Stabiliser of the norms and of the logarithm.
    """
    p_student = _similarity_distribution(student_embedding.flatten(1), eps)
    p_teacher = _similarity_distribution(teacher_embedding.flatten(1), eps)
    return (p_teacher * torch.log((p_teacher + eps) / (p_student + eps))).mean()


class PKT(PairedFeatureLoss):
    """PKT on the pooled embeddings (weight 30000 in the CRD table).

    Args:
        weight: Multiplier of the loss.
        student_taps: The student feature (default ``embedding``).
        teacher_taps: The teacher feature (default ``embedding``).
    """

    student_taps = ("embedding",)
    teacher_taps = ("embedding",)
    feature_dims = (2, 3, 4)

    def __init__(
        self,
        weight: float = 30000.0,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__(weight, student_taps, teacher_taps)

    def pair_loss(self, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        return pkt_loss(student_feature, teacher_feature)
