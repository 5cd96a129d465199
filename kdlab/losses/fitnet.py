"""FitNets: hints from a teacher's intermediate layer, through a convolutional regressor."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.losses._common import ConvReg, paired_shapes
from kdlab.losses.base import BuildContext, Distiller
from kdlab.outputs import Batch, Outputs


def fitnet_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """FitNets: Hints for Thin Deep Nets (Romero et al., ICLR 2015).

    Mean squared error between the student's regressed hint and the teacher's hint layer
    (the element mean, as RepDistiller's ``HintLoss``).

    Args:
        student_feature: Regressed student map, shaped like ``teacher_feature``.
        teacher_feature: The teacher's hint map.
    """
    return F.mse_loss(student_feature, teacher_feature)


class FitNet(Distiller):
    """FitNet hint loss with a ConvReg regressor (RepDistiller's adaptation, weight 100).

    With ``init_epochs=0`` (RepDistiller and the CRD table) the hint is trained jointly with
    the rest during the whole run. The paper's two-stage FitNet is ``init_epochs=N`` (stage
    one: only the hint, which trains the student up to its guided layer and the regressor)
    with ``weight=0`` and a ``KD`` distiller for stage two.

    Args:
        weight: Multiplier of the hint loss after the init phase.
        init_epochs: Epochs of hint-only training before the main phase (0: single stage).
        init_lr: Learning rate of that phase (None: the run's).
        student_taps: The guided layer (default ``stage2``, RepDistiller's ``hint_layer=2``).
        teacher_taps: The hint layer (default ``stage2``).
    """

    student_taps = ("stage2",)
    teacher_taps = ("stage2",)
    tap_pair_count = (1, None)

    def __init__(
        self,
        weight: float = 100.0,
        init_epochs: int = 0,
        init_lr: float | None = None,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__(weight, student_taps, teacher_taps)
        self.init_phase(init_epochs, init_lr, least=0)
        self.regressors = nn.ModuleList()

    def build(self, context: BuildContext) -> None:
        self.regressors = nn.ModuleList()
        for pair in paired_shapes(self, context):
            try:
                self.regressors.append(ConvReg(pair[1], pair[3]))
            except ValueError as error:
                raise self.shape_error(str(error), [pair]) from None

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        losses = [
            fitnet_loss(regressor(student.features[s]), teacher.features[t])
            for regressor, (s, t) in zip(self.regressors, self.tap_pairs(), strict=True)
        ]
        return torch.stack(losses).sum()

    def init_loss(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        return self.forward(student, teacher, batch)
