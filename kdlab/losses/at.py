"""Attention transfer: match normalised spatial attention maps of several layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._common import PairedFeatureLoss, pool_to_smaller


def attention_map(feature: Tensor, p: float = 2.0) -> Tensor:
    """The L2-normalised spatial attention ``mean_c |A_c|^p`` of a ``(batch, C, H, W)`` map, flattened."""
    return F.normalize(feature.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def at_loss(student_feature: Tensor, teacher_feature: Tensor, p: float = 2.0) -> Tensor:
    """Paying More Attention to Attention (Zagoruyko & Komodakis, ICLR 2017).

    Mean squared difference of the two L2-normalised attention maps of one pair of layers;
    the larger map is average-pooled to the smaller one's size first, and channel counts may
    differ (RepDistiller's ``Attention.at_loss``).

    Args:
        student_feature: ``(batch, C_s, H_s, W_s)`` student map.
        teacher_feature: ``(batch, C_t, H_t, W_t)`` teacher map.
        p: Exponent of the activation magnitudes.
    """
    student_feature, teacher_feature = pool_to_smaller(student_feature, teacher_feature)
    return (attention_map(student_feature, p) - attention_map(teacher_feature, p)).pow(2).mean()


class AT(PairedFeatureLoss):
    """Attention transfer summed over layer pairs (weight 1000 in the CRD table).

    Args:
        weight: Multiplier of the summed loss.
        p: Exponent of the attention maps.
        student_taps: Student layers (default the three stage outputs).
        teacher_taps: Teacher layers paired with them in order (default the same aliases).
    """

    student_taps = ("stage1", "stage2", "stage3")
    teacher_taps = ("stage1", "stage2", "stage3")

    def __init__(
        self,
        weight: float = 1000.0,
        p: float = 2.0,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__(weight, student_taps, teacher_taps)
        self.p = p

    def pair_loss(self, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        return at_loss(student_feature, teacher_feature, self.p)
