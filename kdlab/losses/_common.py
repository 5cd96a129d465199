"""Pieces shared by the feature distillers: spatial matching, regressors, embeddings, shape checks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.losses.base import BuildContext, Distiller
from kdlab.outputs import Batch, Outputs


def pool_to_smaller(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool whichever map is spatially larger down to the other's size (per dimension).

    This is how AT, NST, VID, FT and FSP compare maps of different resolutions in RepDistiller.
    """
    size = (min(student.shape[-2], teacher.shape[-2]), min(student.shape[-1], teacher.shape[-1]))
    if tuple(student.shape[-2:]) != size:
        student = F.adaptive_avg_pool2d(student, size)
    if tuple(teacher.shape[-2:]) != size:
        teacher = F.adaptive_avg_pool2d(teacher, size)
    return student, teacher


def as_map(feature: Tensor) -> Tensor:
    """A ``(batch, channels)`` vector as a ``(batch, channels, 1, 1)`` map; maps pass unchanged."""
    return feature[:, :, None, None] if feature.dim() == 2 else feature


def paired_shapes(
    distiller: Distiller, context: BuildContext, dims: tuple[int, ...] = (4,)
) -> list[tuple[str, torch.Size, str, torch.Size]]:
    """(student tap, shape, teacher tap, shape) per pair, checking each has one of ``dims`` dimensions."""
    student, teacher = context.student_shapes, context.teacher_shapes
    pairs = [(s, student[s], t, teacher[t]) for s, t in distiller.tap_pairs()]
    wrong = [p for p in pairs if len(p[1]) not in dims or len(p[3]) not in dims]
    if wrong:
        kinds = " or ".join(
            {2: "(batch, features) vectors", 4: "(batch, channels, H, W) maps"}[d] for d in dims
        )
        raise distiller.shape_error(f"needs {kinds}; tap other layers", wrong)
    return pairs


class PairedFeatureLoss(Distiller):
    """A term that applies one stateless loss to each (student tap, teacher tap) pair and sums.

    Subclasses set the default taps and ``feature_dims`` (the tensor ranks the loss accepts)
    and implement :meth:`pair_loss`; shapes are checked at build time.
    """

    feature_dims: tuple[int, ...] = (4,)
    tap_pair_count = (1, None)

    def build(self, context: BuildContext) -> None:
        paired_shapes(self, context, dims=self.feature_dims)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        return sum(self.pair_loss(student.features[s], teacher.features[t]) for s, t in self.tap_pairs())

    def pair_loss(self, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        raise NotImplementedError


class ConvReg(nn.Module):
    """FitNet's convolutional regressor from a student map to a teacher map's channels and size.

    As in RepDistiller: a stride-2 3×3 conv when the student is twice as large, a stride-2
    4×4 transposed conv when it is half as large, a valid convolution of kernel
    ``1 + s - t`` when it is larger; then BatchNorm (and ReLU for FitNet's hints).

    Args:
        student_shape: ``(batch, channels, H, W)`` of the student map.
        teacher_shape: ``(batch, channels, H, W)`` of the teacher map.
        relu: End with a ReLU (FitNet) or not (AB's connectors).

    Raises:
        ValueError: no such convolution maps the student's size to the teacher's.
    """

    def __init__(self, student_shape: torch.Size, teacher_shape: torch.Size, relu: bool = True) -> None:
        super().__init__()
        _, s_c, s_h, s_w = student_shape
        _, t_c, t_h, t_w = teacher_shape
        if (s_h, s_w) == (2 * t_h, 2 * t_w):
            self.conv: nn.Module = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif (2 * s_h, 2 * s_w) == (t_h, t_w):
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h and s_w >= t_w:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise ValueError(
                f"no regressor maps a {s_h}×{s_w} student map to a {t_h}×{t_w} teacher map "
                "(supported: student 2× the teacher, half of it, or at least as large)"
            )
        self.bn = nn.BatchNorm2d(t_c)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class Embed(nn.Module):
    """A linear projection of flattened features, optionally L2-normalised (CRD, CC).

    Args:
        in_features: Size of the flattened input.
        out_features: Embedding size.
        normalize: L2-normalise the output (CRD) or not (CC).
    """

    def __init__(self, in_features: int, out_features: int = 128, normalize: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.normalize = normalize

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x.flatten(1))
        return F.normalize(x, dim=1) if self.normalize else x


def flat_size(shape: torch.Size) -> int:
    """Number of features per sample of a batch-first shape."""
    return int(torch.Size(shape[1:]).numel())
