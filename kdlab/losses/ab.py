"""Activation-boundary distillation: initialise the student to reproduce the teacher's on/off neurons."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from kdlab.losses._common import ConvReg, paired_shapes
from kdlab.losses.base import BuildContext, Distiller
from kdlab.outputs import Batch, Outputs


def ab_loss(student_preact: Tensor, teacher_preact: Tensor, margin: float = 1.0) -> Tensor:
    """Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons
    (Heo et al., AAAI 2019).

    The alternative loss of activation transfer: a squared hinge with margin ``m`` pushing each
    student pre-activation below ``-m`` where the teacher's neuron is off and above ``m`` where
    it is on, summed over neurons and averaged over the batch.

    Args:
        student_preact: ``(batch, C, H, W)`` student pre-activations (after the connector).
        teacher_preact: Teacher pre-activations of the same shape.
        margin: The margin m.
    """
    active = teacher_preact > 0
    off = (student_preact + margin).pow(2) * ((student_preact > -margin) & ~active)
    on = (student_preact - margin).pow(2) * ((student_preact <= margin) & active)
    return (off + on).sum() / student_preact.shape[0]


class AB(Distiller):
    """Activation-boundary transfer as an init phase (RepDistiller's ``abound``).

    During the first ``init_epochs`` epochs the student (and a connector per layer pair) is
    trained only on the activation-transfer loss, layer ``i`` of ``n`` weighted by
    ``2^(i-n+1)`` and the sum scaled by ``loss_scale`` (RepDistiller's ÷1000·3). Afterwards
    the term is zero: the main phase trains with cross-entropy (add ``KD`` for the paper's
    second stage). The connector is the identity where shapes already match, otherwise a
    ConvReg without ReLU.

    Args:
        weight: Unused after the init phase (the term is zero); kept for uniformity.
        init_epochs: Epochs of activation transfer (30 in RepDistiller).
        init_lr: Learning rate of that phase (None: the run's, as RepDistiller).
        margin: Margin of the alternative loss.
        loss_scale: Scale of the summed init loss.
        student_taps: Student pre-activations (default the three stages').
        teacher_taps: Teacher pre-activations paired with them.
    """

    student_taps = ("stage1_preact", "stage2_preact", "stage3_preact")
    teacher_taps = ("stage1_preact", "stage2_preact", "stage3_preact")
    tap_pair_count = (1, None)

    def __init__(
        self,
        weight: float = 1.0,
        init_epochs: int = 30,
        init_lr: float | None = None,
        margin: float = 1.0,
        loss_scale: float = 3e-3,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__(weight, student_taps, teacher_taps)
        self.init_phase(init_epochs, init_lr)
        self.margin, self.loss_scale = margin, loss_scale
        self.connectors = nn.ModuleList()

    def build(self, context: BuildContext) -> None:
        self.connectors = nn.ModuleList()
        for pair in paired_shapes(self, context):
            if pair[1][1:] == pair[3][1:]:
                self.connectors.append(nn.Identity())
                continue
            try:
                self.connectors.append(ConvReg(pair[1], pair[3], relu=False))
            except ValueError as error:
                raise self.shape_error(str(error), [pair]) from None

    def init_loss(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        pairs = self.tap_pairs()
        total = sum(
            2.0 ** (i - len(pairs) + 1)
            * ab_loss(connector(student.features[s]), teacher.features[t], self.margin)
            for i, (connector, (s, t)) in enumerate(zip(self.connectors, pairs, strict=True))
        )
        return self.loss_scale * total

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        return student.logits.new_zeros(())
