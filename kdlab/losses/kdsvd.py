"""KD-SVD: transfer the relations between dominant singular vectors of consecutive layers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._common import paired_shapes
from kdlab.losses.base import BuildContext, Distiller
from kdlab.outputs import Batch, Outputs


def _finite(x: Tensor) -> Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def _top_singular(feature: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Normalised top ``count`` singular values ``(batch, count)`` and right vectors ``(batch, C, count)``
    of each sample's ``(H·W, C)`` feature matrix."""
    matrix = feature.flatten(2).transpose(1, 2)
    if matrix.dtype in (torch.float16, torch.bfloat16):  # no half-precision SVD
        matrix = matrix.float()
    _, values, vectors_h = torch.linalg.svd(matrix, full_matrices=False)
    values, vectors = _finite(values), _finite(vectors_h.transpose(1, 2))
    return F.normalize(values[:, :count], dim=1), F.normalize(vectors[:, :, :count], dim=1)


def _align(student_vectors: Tensor, teacher_vectors: Tensor) -> Tensor:
    """Pick, for each teacher vector, the student vector of largest |cosine|, sign-corrected."""
    cosine = student_vectors.transpose(1, 2) @ teacher_vectors
    best = cosine.abs().amax(dim=1, keepdim=True)
    selection = torch.where(cosine.abs() == best, cosine.sign(), torch.zeros_like(cosine))
    return student_vectors @ selection


def kdsvd_loss(student_features: Sequence[Tensor], teacher_features: Sequence[Tensor], k: int = 1) -> Tensor:
    """Self-supervised Knowledge Distillation Using Singular Value Decomposition (Lee et al., ECCV 2018).

    Each layer's ``(H·W, C)`` matrix is decomposed; the student's ``k + 3`` leading right
    singular vectors are aligned to the teacher's ``k`` (largest |cosine|, sign-corrected) and
    both are scaled by the teacher's normalised singular values. For each pair of consecutive
    layers, RBF similarities ``exp(-(v_i - v_j)² / 8)`` between the two layers' vectors are
    matched in squared error (summed, per sample), as in RepDistiller's ``KDSVD``. Student and
    teacher must have equal channels at every layer.

    Args:
        student_features: ``(batch, C_l, H_l, W_l)`` student maps, at least two layers.
        teacher_features: Teacher maps with the same channel counts.
        k: Number of teacher singular vectors.
    """
    losses, previous = [], None
    for f_s, f_t in zip(student_features, teacher_features, strict=True):
        values_t, vectors_t = _top_singular(f_t, k)
        _, vectors_s = _top_singular(f_s, k + 3)
        vectors_s = _align(vectors_s, vectors_t) * values_t[:, None, :]
        vectors_t = vectors_t * values_t[:, None, :]
        if previous is not None:
            rbf_s = torch.exp(-(vectors_s[:, :, None] - previous[0][:, None]).pow(2) / 8)
            rbf_t = torch.exp(-(vectors_t[:, :, None] - previous[1][:, None]).pow(2) / 8)
            losses.append(_finite((rbf_s - rbf_t.detach()).pow(2)).sum())
        previous = (vectors_s, vectors_t)
    return torch.stack(losses).sum() / student_features[0].shape[0]


class KDSVD(Distiller):
    """KD-SVD over consecutive layers (weight 1, as mdistiller).

    Args:
        weight: Multiplier of the loss.
        k: Number of teacher singular vectors.
        student_taps: Student layers, at least two (default the three stage outputs).
        teacher_taps: Teacher layers with equal channel counts.
    """

    student_taps = ("stage1", "stage2", "stage3")
    teacher_taps = ("stage1", "stage2", "stage3")
    tap_pair_count = (2, None)  # it relates consecutive layers

    def __init__(
        self,
        weight: float = 1.0,
        k: int = 1,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__(weight, student_taps, teacher_taps)
        self.k = k

    def build(
        self,
        student_shapes: Mapping[str, torch.Size],
        teacher_shapes: Mapping[str, torch.Size],
        context: BuildContext | None = None,
    ) -> None:
        pairs = paired_shapes(self, student_shapes, teacher_shapes)
        different = [p for p in pairs if p[1][1] != p[3][1]]
        if different:
            raise self.shape_error(
                "aligns student and teacher singular vectors, so channels must be equal", different
            )
        too_small = [
            p
            for p in pairs
            if min(p[1][1], p[1][2] * p[1][3]) < self.k + 3 or min(p[3][1], p[3][2] * p[3][3]) < self.k
        ]
        if too_small:
            raise self.shape_error(
                f"needs min(channels, H·W) >= k+3 = {self.k + 3} singular vectors", too_small
            )

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        pairs = self.tap_pairs()
        return kdsvd_loss(
            [student.features[s] for s, _ in pairs], [teacher.features[t] for _, t in pairs], self.k
        )
