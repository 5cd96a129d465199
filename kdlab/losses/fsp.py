"""FSP: match the flow of solution procedure (Gram matrices between consecutive layers)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kdlab.losses._common import paired_shapes, pool_to_smaller
from kdlab.losses.base import BuildContext, Distiller
from kdlab.outputs import Batch, Outputs


def fsp_matrix(bottom: Tensor, top: Tensor) -> Tensor:
    """The ``(batch, C_top, C_bottom)`` FSP matrix: spatial means of channel products of two maps
    (the larger map average-pooled to the smaller one's size)."""
    bottom, top = pool_to_smaller(bottom, top)
    return top.flatten(2) @ bottom.flatten(2).transpose(1, 2) / bottom[0, 0].numel()


def fsp_loss(student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]) -> Tensor:
    """A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and Transfer
    Learning (Yim et al., CVPR 2017).

    For each pair of consecutive layers, the mean squared difference between the student's
    and the teacher's FSP matrices, summed over pairs (RepDistiller's ``FSP``). Channel counts
    must be equal layer by layer.

    Args:
        student_features: Student maps, at least two layers.
        teacher_features: Teacher maps with the same channel counts.
    """
    losses = [
        (fsp_matrix(s_bottom, s_top) - fsp_matrix(t_bottom, t_top)).pow(2).mean()
        for s_bottom, s_top, t_bottom, t_top in zip(
            student_features[:-1],
            student_features[1:],
            teacher_features[:-1],
            teacher_features[1:],
            strict=True,
        )
    ]
    return torch.stack(losses).sum()


class FSP(Distiller):
    """FSP as an init phase: the student's layers learn the teacher's flow, then train normally.

    During the first ``init_epochs`` epochs (30 in RepDistiller) only :func:`fsp_loss` trains;
    afterwards the term is zero and the run continues with cross-entropy, as in the paper
    and RepDistiller.

    Args:
        weight: Unused after the init phase (the term is zero); kept for uniformity.
        init_epochs: Epochs of FSP training.
        init_lr: Learning rate of that phase (None: the run's, as RepDistiller).
        student_taps: Student layers (default stem and the three stages, RepDistiller's ``feat[:-1]``).
        teacher_taps: Teacher layers with the same channel counts.
    """

    student_taps = ("stem", "stage1", "stage2", "stage3")
    teacher_taps = ("stem", "stage1", "stage2", "stage3")
    tap_pair_count = (2, None)  # it relates consecutive layers

    def __init__(
        self,
        weight: float = 1.0,
        init_epochs: int = 30,
        init_lr: float | None = None,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__(weight, student_taps, teacher_taps)
        self.init_phase(init_epochs, init_lr)

    def build(self, context: BuildContext) -> None:
        different = [p for p in paired_shapes(self, context) if p[1][1] != p[3][1]]
        if different:
            raise self.shape_error("FSP matrices are C_top × C_bottom, so channels must be equal", different)

    def init_loss(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        pairs = self.tap_pairs()
        return fsp_loss([student.features[s] for s, _ in pairs], [teacher.features[t] for _, t in pairs])

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        return student.logits.new_zeros(())
