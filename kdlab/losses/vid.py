"""Variational information distillation: a Gaussian likelihood of teacher maps given the student."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.losses._common import as_map, paired_shapes, pool_to_smaller
from kdlab.losses.base import BuildContext, Distiller
from kdlab.outputs import Batch, Outputs


def vid_loss(predicted_mean: Tensor, teacher_feature: Tensor, log_scale: Tensor, eps: float = 1e-5) -> Tensor:
    """Variational Information Distillation for Knowledge Transfer (Ahn et al., CVPR 2019).

    Negative Gaussian log-likelihood (without the constant) of the teacher map under the
    student's prediction: ``0.5 * ((mu - t)² / var + log var)``, element mean, with a
    per-channel variance ``var = softplus(log_scale) + eps`` that is learned.

    Args:
        predicted_mean: ``(batch, C, H, W)`` regressed student map (the mean ``mu``).
        teacher_feature: ``(batch, C, H, W)`` teacher map.
        log_scale: ``(C,)`` unconstrained variance parameters.
        eps: Lower bound of the variance.
    """
    variance = (F.softplus(log_scale) + eps).view(1, -1, 1, 1)
    return (0.5 * ((predicted_mean - teacher_feature).pow(2) / variance + variance.log())).mean()


def _regressor(in_channels: int, channels: int) -> nn.Sequential:
    def conv(a: int, b: int) -> nn.Conv2d:
        return nn.Conv2d(a, b, kernel_size=1, bias=False)

    return nn.Sequential(
        conv(in_channels, channels), nn.ReLU(), conv(channels, channels), nn.ReLU(), conv(channels, channels)
    )


class VID(Distiller):
    """VID over layer pairs with a 1×1-conv regressor per pair (weight 1 in the CRD table).

    Args:
        weight: Multiplier of the summed loss.
        init_variance: Initial per-channel variance (the authors' 5.0).
        eps: Lower bound of the variance.
        student_taps: Student layers (default the three stage outputs).
        teacher_taps: Teacher layers paired with them.
    """

    student_taps = ("stage1", "stage2", "stage3")
    teacher_taps = ("stage1", "stage2", "stage3")
    tap_pair_count = (1, None)

    def __init__(
        self,
        weight: float = 1.0,
        init_variance: float = 5.0,
        eps: float = 1e-5,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__(weight, student_taps, teacher_taps)
        if init_variance <= eps:
            raise ValueError(f"VID: init_variance must exceed eps={eps}, got {init_variance}")
        self.init_variance = init_variance
        self.eps = eps
        self.regressors = nn.ModuleList()
        # A ParameterList, so the variances are registered, optimised and checkpointed.
        self.log_scales = nn.ParameterList()

    def build(self, context: BuildContext) -> None:
        self.regressors, self.log_scales = nn.ModuleList(), nn.ParameterList()
        # softplus⁻¹(init_variance - eps), so that the initial variance is init_variance.
        start = math.log(math.expm1(self.init_variance - self.eps))
        for _, s_shape, _, t_shape in paired_shapes(self, context, dims=(2, 4)):
            self.regressors.append(_regressor(s_shape[1], t_shape[1]))
            self.log_scales.append(nn.Parameter(torch.full((t_shape[1],), start)))

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        losses = []
        parts = zip(self.tap_pairs(), self.regressors, self.log_scales, strict=True)
        for (s, t), regressor, log_scale in parts:
            f_s, f_t = pool_to_smaller(as_map(student.features[s]), as_map(teacher.features[t]))
            losses.append(vid_loss(regressor(f_s), f_t, log_scale, self.eps))
        return torch.stack(losses).sum()
