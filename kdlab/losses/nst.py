"""Neuron selectivity transfer: match the distributions of channel activation patterns (MMD)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._common import PairedFeatureLoss, pool_to_smaller


def _polynomial_kernel_mean(a: Tensor, b: Tensor) -> Tensor:
    # Mean over samples and channel pairs of (a_i · b_j)², as a batched matmul rather than a
    # (batch, C, C, H·W) broadcast.
    return torch.bmm(a, b.transpose(1, 2)).pow(2).mean()


def nst_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """Like What You Like: Knowledge Distill via Neuron Selectivity Transfer (Huang & Wang, 2017).

    Squared MMD with the polynomial kernel ``k(x, y) = (xᵀy)²`` between the sets of channel
    activation patterns (each channel's map flattened and L2-normalised over positions), as in
    RepDistiller; the larger map is average-pooled to the smaller's size. The teacher-only
    term is constant and detached.

    Args:
        student_feature: ``(batch, C_s, H_s, W_s)`` student map.
        teacher_feature: ``(batch, C_t, H_t, W_t)`` teacher map.
    """
    student_feature, teacher_feature = pool_to_smaller(student_feature, teacher_feature)
    f_s = F.normalize(student_feature.flatten(2), dim=2)
    f_t = F.normalize(teacher_feature.flatten(2), dim=2)
    return (
        _polynomial_kernel_mean(f_t, f_t).detach()
        + _polynomial_kernel_mean(f_s, f_s)
        - 2 * _polynomial_kernel_mean(f_s, f_t)
    )


class NST(PairedFeatureLoss):
    """NST over layer pairs (weight 50 in the CRD table).

    Args:
        weight: Multiplier of the summed loss.
        student_taps: Student layers (default the three stage outputs).
        teacher_taps: Teacher layers paired with them.
    """

    student_taps = ("stage1", "stage2", "stage3")
    teacher_taps = ("stage1", "stage2", "stage3")

    def __init__(
        self,
        weight: float = 50.0,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__(weight, student_taps, teacher_taps)

    def pair_loss(self, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        return nst_loss(student_feature, teacher_feature)
