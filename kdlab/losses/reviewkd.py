"""ReviewKD: student stages fused from deep to shallow (ABF), matched at every teacher level (HCL)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.losses._common import as_map, paired_shapes
from kdlab.losses.base import BuildContext, Distiller
from kdlab.outputs import Batch, Outputs


def hcl_loss(student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]) -> Tensor:
    """Distilling Knowledge via Knowledge Review (Chen et al., CVPR 2021): hierarchical context loss.

    For each level, the MSE between the maps plus the MSEs of their 4×4, 2×2 and 1×1 average
    poolings (those smaller than the map's height), weighted 1/2, 1/4, 1/8 and normalised by
    the total weight; summed over levels.

    Args:
        student_features: ``(batch, C, H, W)`` fused student maps, one per level.
        teacher_features: Teacher maps of the same shapes.
    """
    total = 0.0
    for f_s, f_t in zip(student_features, teacher_features, strict=True):
        loss, weight, weights = F.mse_loss(f_s, f_t), 1.0, 1.0
        for size in (4, 2, 1):
            if size >= f_s.shape[2]:
                continue
            weight /= 2.0
            pooled = F.mse_loss(F.adaptive_avg_pool2d(f_s, size), F.adaptive_avg_pool2d(f_t, size))
            loss, weights = loss + weight * pooled, weights + weight
        total = total + loss / weights
    return total


class ABF(nn.Module):
    """Attention-based fusion: a 1×1 projection of a student level, fused with the residual from
    the deeper level by two spatial attention maps, then a 3×3 conv to the teacher's channels.

    Args:
        in_channels: Student channels of this level.
        mid_channels: Channels of the fused (residual) representation.
        out_channels: Teacher channels of this level.
        fuse: Whether a deeper residual is fused in (False for the deepest level).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels)
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None, out_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            attention = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * attention[:, 0:1] + residual * attention[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=out_size, mode="nearest")
        return self.conv2(x), x


class ReviewKD(Distiller):
    """ReviewKD with ABF fusion and HCL (weight 1; the authors use 5 for several CIFAR pairs).

    Student levels (default the three stage outputs and the pooled embedding, as a 1×1 map)
    are fused from the deepest up; each fused map is resized to the teacher level's size and
    projected to its channels, then compared with the teacher's pre-ReLU stage features and
    embedding by :func:`hcl_loss`. The paper warms the weight up linearly over 20 epochs:
    use a loss-weight schedule callback for that.

    Args:
        weight: Multiplier of the loss.
        max_mid_channels: Cap of the fused representation's channels (512).
        student_taps: Student levels, shallow to deep.
        teacher_taps: Teacher levels paired with them.
    """

    student_taps = ("stage1", "stage2", "stage3", "embedding")
    teacher_taps = ("stage1_preact", "stage2_preact", "stage3_preact", "embedding")
    tap_pair_count = (1, None)

    def __init__(
        self,
        weight: float = 1.0,
        max_mid_channels: int = 512,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__(weight, student_taps, teacher_taps)
        self.max_mid_channels = max_mid_channels
        self.abfs = nn.ModuleList()  # deepest level first
        self.out_sizes: list[tuple[int, int]] = []

    def build(self, context: BuildContext) -> None:
        pairs = paired_shapes(self, context, dims=(2, 4))
        mid = min(self.max_mid_channels, pairs[-1][1][1])
        levels = range(len(pairs) - 1, -1, -1)
        self.abfs = nn.ModuleList(
            ABF(pairs[i][1][1], mid, pairs[i][3][1], fuse=i < len(pairs) - 1) for i in levels
        )
        self.out_sizes = [tuple(pairs[i][3][2:4]) if len(pairs[i][3]) == 4 else (1, 1) for i in levels]

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        pairs = self.tap_pairs()
        levels = [as_map(student.features[s]) for s, _ in reversed(pairs)]
        fused, residual = [], None
        for feature, abf, size in zip(levels, self.abfs, self.out_sizes, strict=True):
            out, residual = abf(feature, residual, size)
            fused.insert(0, out)
        return hcl_loss(fused, [as_map(teacher.features[t]) for _, t in pairs])
